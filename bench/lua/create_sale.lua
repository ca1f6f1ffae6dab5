-- POST /api/sale with a number unique per run (tag), thread and request
local headers = {["Content-Type"] = "application/json"}
request = function()
   counter = counter + 1
   local body = string.format('{"number": "B%s-%d-%d", "client": %d, "amount": "%d.%02d"}',
      tag, thread_id, counter, math.random(1, clients), math.random(1, 999999), math.random(0, 99))
   return wrk.format("POST", "/api/sale", headers, body)
end

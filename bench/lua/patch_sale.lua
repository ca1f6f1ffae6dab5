-- PATCH /api/sale/{id} {"amount": ...} on a random seeded sale
local headers = {["Content-Type"] = "application/json"}
request = function()
   local body = string.format('{"amount": "%d.%02d"}', math.random(1, 999999), math.random(0, 99))
   return wrk.format("PATCH", "/api/sale/" .. math.random(1, sales), headers, body)
end

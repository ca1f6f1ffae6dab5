-- GET /api/sale?stage=negotiation&sort=-amount&limit=50 (with the total count)
local prepared
function prepare()
   prepared = wrk.format("GET", "/api/sale?stage=negotiation&sort=-amount&limit=50")
end
request = function()
   return prepared
end

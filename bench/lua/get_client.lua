-- GET /api/client/{id}, a random seeded client each time
request = function()
   return wrk.format("GET", "/api/client/" .. math.random(1, clients))
end

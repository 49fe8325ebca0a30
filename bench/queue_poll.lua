-- wrk script: polls waiting-room tickets (GET /api/sales/{id}/queue/{ticket}), cycling through
-- the `user ticket` lines of a file. After `--`: the sale's id and the file.
local sale, tickets = nil, {}
local next_one = 0

function init(args)
  sale = args[1]
  for line in io.lines(args[2]) do
    local user, ticket = line:match("^(%S+) (%S+)$")
    if user then tickets[#tickets + 1] = { user, ticket } end
  end
  next_one = math.random(#tickets)
end

function request()
  next_one = next_one % #tickets + 1
  local t = tickets[next_one]
  return wrk.format("GET", "/api/sales/" .. sale .. "/queue/" .. t[2], { ["X-User-Id"] = t[1] }, nil)
end

-- wrk script: joins a sale's waiting room (POST /api/sales/{id}/queue, the path given on wrk's
-- command line), each request a buyer never seen before, so every one takes a new ticket.
-- After `--`: the run's tag, and optionally how many joins in all (each thread stops at its
-- share), for the memory measurement.
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("thread_no", threads)
end

local sent, answered, limit = 0, 0, nil
local tag = "run"

function init(args)
  tag = args[1] or tostring(os.time())
  if args[2] then limit = math.ceil(tonumber(args[2]) / tonumber(args[3] or 1)) end
end

function request()
  sent = sent + 1
  return wrk.format("POST", nil, { ["X-User-Id"] = "q-" .. tag .. "-" .. thread_no .. "-" .. sent }, nil)
end

function response(status)
  answered = answered + 1
  if limit and answered >= limit then wrk.thread:stop() end
end

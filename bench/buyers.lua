-- wrk script: the per-user purchase, each request from a buyer never seen before (X-User-Id
-- unique per run, thread and request), so every request can sell and none is refused
-- `already_purchased`. The run's tag comes after `--` on wrk's command line.
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("thread_no", threads)
end

local sent = 0
local tag = "run"

function init(args)
  tag = args[1] or tostring(os.time())
end

function request()
  sent = sent + 1
  return wrk.format("POST", nil, { ["X-User-Id"] = "wrk-" .. tag .. "-" .. thread_no .. "-" .. sent }, nil)
end

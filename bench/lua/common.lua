-- Shared by every operation (run.py puts it after the operation's `request`): thread ids,
-- the arguments after `--` (tag, clients, sales, pace), and a JSON summary on stdout for
-- run.py. A pace above 0 (run.py --smoke) makes each connection wait that many milliseconds
-- between requests: wrk calls `delay` when the script defines it once `init` has run.
local threads = {}

function setup(thread)
   table.insert(threads, thread)
   thread:set("thread_id", #threads)
end

function init(args)
   tag = args[1] or "t"
   clients = tonumber(args[2]) or 1
   sales = tonumber(args[3]) or 1
   counter = 0
   local pace = tonumber(args[4]) or 0
   if pace > 0 then
      delay = function() return pace end
   end
   math.randomseed(os.time() * 1000 + thread_id)
   if prepare then prepare() end
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'KTBENCH {"requests": %.0f, "duration_us": %.0f, "bytes": %.0f, ' ..
      '"errors": {"connect": %.0f, "read": %.0f, "write": %.0f, "status": %.0f, "timeout": %.0f}, ' ..
      '"latency_us": {"p50": %.0f, "p90": %.0f, "p99": %.0f, "max": %.0f, "mean": %.1f}}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max, latency.mean))
end

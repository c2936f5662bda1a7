-- wrk script: replay pre-generated signed webhook bodies, exactly once each.
--
--   wrk -t1 -c50 -d3600s -s bench/wrk_replay.lua http://127.0.0.1:PORT -- FILE COUNT PATH METHOD
--
-- FILE holds one request per line: "<X-Line-Signature> <json body>" (or "-" for requests
-- without a body, e.g. GET /healthz). All requests are formatted in init(), so the
-- request() hot path only hands out the next pre-built string. After COUNT requests a
-- connection is given an empty request (it idles), and the thread stops as soon as COUNT
-- responses arrived: no body is ever sent twice. Run with -t1 (one thread, one core at most).
--
-- wrk's main thread sleeps for the whole -d duration whatever the threads do, and its
-- own duration figure includes that sleep; so the script times the run itself (first
-- request to last response, CLOCK_MONOTONIC via LuaJIT's ffi), prints "WRKDONE" when the
-- thread stopped, and the caller then sends wrk SIGINT, which ends the sleep.
-- done() prints one line "WRKJSON {...}" for bench/harness.py.

local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } wrk_replay_timespec;
int clock_gettime(int clk_id, wrk_replay_timespec *tp);
]]
local ts = ffi.new("wrk_replay_timespec")
local function now_us()
   ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
   return tonumber(ts.tv_sec) * 1000000 + tonumber(ts.tv_nsec) / 1000
end

local reqs = {}
count = 0
sent = 0
ok = 0
non_ok = 0
first_us = 0
last_us = 0
local responses = 0
local threads = {}

function setup(thread)
   table.insert(threads, thread)
   thread:set("tid", #threads)
end

function init(args)
   local file, n, path, method = args[1], tonumber(args[2]), args[3], args[4] or "POST"
   if file == "-" then
      local r = wrk.format(method, path)
      for i = 1, n do reqs[i] = r end
      count = n
   else
      local i = 0
      for line in io.lines(file) do
         local sig, body = line:match("^(%S+) (.*)$")
         i = i + 1
         reqs[i] = wrk.format(method, path,
            { ["Content-Type"] = "application/json", ["X-Line-Signature"] = sig }, body)
         if i >= n then break end
      end
      count = i
   end
end

probed = false

function request()
   -- wrk calls request() once on the first thread before the run, to count pipelined
   -- requests; that string is never sent, so it must not use up a body.
   if tid == 1 and not probed then
      probed = true
      return reqs[1] or ""
   end
   sent = sent + 1
   if sent == 1 then first_us = now_us() end
   if sent > count then
      return ""
   end
   return reqs[sent]
end

function response(status, headers, body)
   responses = responses + 1
   if status == 200 then ok = ok + 1 else non_ok = non_ok + 1 end
   if responses == count then
      last_us = now_us()
      wrk.thread:stop()
      io.write("WRKDONE\n")
      io.stdout:flush()
   end
end

function done(summary, latency, requests)
   local t_ok, t_non_ok, t_first, t_last = 0, 0, nil, 0
   for _, t in ipairs(threads) do
      t_ok = t_ok + t:get("ok")
      t_non_ok = t_non_ok + t:get("non_ok")
      local f = t:get("first_us")
      if f > 0 and (t_first == nil or f < t_first) then t_first = f end
      t_last = math.max(t_last, t:get("last_us"))
   end
   local duration = (t_first and t_last > 0) and (t_last - t_first) or summary.duration
   local e = summary.errors
   io.write(string.format(
      'WRKJSON {"requests": %d, "duration_us": %d, "ok": %d, "non_ok": %d, ' ..
      '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
      '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "max": %d, "mean": %.1f}}\n',
      summary.requests, duration, t_ok, t_non_ok,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end

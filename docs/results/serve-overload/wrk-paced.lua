
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } timespec;
int clock_gettime(int clk_id, timespec *tp);
]]
local ts = ffi.new("timespec")
local function now_us()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) * 1e6 + tonumber(ts.tv_nsec) / 1e3
end
local counter = 0
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end
local paths, out, sent_at, gap_ms = {}, nil, 0, 0
function init(args)
  for line in io.lines(os.getenv("WRK_PATHS")) do paths[#paths + 1] = line end
  math.randomseed(tonumber(os.getenv("WRK_SEED")) + tid)
  gap_ms = tonumber(os.getenv("WRK_GAP_MS"))
  out = io.open(os.getenv("WRK_OUT") .. "." .. tid, "w")
end
function delay()
  return gap_ms * (0.5 + math.random())
end
function request()
  sent_at = now_us()
  return wrk.format("GET", paths[math.random(#paths)])
end
function response(status, headers, body)
  -- stdio buffers the writes; exit() flushes them when wrk ends
  out:write(status, " ", math.floor(now_us() - sent_at), "\n")
end
function done(summary, latency, requests)
end

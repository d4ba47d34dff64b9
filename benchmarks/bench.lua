-- wrk script for benchmarks/: request shape from BENCH_* variables, results as one JSON line.
--   BENCH_METHOD, BENCH_PATH, BENCH_BODY_FILE, BENCH_HEADERS ("Name: value" lines)
--   BENCH_MODE: static (one request, preformatted) | unique (a new LLM api key per request)
--               | ids (a random X-PowerMem-Instance from BENCH_IDS_FILE)
--               | keys (a random api key BENCH_KEY_FORMAT % [0, BENCH_COUNT))
--   BENCH_DELAY_MS: a pause before each request (a paced probe instead of a flood)
local method = os.getenv("BENCH_METHOD") or "GET"
local path = os.getenv("BENCH_PATH") or "/"
local mode = os.getenv("BENCH_MODE") or "static"
local prefix = os.getenv("BENCH_PREFIX") or "run"
local key_format = os.getenv("BENCH_KEY_FORMAT") or "sk-%09d"
local count = tonumber(os.getenv("BENCH_COUNT") or "1")
local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "0")

local headers = {}
for line in string.gmatch(os.getenv("BENCH_HEADERS") or "", "[^\n]+") do
  local name, value = string.match(line, "^([^:]+):%s*(.*)$")
  if name then headers[name] = value end
end

local body = nil
local body_file = os.getenv("BENCH_BODY_FILE") or ""
if body_file ~= "" then
  local f = assert(io.open(body_file, "rb"))
  body = f:read("*a")
  f:close()
end

local ids = {}
local ids_file = os.getenv("BENCH_IDS_FILE") or ""
if mode == "ids" and ids_file ~= "" then
  for line in io.lines(ids_file) do ids[#ids + 1] = line end
end

local fixed = nil
local n = 0

function init(args)
  math.randomseed(12345)
  if mode == "static" then fixed = wrk.format(method, path, headers, body) end
end

-- wrk paces a connection only when the script defines delay(); latency excludes the pause.
if delay_ms > 0 then
  function delay() return delay_ms end
end

function request()
  if fixed then return fixed end
  n = n + 1
  if mode == "unique" then
    headers["X-PowerMem-LLM-Api-Key"] = string.format("sk-%s-%09d-unique", prefix, n)
  elseif mode == "ids" then
    headers["X-PowerMem-Instance"] = ids[math.random(#ids)]
  elseif mode == "keys" then
    headers["X-PowerMem-LLM-Api-Key"] = string.format(key_format, math.random(count) - 1)
  end
  return wrk.format(method, path, headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, '
      .. '"mean_us": %.1f, "socket_errors": %d, "status_errors": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.mean, e.connect + e.read + e.write + e.timeout, e.status))
end

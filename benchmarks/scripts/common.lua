-- Shared by the scenario scripts (loaded with dofile from BENCH_SCRIPTS_DIR).
-- The harness passes every parameter through the environment: wrk's Lua has os.getenv.
local M = {}

-- A comma-separated environment variable as an array of strings.
function M.list(name)
  local items = {}
  for item in string.gmatch(os.getenv(name) or "", "[^,]+") do
    items[#items + 1] = item
  end
  return items
end

function M.pick(items)
  return items[math.random(#items)]
end

-- wrk is one machine; behind Nginx a server sees many clients. A pool of 4096 addresses in
-- X-Forwarded-For (trusted from 127.0.0.1, as from the proxy) keeps each client's rate-limit
-- window as short as a real client's, instead of one window holding every request.
function M.client_ip()
  local n = math.random(0, 4095)
  return string.format("10.77.%d.%d", math.floor(n / 256), n % 256)
end

function M.urlencode(text)
  return (string.gsub(text, "[^%w%-%._~]", function(c)
    return string.format("%%%02X", string.byte(c))
  end))
end

-- Each thread gets its own id (set in setup) and random sequence.
local threads = 0
function M.setup(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end

function M.init()
  math.randomseed(os.time() * 1000 + (thread_id or 0))
end

return M

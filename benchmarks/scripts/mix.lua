-- The memory scenario's traffic: a rotation of the API's requests (cached and uncached
-- product reads, the first and a deep page, search, order creation, liveness), and one login
-- (Argon2) in every LOGIN_EVERY requests, about the share of a shop's traffic. The thread
-- stops after BENCH_STOP_AFTER responses and writes BENCH_DONE_FILE: wrk itself only stops
-- at the end of its duration, so the harness interrupts it (SIGINT) when the file appears.
local common = dofile(os.getenv("BENCH_SCRIPTS_DIR") .. "/common.lua")

local cached = common.list("BENCH_IDS")
local order_ids = common.list("BENCH_ORDER_IDS")
local tokens = common.list("BENCH_TOKENS")
local words = common.list("BENCH_WORDS")
local users = common.list("BENCH_USERS")
local password = common.urlencode(os.getenv("BENCH_PASSWORD") or "")
local LOGIN_EVERY = 50
local deep = os.getenv("BENCH_DEEP_PATH")
local id_min = tonumber(os.getenv("BENCH_ID_MIN") or "1")
local id_max = tonumber(os.getenv("BENCH_ID_MAX") or "1")
local run_id = os.getenv("BENCH_RUN_ID") or "run"
local stop_after = tonumber(os.getenv("BENCH_STOP_AFTER") or "10000")
local done_file = os.getenv("BENCH_DONE_FILE")
local counter = 0
local responses = 0

setup = common.setup
init = common.init

local function get(path)
  return wrk.format("GET", path, { ["X-Forwarded-For"] = common.client_ip() })
end

local kinds = {
  function() return get("/api/v1/products/" .. common.pick(cached)) end,
  function() return get("/api/v1/products/" .. math.random(id_min, id_max)) end,
  function() return get("/api/v1/products") end,
  function() return get(deep) end,
  function() return get("/api/v1/products?q=" .. common.pick(words)) end,
  function()
    local key = string.format("%s-%d-%d-%d", run_id, thread_id or 0, counter, math.random(1, 1000000000))
    local body = string.format('{"items":[{"product_id":%s,"quantity":1}]}', common.pick(order_ids))
    return wrk.format("POST", "/api/v1/orders", {
      ["Authorization"] = "Bearer " .. common.pick(tokens),
      ["Content-Type"] = "application/json",
      ["Idempotency-Key"] = key,
      ["X-Forwarded-For"] = common.client_ip(),
    }, body)
  end,
  function() return wrk.format("GET", "/health/live") end,
}

local function login()
  local body = "username=" .. common.urlencode(common.pick(users)) .. "&password=" .. password
  return wrk.format("POST", "/api/v1/auth/login", {
    ["Content-Type"] = "application/x-www-form-urlencoded",
    ["X-Forwarded-For"] = common.client_ip(),
  }, body)
end

function request()
  counter = counter + 1
  if #users > 0 and counter % LOGIN_EVERY == 0 then
    return login()
  end
  return kinds[(counter % #kinds) + 1]()
end

function response(status, headers, body)
  responses = responses + 1
  if responses == stop_after then
    wrk.thread:stop()
    if done_file then
      local marker = io.open(done_file, "w")
      marker:write(tostring(responses))
      marker:close()
    end
  end
end

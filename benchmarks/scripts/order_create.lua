-- POST BENCH_PATH (/api/v1/orders): one line of a product in stock (BENCH_IDS), as one of the
-- logged-in seeded customers (BENCH_TOKENS), with an Idempotency-Key no request repeats:
-- the run id (unique per wrk run), the thread, a counter and a random number.
local common = dofile(os.getenv("BENCH_SCRIPTS_DIR") .. "/common.lua")

local path = os.getenv("BENCH_PATH")
local ids = common.list("BENCH_IDS")
local tokens = common.list("BENCH_TOKENS")
local run_id = os.getenv("BENCH_RUN_ID") or "run"
local counter = 0

setup = common.setup
init = common.init

function request()
  counter = counter + 1
  local key = string.format("%s-%d-%d-%d", run_id, thread_id or 0, counter, math.random(1, 1000000000))
  local body = string.format('{"items":[{"product_id":%s,"quantity":1}]}', common.pick(ids))
  return wrk.format("POST", path, {
    ["Authorization"] = "Bearer " .. common.pick(tokens),
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = key,
    ["X-Forwarded-For"] = common.client_ip(),
  }, body)
end

-- POST BENCH_PATH (/api/v1/orders) retried: the same Idempotency-Key (BENCH_IDEMPOTENCY_KEY),
-- the same customer (BENCH_TOKEN) and the same body (one unit of BENCH_PRODUCT_ID) on every
-- request. The preflight placed the order once; each request replays its stored 201.
local path = os.getenv("BENCH_PATH")
local body = string.format('{"items":[{"product_id":%s,"quantity":1}]}', os.getenv("BENCH_PRODUCT_ID"))
local headers = {
  ["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN"),
  ["Content-Type"] = "application/json",
  ["Idempotency-Key"] = os.getenv("BENCH_IDEMPOTENCY_KEY"),
}
local prepared = nil

function request()
  -- Identical every time: formatted once per thread.
  prepared = prepared or wrk.format("POST", path, headers, body)
  return prepared
end

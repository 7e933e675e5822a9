-- POST /api/v1/orders retried: the same Idempotency-Key (BENCH_IDEMPOTENCY_KEY), the same
-- customer (BENCH_TOKEN) and the same body (one unit of BENCH_PRODUCT_ID) on every request.
-- The order was placed once by the preflight; each request replays its stored 201.
local token = os.getenv("BENCH_TOKEN")
local key = os.getenv("BENCH_IDEMPOTENCY_KEY")
local body = string.format('{"items":[{"product_id":%s,"quantity":1}]}', os.getenv("BENCH_PRODUCT_ID"))

wrk.method = "POST"
wrk.body = body
wrk.headers["Authorization"] = "Bearer " .. token
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Idempotency-Key"] = key

-- A paced probe: GET BENCH_PATH, then wait BENCH_DELAY_MS before the next request on the
-- connection. It measures how quickly the server answers, without loading it.
local path = os.getenv("BENCH_PATH")
local pause = tonumber(os.getenv("BENCH_DELAY_MS") or "10")

function request()
  return wrk.format("GET", path)
end

function delay()
  return pause
end

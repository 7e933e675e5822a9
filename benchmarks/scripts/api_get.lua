-- GET BENCH_PATH, filling "{id}" from BENCH_IDS (a list) or BENCH_ID_MIN..BENCH_ID_MAX, and
-- "{word}" from BENCH_WORDS; every request from one of many client addresses.
local common = dofile(os.getenv("BENCH_SCRIPTS_DIR") .. "/common.lua")

local template = os.getenv("BENCH_PATH")
local ids = common.list("BENCH_IDS")
local id_min = tonumber(os.getenv("BENCH_ID_MIN") or "1")
local id_max = tonumber(os.getenv("BENCH_ID_MAX") or "1")
local words = common.list("BENCH_WORDS")
local has_id = string.find(template, "{id}", 1, true) ~= nil
local has_word = string.find(template, "{word}", 1, true) ~= nil

setup = common.setup
init = common.init

function request()
  local path = template
  if has_id then
    local id = #ids > 0 and common.pick(ids) or tostring(math.random(id_min, id_max))
    path = string.gsub(path, "{id}", id)
  end
  if has_word then
    path = string.gsub(path, "{word}", common.pick(words))
  end
  return wrk.format("GET", path, { ["X-Forwarded-For"] = common.client_ip() })
end

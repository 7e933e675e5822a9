-- POST BENCH_PATH (/api/v1/auth/login): the OAuth2 password form of a seeded customer
-- (BENCH_USERS, password BENCH_PASSWORD). Each login verifies an Argon2id hash.
local common = dofile(os.getenv("BENCH_SCRIPTS_DIR") .. "/common.lua")

local path = os.getenv("BENCH_PATH")
local password = common.urlencode(os.getenv("BENCH_PASSWORD") or "")
local bodies = {}
for _, user in ipairs(common.list("BENCH_USERS")) do
  bodies[#bodies + 1] = "username=" .. common.urlencode(user) .. "&password=" .. password
end

setup = common.setup
init = common.init

function request()
  return wrk.format("POST", path, {
    ["Content-Type"] = "application/x-www-form-urlencoded",
    ["X-Forwarded-For"] = common.client_ip(),
  }, common.pick(bodies))
end

-- wrk script: POST /v1/localize with a new random body each time (no answer-cache hits).
--   wrk -s bench/wrk/localize.lua URL -- KIND IDS N_FEATURES
-- KIND: features (full feature vectors) or power (power_dbm only); IDS: receiver ids, comma-separated.
wrk.method = "POST"
wrk.path = "/v1/localize"
wrk.headers["Content-Type"] = "application/json"

local kind, ids, n_features

function init(args)
  kind, n_features = args[1], tonumber(args[3])
  ids = {}
  for id in string.gmatch(args[2], "[^,]+") do ids[#ids + 1] = id end
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
end

local function value() return string.format("%.3f", -120 + 20 * (math.random() - 0.5)) end

function request()
  local rx = {}
  for i, id in ipairs(ids) do
    if kind == "power" then
      rx[i] = '{"id":"' .. id .. '","power_dbm":' .. value() .. '}'
    else
      local v = {}
      for k = 1, n_features do v[k] = value() end
      rx[i] = '{"id":"' .. id .. '","features":[' .. table.concat(v, ",") .. ']}'
    end
  end
  return wrk.format(nil, nil, nil, '{"features":[' .. table.concat(rx, ",") .. ']}')
end

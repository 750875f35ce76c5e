-- wrk script: POST /v1/localize/batch with N_TX transmissions of full feature vectors; every body differs
-- (each transmission's first value is drawn anew), so the answer cache does not help.
--   wrk -s bench/wrk/batch.lua URL -- IDS N_FEATURES N_TX
wrk.method = "POST"
wrk.path = "/v1/localize/batch"
wrk.headers["Content-Type"] = "application/json"

local first_id, tails, n_tx

local function values(n)
  local v = {}
  for k = 1, n do v[k] = string.format("%.3f", -120 + 20 * (math.random() - 0.5)) end
  return table.concat(v, ",")
end

function init(args)
  local ids = {}
  for id in string.gmatch(args[1], "[^,]+") do ids[#ids + 1] = id end
  local n_features = tonumber(args[2])
  n_tx = tonumber(args[3])
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
  first_id, tails = ids[1], {}
  for t = 1, n_tx do  -- everything but the first value of each transmission, made once
    local rx = {}
    for i = 2, #ids do rx[#rx + 1] = '{"id":"' .. ids[i] .. '","features":[' .. values(n_features) .. ']}' end
    tails[t] = "," .. values(n_features - 1) .. ']}' .. (#rx > 0 and "," .. table.concat(rx, ",") or "") .. ']}'
  end
end

function request()
  local tx = {}
  for t = 1, n_tx do
    tx[t] = '{"features":[{"id":"' .. first_id .. '","features":[' .. string.format("%.6f", -130 + math.random()) .. tails[t]
  end
  return wrk.format(nil, nil, nil, '{"transmissions":[' .. table.concat(tx, ",") .. ']}')
end

-- wrk script: POST /v1/localize cycling through prepared bodies, one JSON body per line of a file.
--   wrk -s bench/wrk/bodies.lua URL -- FILE
-- Start the server with --cache-size 0 when the file holds fewer bodies than the run sends.
wrk.method = "POST"
wrk.path = "/v1/localize"
wrk.headers["Content-Type"] = "application/json"

local bodies, at = {}, 1

function init(args)
  for line in io.lines(args[1]) do bodies[#bodies + 1] = line end
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
  at = math.random(#bodies)
end

function request()
  at = at % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[at])
end

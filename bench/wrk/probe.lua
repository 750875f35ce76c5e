-- wrk script: GET /healthz every 20 ms on each connection (a liveness probe, not a load).
wrk.path = "/healthz"

function delay()
  return 20
end

-- wrk script: POST one fixed body; args: body file, content type, inference header length ("" for none).
local request_bytes

function init(args)
   local file = assert(io.open(args[1], "rb"))
   local body = file:read("*a")
   file:close()
   local headers = { ["Content-Type"] = args[2] }
   if args[3] ~= nil and args[3] ~= "" then
      headers["Inference-Header-Content-Length"] = args[3]
   end
   request_bytes = wrk.format("POST", nil, headers, body)
end

function request()
   return request_bytes
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "errors": %d}\n',
      summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
      e.connect + e.read + e.write + e.status + e.timeout))
end

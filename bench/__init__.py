"""On-demand throughput benchmark: onnxruntime in-process, a naive server, and weightserve under wrk."""

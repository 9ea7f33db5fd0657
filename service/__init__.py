"""weightserve: serve ONNX models over the Open Inference Protocol (KServe V2) and look inside their weights.

Packages by responsibility; each imports only the ones below it (checked by tests/test_architecture.py):

    app.py, cli.py   the application factory and the ``weightserve`` command: wire everything together
    http/            HTTP only: middleware, the infer fast path, routes, auth, error responses, the dashboard
    inspection/      inside the network at inference time: activations, heat maps, evaluation
    serving/         the model repository, checks, onnxruntime sessions, batching, the registry, inference
    weights/         what is inside the weights: tensor statistics, spectral metrics, diffs
    protocol/        the V2 wire format: requests, tensor decoding, response encoding, datatypes
    ops/             operations beside the rest: Prometheus metrics, logs, shutdown, worker supervision
    model_files.py   a version's files as the service reads them (folder names, tensors, external data)
    errors.py        the one error tree; settings.py: the one settings object
"""

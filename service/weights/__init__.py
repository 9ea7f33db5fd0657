"""Weight inspection: what is inside a model version's weights, over HTTP and in the terminal.
Imports only errors and settings (never serving or http).

    graph.py      layers and parameter tensors of the ONNX graph (roles, axes, provenance flags)
    stored.py     one tensor's stored values; external data checked and memory-mapped
    values.py     stored values dequantized and walked in bounded float64 blocks
    tensor_stats.py per-tensor statistics, histograms, per-channel figures, quantization readiness
    quantiles.py  exact quantiles without a sorted copy
    spectral.py   weightwatcher 0.7.7-compatible spectral metrics, with a work budget
    trained.py    the trained ``weights.safetensors`` sidecar and its manifest mapping
    version.py    one version's tensors by id
    store.py      the app-owned store: content-hash caches, one worker thread
    report.py     the JSON bodies of the ``weights`` extension
    diff.py       version-to-version diffs and their verdict
    cli.py        ``weightserve inspect``
"""

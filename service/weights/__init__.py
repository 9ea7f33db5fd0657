"""Weight inspection: what is inside a model version's weights, over HTTP and in the terminal.
Imports only model_files, errors and settings (never serving or http).

    graph.py      layers and parameter tensors of the ONNX graph, subgraphs and functions included
    stored.py     one tensor's stored values; external data checked and memory-mapped; sparse made dense
    values.py     stored values dequantized and walked in bounded float64 blocks
    tensor_stats.py per-tensor statistics, histograms, per-channel figures, quantization readiness
    quantiles.py  exact quantiles without a sorted copy
    spectral.py   weightwatcher 0.7.7-compatible spectral metrics, eigenvalues by the Gram route
    analysis_task.py    one spectral analysis as a unit of work
    analysis_worker.py  the analysis process (niced, bounded BLAS threads)
    analysis_process.py the parent's handle on it
    analysis.py   background analysis jobs, machine-wide slots, progress
    disk_cache.py the on-disk cache shared by every process of the machine
    trained.py    the trained ``weights.safetensors`` sidecar and its manifest mapping
    version.py    one version's tensors by id
    store.py      the app-owned store: content-hash caches in memory and on disk, one worker thread
    report.py     the JSON bodies of the ``weights`` extension
    diff.py       version-to-version diffs and their verdict
    cli.py        ``weightserve inspect``
"""

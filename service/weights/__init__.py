"""Weight inspection: layers from the ONNX graph, per-tensor statistics, spectral metrics, diffs."""

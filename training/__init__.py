"""The training job: `weightserve train` / `python -m training` (data-parallel under torchrun).

cli            arguments, one-line errors, exit codes
job            one run: plan (validate) -> train -> export -> parity -> manifest -> publish
tasks          per model: data, loss, metrics, tensor names, manifest task entry
architectures  the nn.Modules and `load_trained(version_dir)`
data           scikit-learn's bundled data sets and their splits
loop           the seeded, sharded, DDP-aware training loop with a progress bar
distributed    torchrun's process group (gloo on CPU)
export         ONNX export (dynamo exporter) and the onnxruntime-vs-torch parity check
manifest       manifest.json fields: hashes, versions, state_dict -> initializer map
store          the repository on disk: checks, version numbers, atomic publish
metrics        held-out metrics (accuracy; R², MAE, RMSE; MAE, PSNR, SSIM)
"""

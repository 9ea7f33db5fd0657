"""The training job: `weightserve train` / `python -m training` (data-parallel under torchrun), and
`publish`, which turns any nn.Module into a served, inspectable version (`from weightserve import publish`).

cli            `weightserve train`: arguments, one-line errors, exit codes
publish_cli    `weightserve publish FACTORY --checkpoint FILE`: a saved state_dict through `publish`
job            one run: plan (validate) -> train -> publish
publish        any nn.Module -> export -> parity -> weights, manifest, examples -> atomic new version
tasks          per model: data, loss, metrics, tensor names, manifest task entry, example requests
architectures  the nn.Modules and `load_trained(version_dir)`
data           scikit-learn's bundled data sets and their splits
loop           the seeded, sharded, DDP-aware training loop with a progress bar
distributed    torchrun's process group (gloo on CPU)
export         ONNX export (dynamo exporter, dynamic axes) and the checks on the exported graph
parity         onnxruntime against torch: example inputs and generated batches of other sizes
manifest       manifest.json fields: hashes, versions, state_dict -> initializer map
examples       example requests: V2 inference bodies in models/<name>/examples/
inputs         what a caller passes as inputs, made into one array per input name
store          the repository on disk: checks, version numbers, atomic publish
metrics        held-out metrics, with the service's definitions (accuracy; R², MAE, RMSE; MAE, PSNR, SSIM)

The job may import `service` (its repository rules, datatypes and metric definitions); the service
never imports torch or this package.
"""

"""Publish a PyTorch module as a served, inspectable model version (needs the ``train`` extra).

    from weightserve import publish
    published = publish(model, x[:8], "models", "my_model", input_names=["x"], output_names=["y"])

`publish` exports to ONNX, checks onnxruntime against torch, and writes the next version folder
atomically; see `training.publish.publish` for every option. `PublishError` is the base of every
error it raises on purpose (bad arguments, an export that fails, a parity failure: `ParityError`).
"""

from training.errors import ParityError
from training.errors import TrainingError as PublishError
from training.examples import Example
from training.publish import PublishedVersion, publish

__all__ = ["Example", "ParityError", "PublishError", "PublishedVersion", "publish"]

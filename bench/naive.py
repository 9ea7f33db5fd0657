"""The baseline: the straightforward way to serve ONNX over V2 JSON with Litestar.

One onnxruntime session per model, one ``session.run`` per request in a worker thread, the body
parsed and the response serialised by the framework. This is the server weightserve is measured
against; it is deliberately plain, not deliberately slow.

    python -m bench.naive --repository DIR --port PORT
"""

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import uvicorn
from litestar import Litestar, Response, post

_DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32}


def create_app(repository: Path) -> Litestar:
    sessions: dict[str, ort.InferenceSession] = {}
    for model_path in sorted(repository.glob("*/*/model.onnx")):
        sessions[model_path.parent.parent.name] = ort.InferenceSession(str(model_path))

    @post("/v2/models/{model_name:str}/infer", sync_to_thread=True)
    def infer(model_name: str, data: dict[str, Any]) -> Response[dict[str, Any]]:
        session = sessions.get(model_name)
        if session is None:
            return Response({"error": f"unknown model {model_name}"}, status_code=404)
        feeds = {
            item["name"]: np.asarray(item["data"], dtype=_DTYPES[item["datatype"]]).reshape(item["shape"])
            for item in data["inputs"]
        }
        names = [out.name for out in session.get_outputs()]
        results = session.run(names, feeds)
        outputs = [
            {"name": name, "datatype": "FP32", "shape": list(array.shape), "data": array.reshape(-1).tolist()}
            for name, array in zip(names, results, strict=True)
        ]
        return Response({"model_name": model_name, "model_version": "1", "outputs": outputs}, status_code=200)

    return Litestar(route_handlers=[infer])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repository", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(create_app(args.repository), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()

"""The runtime image for real: build it on a private Docker engine, serve, predict, drain.

Needs root (dockerd), Debian's docker.io and debootstrap (deploy/ci/install-deps.sh). The base
image comes from debootstrap + `docker import` (no registry is reachable), the Python packages
from wheels served over loopback; both are cached between runs.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton

from tests.deploy.engine import DockerEngine
from tests.deploy.models import write_identity_chain
from tests.deploy.support import ROOT, Measurements, cache_dir, free_port
from tests.deploy.tools import executable
from tests.deploy.wheelhouse import WheelServer, build_wheelhouse

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(900)]

BASE_TAG = "weightserve-base:bookworm"
IMAGE_TAG = "weightserve:test"
DATATYPES = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32}


@pytest.fixture(scope="module")
def engine() -> Iterator[DockerEngine]:
    if os.geteuid() != 0:
        pytest.skip("starting a Docker engine needs root")
    docker_engine = DockerEngine(executable("dockerd"), executable("docker"))
    try:
        docker_engine.start()
        yield docker_engine
    finally:
        docker_engine.stop()


@pytest.fixture(scope="module")
def image(engine: DockerEngine, measurements: Measurements) -> str:
    if not (ROOT / "README.md").is_file():
        pytest.fail("README.md is missing: `pip install .` (and so the image build) needs it")
    executable("debootstrap")
    started = time.monotonic()
    cache = cache_dir()
    subprocess.run(
        [str(ROOT / "deploy" / "docker" / "build-base-image.sh"), BASE_TAG],
        env={**engine.env, "WEIGHTSERVE_CACHE_DIR": str(cache)},
        check=True,
        capture_output=True,
        timeout=900,
    )
    wheels = cache / "wheels"
    build_wheelhouse(ROOT / "pyproject.toml", wheels)
    with WheelServer(wheels) as index:
        engine.docker(
            "build", "--network", "host", "--target", "runtime",
            "--build-arg", f"BASE_IMAGE={BASE_TAG}",
            "--build-arg", "PIP_NO_INDEX=1",
            "--build-arg", f"PIP_FIND_LINKS={index}",
            "--tag", IMAGE_TAG, str(ROOT),
            timeout_s=900,
        )  # fmt: skip
    size = int(engine.docker("image", "inspect", "--format", "{{.Size}}", IMAGE_TAG).stdout)
    measurements.record("image_size_mb", round(size / 1e6, 1))
    measurements.record("image_build_s", round(time.monotonic() - started, 1))
    return IMAGE_TAG


def _run_server(engine: DockerEngine, image: str, name: str, port: int, *extra: str) -> None:
    engine.docker(
        "run", "--detach", "--name", name, "--network", "host",
        "--read-only", "--tmpfs", "/tmp",
        "--env", f"WEIGHTSERVE_PORT={port}", "--env", "WEIGHTSERVE_HOST=127.0.0.1",
        # The image's own HEALTHCHECK command, checked more often than in production.
        "--health-interval", "1s", "--health-start-period", "0s",
        *extra, image,
    )  # fmt: skip


def _wait_ready(engine: DockerEngine, name: str, port: int, timeout_s: float = 120.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        state = json.loads(engine.docker("inspect", "--format", "{{json .State}}", name).stdout)
        if not state["Running"]:
            logs = engine.docker("logs", name, check=False)
            pytest.fail(f"container exited ({state['ExitCode']}):\n{logs.stdout}{logs.stderr}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as r:
                if r.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.1)
    pytest.fail(f"{name} not ready after {timeout_s:.0f} s")


def _wait_healthy(engine: DockerEngine, name: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if engine.docker("inspect", "--format", "{{.State.Health.Status}}", name).stdout.strip() == "healthy":
            return
        time.sleep(0.5)
    pytest.fail(f"{name} never reported healthy")


def _stop_and_exit_code(engine: DockerEngine, name: str) -> int:
    engine.docker("kill", "--signal", "TERM", name)
    return int(engine.docker("wait", name, timeout_s=120).stdout.strip())


def test_image_is_non_root_without_torch_or_compilers(engine: DockerEngine, image: str) -> None:
    config = json.loads(engine.docker("image", "inspect", "--format", "{{json .Config}}", image).stdout)
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["weightserve", "serve"]
    assert "/v2/health/ready" in " ".join(config["Healthcheck"]["Test"])
    # The JSON request reader is a C extension compiled in the builder stage: the runtime image
    # holds the built module, not the compiler that built it.
    probe = (
        "import glob, importlib.util, json, os, shutil, struct\n"
        "assert importlib.util.find_spec('torch') is None, 'torch'\n"
        "assert importlib.util.find_spec('onnxruntime') is not None\n"
        "assert [c for c in ('gcc', 'cc', 'g++', 'make', 'pip') if shutil.which(c)] == []\n"
        "assert glob.glob('/usr/bin/*gcc*') + glob.glob('/usr/local/bin/*gcc*') == []\n"
        "import service.protocol._infer_json as extension\n"
        "assert extension.__file__.startswith('/opt/venv/'), extension.__file__\n"
        "from service.protocol import native_json\n"
        'body = b\'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [0.1, -2.5]}]}\'\n'
        "data = native_json.parse(body)['inputs'][0]['data']\n"
        "assert data == (struct.pack('=2d', 0.1, -2.5), struct.pack('=2f', 0.1, -2.5)), data\n"
        "print(json.dumps([os.getuid(), sorted(os.listdir('/models'))]))\n"
    )
    result = engine.docker("run", "--rm", "--network", "none", "--entrypoint", "python3", image, "-c", probe)
    uid, shipped = json.loads(result.stdout)
    assert uid == 10001
    assert shipped == sorted(p.name for p in (ROOT / "models").iterdir() if p.is_dir())


def test_shipped_models_predict_through_tritonclient(
    engine: DockerEngine, image: str, measurements: Measurements
) -> None:
    port = free_port()
    _run_server(engine, image, "shipped", port)
    measurements.record("container_start_to_ready_s", round(_wait_ready(engine, "shipped", port), 2))
    _wait_healthy(engine, "shipped")
    client = triton.InferenceServerClient(f"127.0.0.1:{port}", network_timeout=60)
    names = sorted(p.name for p in (ROOT / "models").iterdir() if (p / "1").is_dir())
    assert sorted({m["name"] for m in client.get_model_repository_index()}) == names
    rng = np.random.default_rng(0)
    for name in names:
        metadata = client.get_model_metadata(name)
        inputs = []
        for spec in metadata["inputs"]:
            shape = [2 if d == -1 else d for d in spec["shape"]]
            array = rng.uniform(0, 16, size=shape).astype(DATATYPES[spec["datatype"]])
            tensor = triton.InferInput(spec["name"], shape, spec["datatype"])
            tensor.set_data_from_numpy(array, binary_data=True)
            inputs.append(tensor)
        result = client.infer(name, inputs)
        for spec in metadata["outputs"]:
            output = result.as_numpy(spec["name"])
            assert output is not None
            assert output.shape[0] == 2
            assert list(output.shape[1:]) == [d for d in spec["shape"][1:]]
            assert np.isfinite(output).all()
    assert _stop_and_exit_code(engine, "shipped") == 0


def test_mounted_repository_is_served_read_only_and_sigterm_drains(
    engine: DockerEngine, image: str, tmp_path: Path
) -> None:
    repository = tmp_path / "repository"
    write_identity_chain(repository, "identity", width=16, depth=1)
    # Slow enough (~1 s a request on two cores) that requests are still running at SIGTERM.
    write_identity_chain(repository, "slow", width=1024, depth=48)
    repository.chmod(0o755)
    port = free_port()
    _run_server(engine, image, "mounted", port, "--volume", f"{repository}:/models:ro")
    _wait_ready(engine, "mounted", port)

    client = triton.InferenceServerClient(f"127.0.0.1:{port}", network_timeout=120)
    x = np.arange(32, dtype=np.float32).reshape(2, 16)
    tensor = triton.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=False)
    np.testing.assert_array_equal(client.infer("identity", [tensor]).as_numpy("y"), x)
    # A whole-JSON request with decimal fractions, read by the compiled JSON reader.
    values = [float(f"{v:.6g}") for v in np.random.default_rng(7).normal(scale=100.0, size=32)]
    reply = _infer_json(
        port, "identity", {"inputs": [{"name": "x", "shape": [2, 16], "datatype": "FP32", "data": values}]}
    )
    [output] = reply["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("y", "FP32", [2, 16])
    np.testing.assert_array_equal(np.asarray(output["data"], dtype=np.float32), np.asarray(values, dtype=np.float32))

    in_flight = 3
    batches = [np.random.default_rng(i).normal(size=(1024, 1024)).astype(np.float32) for i in range(in_flight)]
    with concurrent.futures.ThreadPoolExecutor(in_flight) as pool:
        futures = [pool.submit(_infer_slow, port, batch) for batch in batches]
        _wait_in_flight(port, in_flight)
        exit_code = _stop_and_exit_code(engine, "mounted")
        answers = [f.result(timeout=120) for f in futures]
    for batch, answer in zip(batches, answers, strict=True):
        np.testing.assert_array_equal(answer, batch)
    assert exit_code == 0
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/live", timeout=2)


def _infer_json(port: int, model: str, request: dict[str, Any]) -> dict[str, Any]:
    http_request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v2/models/{model}/infer",
        data=json.dumps(request).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(http_request, timeout=60) as r:
        answer: dict[str, Any] = json.loads(r.read())
    return answer


def _infer_slow(port: int, batch: np.ndarray) -> np.ndarray:
    client = triton.InferenceServerClient(f"127.0.0.1:{port}", network_timeout=120)
    tensor = triton.InferInput("x", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch, binary_data=True)
    answer = client.infer("slow", [tensor]).as_numpy("y")
    assert answer is not None
    return np.asarray(answer)


def _wait_in_flight(port: int, expected: int, timeout_s: float = 60.0) -> None:
    """Until the server counts `expected` requests in flight besides the /metrics scrape."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
        found = re.search(r"^weightserve_http_requests_in_flight\S* (\S+)$", text, re.MULTILINE)
        if found and float(found.group(1)) >= expected + 1:
            return
        time.sleep(0.02)
    pytest.fail(f"never saw {expected} requests in flight")

"""Where runs execute: a run measured to be short runs on the event loop (no thread hand-over), a long
or unmeasured one on a worker thread, for batched models and for models that run each request alone."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
import pytest

from service.app import create_app
from service.serving import batching
from service.settings import Settings
from tests import model_factory as mf
from tests.serving.test_batching import call, infer_document, output_of


class ThreadRecorder:
    """Notes the thread of every onnxruntime session run."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.threads: list[str] = []
        original = ort.InferenceSession.run

        def recorded(session: Any, *args: Any, **kwargs: Any) -> Any:
            self.threads.append(threading.current_thread().name)
            return original(session, *args, **kwargs)

        monkeypatch.setattr(ort.InferenceSession, "run", recorded)


@pytest.mark.parametrize("max_batch_size", [64, 1], ids=["batched", "one-by-one"])
async def test_a_small_model_runs_on_the_event_loop_once_measured(
    tmp_path: Path, max_batch_size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A limit no run of this tiny model can exceed, however busy the machine: the test is about where
    # runs go once measured, not about how long they take.
    monkeypatch.setattr(batching, "INLINE_RUN_MAX_S", 60.0)
    mf.save(mf.identity("FP32", width=4), tmp_path, "echo")
    settings = Settings(repository=tmp_path, log_level="warning", intra_op_threads=1, max_batch_size=max_batch_size)
    app = create_app(settings)
    async with app.lifespan():
        loaded = app.state.registry.get("echo")
        assert (loaded.runner is not None) == (max_batch_size > 1)
        recorder = ThreadRecorder(monkeypatch)
        loop_thread = threading.current_thread().name
        for i in range(4):
            x = np.full((1, 4), float(i), dtype=np.float32)
            status, _, body = await call(app, "/v2/models/echo/infer", infer_document("INPUT0", x))
            assert status == 200, orjson.loads(body)
            np.testing.assert_array_equal(output_of(body), x)
        # The first run is not measured yet and goes to a thread; every later one stays on the loop.
        assert recorder.threads[0] != loop_thread
        assert recorder.threads[1:] == [loop_thread] * 3

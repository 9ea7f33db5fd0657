"""The parent's handle on one analysis process (see ``analysis_worker``): started on first use, at a
lower CPU priority and with a bounded number of BLAS threads, started again after a crash."""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import IO

from service.weights.analysis_task import AnalysisResult, AnalysisTask
from service.weights.spectral import SpectralLimits

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")


class AnalysisCrashed(RuntimeError):
    """The analysis process died (killed for memory, a crash in a native library) or failed."""


class AnalysisProcess:
    def __init__(self, threads: int, nice: int, measure: bool = False) -> None:
        self._threads = max(threads, 1)
        self._nice = nice
        self._measure = measure
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def _start(self) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        for name in _THREAD_VARIABLES:
            env[name] = str(self._threads)
        # the service may run from a checkout rather than an installed package
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p)
        return subprocess.Popen(
            [sys.executable, "-m", "service.weights.analysis_worker", str(self._nice), str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )

    def run(self, task: AnalysisTask, limits: SpectralLimits) -> AnalysisResult:
        process = self._process
        if process is None or process.poll() is not None:
            process = self._process = self._start()
        stdin: IO[bytes] | None = process.stdin
        stdout: IO[bytes] | None = process.stdout
        assert stdin is not None
        assert stdout is not None
        try:
            pickle.dump((task, limits, self._measure), stdin, protocol=pickle.HIGHEST_PROTOCOL)
            stdin.flush()
            status, payload = pickle.load(stdout)
        except (EOFError, OSError, pickle.UnpicklingError, ValueError) as exc:
            self.close()
            code = process.returncode
            raise AnalysisCrashed(f"the analysis process exited ({code if code is not None else exc})") from None
        if status != "ok" or not isinstance(payload, AnalysisResult):
            raise AnalysisCrashed(f"the analysis failed: {payload}")
        return payload

    def close(self, now: bool = False) -> None:
        """Let the process finish (its stdin closes, it exits), or with ``now`` end it mid-analysis."""
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(OSError):
            if process.stdin is not None:
                process.stdin.close()
        if now:
            process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()

"""The analysis process: ``python -m service.weights.analysis_worker NICE PARENT_PID``.

A long-lived child of a server worker (or of ``weightserve inspect``) that runs spectral analyses
one at a time: it reads pickled ``(task, limits, measure)`` requests on stdin and answers each with a
pickled ``("ok", AnalysisResult)`` or ``("error", message)`` on stdout. It lowers its own CPU priority
before numpy starts its BLAS threads, so they inherit it; the parent sets their number through the
environment. It exits when its stdin closes, and on Linux the kernel ends it when its parent dies
mid-analysis (a killed server process leaves no analysis running). Only the parent writes to its
stdin, so unpickling trusts nothing it did not send.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pickle
import signal
import sys
import traceback

_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the request took effect
        raise SystemExit(0)


def main(argv: list[str]) -> int:
    _die_with_parent(int(argv[2]) if len(argv) > 2 else os.getppid())
    nice = int(argv[1]) if len(argv) > 1 else 0
    with contextlib.suppress(OSError):  # only ever lower the priority
        current = os.getpriority(os.PRIO_PROCESS, 0)
        os.setpriority(os.PRIO_PROCESS, 0, max(current, min(nice, 19)))
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints must not corrupt the replies
    requests = sys.stdin.buffer

    from service.weights.analysis_task import run_task  # numpy starts its threads here, niced

    while True:
        try:
            task, limits, measure = pickle.load(requests)
        except EOFError:
            return 0
        try:
            reply: tuple[str, object] = ("ok", run_task(task, limits, measure))
        except Exception:  # one failed analysis must not take the process down
            reply = ("error", traceback.format_exc(limit=8))
        pickle.dump(reply, replies, protocol=pickle.HIGHEST_PROTOCOL)
        replies.flush()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))

"""The analysis process: ``python -m service.weights.analysis_worker NICE``.

A long-lived child of a server worker (or of ``weightserve inspect``) that runs spectral analyses
one at a time: it reads pickled ``(task, limits, measure)`` requests on stdin and answers each with a
pickled ``("ok", AnalysisResult)`` or ``("error", message)`` on stdout. It lowers its own CPU priority
before numpy starts its BLAS threads, so they inherit it; the parent sets their number through the
environment. It exits when its stdin closes, which is also what happens when its parent dies.
Only the parent writes to its stdin, so unpickling trusts nothing it did not send.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import sys
import traceback


def main(argv: list[str]) -> int:
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

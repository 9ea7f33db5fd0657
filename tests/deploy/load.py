"""A closed-loop load generator for the V2 infer endpoint, bounded in requests and in time.

Each of `concurrency` workers sends one request, waits for its answer, checks it, and sends the
next, until `total` requests were sent or `deadline_s` passed. Every request carries its own
values and the identity model must return them unchanged, so a mixed-up answer counts as a
failure just like an error status or a dropped connection.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

WIDTH = 16


@dataclass(frozen=True)
class Failure:
    request: int
    reason: str
    started: float
    """time.monotonic() when the request was sent."""
    upstream: str = ""
    """The replica nginx was reading the answer from (the last one it tried), if it said."""
    truncated: bool = False
    """The status line and headers arrived, the body did not: the replica died mid-answer."""


@dataclass
class LoadResult:
    sent: int = 0
    succeeded: int = 0
    failures: list[Failure] = field(default_factory=list)
    upstreams: Counter[str] = field(default_factory=Counter)
    retried: int = 0
    elapsed_s: float = 0.0

    @property
    def requests_per_s(self) -> float:
        return self.succeeded / self.elapsed_s if self.elapsed_s else 0.0


async def run_load(
    url: str,
    total: int,
    concurrency: int,
    deadline_s: float,
    on_progress: Callable[[int], None] | None = None,
) -> LoadResult:
    """POST `total` identity requests to `url` from `concurrency` closed loops."""
    result = LoadResult()
    counter = itertools.count()
    started = time.monotonic()
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

        async def worker() -> None:
            while time.monotonic() - started < deadline_s:
                n = next(counter)
                if n >= total:
                    return
                result.sent += 1
                await _one(session, url, n, result)
                if on_progress is not None:
                    on_progress(result.succeeded + len(result.failures))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.elapsed_s = time.monotonic() - started
    return result


async def _one(session: aiohttp.ClientSession, url: str, n: int, result: LoadResult) -> None:
    values = [float(n * WIDTH + i) for i in range(WIDTH)]
    body = {"inputs": [{"name": "x", "shape": [1, WIDTH], "datatype": "FP32", "data": values}]}
    started = time.monotonic()
    tried: list[str] = []
    try:
        async with session.post(url, json=body) as response:
            # nginx lists every upstream it tried: "a:1, b:2" means a failed and b answered.
            tried = [u.strip() for u in response.headers.get("X-Upstream", "").split(",") if u.strip()]
            payload = await response.json(content_type=None)
            if response.status != 200:
                result.failures.append(Failure(n, f"{response.status} {payload}", started, _last(tried)))
                return
    except aiohttp.ClientPayloadError as exc:
        result.failures.append(Failure(n, str(exc), started, _last(tried), truncated=bool(tried)))
        return
    except (aiohttp.ClientError, TimeoutError) as exc:
        result.failures.append(Failure(n, f"{type(exc).__name__}: {exc}", started, _last(tried)))
        return
    if payload["outputs"][0]["data"] != values:
        result.failures.append(Failure(n, "wrong answer", started, _last(tried)))
        return
    result.succeeded += 1
    result.retried += len(tried) > 1
    if tried:
        result.upstreams[tried[-1]] += 1


def _last(tried: list[str]) -> str:
    return tried[-1] if tried else ""

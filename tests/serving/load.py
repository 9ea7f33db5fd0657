"""A closed-loop load generator: N workers, each sends its next request when the previous one answered."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.serving.onnx_models import infer_body


@dataclass
class LoadResult:
    sent: int = 0
    failures: list[str] = field(default_factory=list)
    versions: list[tuple[float, str]] = field(default_factory=list)
    """(time since start, model_version) of every successful response, in completion order."""
    elapsed_s: float = 0.0

    def version_counts(self) -> Counter[str]:
        return Counter(version for _, version in self.versions)


async def closed_loop(
    url: str,
    model: str,
    *,
    requests: int,
    concurrency: int,
    time_limit_s: float,
    during: Callable[[LoadResult], Coroutine[Any, Any, None]] | None = None,
) -> LoadResult:
    """Send ``requests`` inference requests at ``concurrency``; ``during`` runs alongside (e.g. a swap)."""
    result = LoadResult()
    body = infer_body()
    started = time.monotonic()
    deadline = started + time_limit_s
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30.0) as client:

        async def worker() -> None:
            while result.sent < requests and time.monotonic() < deadline:
                result.sent += 1
                try:
                    response = await client.post(f"/v2/models/{model}/infer", json=body)
                except httpx.HTTPError as exc:
                    result.failures.append(f"transport: {exc!r}")
                    continue
                if response.status_code != 200:
                    result.failures.append(f"{response.status_code}: {response.text[:200]}")
                    continue
                result.versions.append((time.monotonic() - started, response.json()["model_version"]))

        workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
        side = asyncio.create_task(during(result)) if during is not None else None
        await asyncio.gather(*workers)
        if side is not None:
            await side
    result.elapsed_s = time.monotonic() - started
    return result


async def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.02)

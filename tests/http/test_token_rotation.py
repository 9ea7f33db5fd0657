"""A changed tokens file (a rotated secret, a revoked token) takes effect in every worker of a
running server, without a restart; a broken one keeps the tokens in force. Real server, two
workers, a fresh connection per call so the kernel spreads the calls over both."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.http.access import bearer
from tests.server import RunningServer, serve
from tests.serving.onnx_models import write_version

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

OLD = "rotated-away-token-5e0c2a91"
NEW = "rotated-in-token-b47f13d8"
CALLS = 20


def _write_tokens(path: Path, text: str) -> None:
    """Replaced at once, as a mounted secret or a careful operator does (never half written)."""
    fresh = path.with_suffix(".new")
    fresh.write_text(text)
    os.replace(fresh, path)


def _grant(name: str, token: str) -> str:
    return json.dumps([{"name": name, "token": token, "scopes": ["export"]}])


def _statuses(server: RunningServer, path: str, token: str) -> set[int]:
    return {httpx.get(f"{server.base_url}{path}", headers=bearer(token), timeout=30).status_code for _ in range(CALLS)}


def _eventually(check: Callable[[], bool], server: RunningServer) -> None:
    deadline = time.monotonic() + 60
    while not check():
        assert time.monotonic() < deadline, server.log()[-4000:]
        time.sleep(0.2)


def test_a_changed_tokens_file_takes_effect_in_every_worker_without_a_restart(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    write_version(repository, "m", 1)
    tokens = tmp_path / "tokens.json"
    _write_tokens(tokens, _grant("old", OLD))
    env = {"WEIGHTSERVE_AUTH_TOKENS_FILE": str(tokens), "WEIGHTSERVE_LOG_LEVEL": "info"}
    with serve(repository, tmp_path, env=env, workers="2") as server:
        pids = server.wait_workers(2)
        tensor = httpx.get(f"{server.base_url}/v2/models/m/weights", timeout=30).json()["tensors"][0]["id"]
        values = f"/v2/models/m/weights/{tensor}/values"
        assert _statuses(server, values, OLD) == {200}
        assert _statuses(server, values, NEW) == {401}

        # Rotation: the old token is revoked, the new one works, in both workers.
        _write_tokens(tokens, _grant("new", NEW))
        _eventually(lambda: _statuses(server, values, OLD) == {401} and _statuses(server, values, NEW) == {200}, server)
        assert server.log().count("re-read: 1 tokens in force") >= 2  # each worker read it itself

        # A broken file (a typo in an edit) is refused; the tokens in force stay, in both workers.
        _write_tokens(tokens, '[{"name": "new", "token": ')
        def both_refused_it() -> bool:
            answered = _statuses(server, values, NEW)  # a worker looks at the file when a token is needed
            assert answered == {200}
            return server.log().count("the tokens file changed, but") >= 2

        _eventually(both_refused_it, server)
        assert _statuses(server, values, NEW) == {200}
        assert _statuses(server, values, OLD) == {401}
        assert NEW not in server.log()  # secrets are never logged
        assert OLD not in server.log()
        assert server.worker_pids() == pids  # nobody restarted

"""The former lifecycle-test helper, now a thin shim over ``tests.server.serve`` (the one helper that
starts servers): the admin token set, info logs, ``url`` with its scheme. New tests use ``serve``."""

from __future__ import annotations

import contextlib
from pathlib import Path
from types import TracebackType

from tests.server import ADMIN_TOKEN, RunningServer, serve

__all__ = ["ADMIN_TOKEN", "ServerProcess"]


class ServerProcess:
    def __init__(self, repository: Path, log_path: Path, **settings: str) -> None:
        settings.setdefault("admin_token", ADMIN_TOKEN)
        settings.setdefault("log_level", "info")
        self._serving = serve(repository, log_path.parent, **settings)
        self._stack = contextlib.ExitStack()
        self._server: RunningServer | None = None

    def __enter__(self) -> ServerProcess:
        self._server = self._stack.enter_context(self._serving)
        return self

    @property
    def url(self) -> str:
        assert self._server is not None
        return self._server.base_url

    def log(self) -> str:
        assert self._server is not None
        return self._server.log()[-6000:]

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stack.close()

"""Shared by the access tests: one token per scope, settings built from them, and the routes an app
really registers, each with a concrete path to request."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from litestar import Litestar

from service.http.auth import RouteAccess, declared_access
from service.settings import SCOPES, AuthSettings, Scope, Settings, TokenSpec

TOKENS: dict[Scope, str] = {scope: f"{scope}-secret-0f3a9c7e5b1d2468" for scope in SCOPES}
"""A token per scope; the holder of ``TOKENS[s]`` is named ``HOLDERS[s]`` and may use ``s`` only."""
HOLDERS: dict[Scope, str] = {scope: f"{scope}-holder" for scope in SCOPES}
WRONG_TOKEN = "not-a-configured-token-5e8d1c"


def one_token_per_scope() -> tuple[TokenSpec, ...]:
    return tuple(
        TokenSpec.model_validate({"name": HOLDERS[scope], "token": TOKENS[scope], "scopes": [scope]})
        for scope in SCOPES
    )


def settings(repository: Path, open_scopes: Iterable[Scope], tokens: tuple[TokenSpec, ...] = ()) -> Settings:
    return Settings(repository=repository, auth=AuthSettings(tokens=tokens, open_scopes=frozenset(open_scopes)))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass(frozen=True)
class Route:
    """One method of one registered path, and the access its handler declares."""

    method: str
    path: str
    access: RouteAccess | None

    @property
    def id(self) -> str:
        return f"{self.method} {self.path}"

    def concrete(self, values: dict[str, str]) -> str:
        """The path with each ``{name:type}`` filled from ``values`` (``x`` for a name not in it)."""
        return re.sub(r"\{(\w+):\w+\}", lambda m: values.get(m.group(1), "x"), self.path)


def registered_routes(app: Litestar) -> list[Route]:
    """Every (method, path) the app routes, Litestar's automatic OPTIONS handlers included."""
    routes = {
        Route(method, route.path, declared_access(handler))
        for route in app.routes
        for handler in getattr(route, "route_handlers", [])
        for method in handler.http_methods
    }
    return sorted(routes, key=lambda r: (r.path, r.method))

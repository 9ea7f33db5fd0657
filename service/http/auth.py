"""Access control: every route declares a scope, named bearer tokens grant scopes, one guard checks.

A route handler (or its controller) declares what it needs in one place, its ``opt``:
``@get("/path", opt=requires("inspect"))`` or ``opt = requires("infer")`` on a controller; the
handler's own declaration wins over its controller's. ``public`` routes need nothing (health probes,
the dashboard's static files, the OpenAPI document). A route that declares nothing is refused, and a
test walks every registered route to make sure none does.

Tokens come from ``WEIGHTSERVE_AUTH_TOKENS``, ``WEIGHTSERVE_AUTH_TOKENS_FILE`` and the shorthand
``WEIGHTSERVE_ADMIN_TOKEN``; only their SHA-256 digests are kept, and a presented token is hashed and
compared with every digest in constant time. Scopes in ``WEIGHTSERVE_AUTH_OPEN_SCOPES`` need no token.
A change to the tokens file takes effect within a second, in every worker, without a restart.
Every ``export`` and ``admin`` call leaves an audit line (`AuditTrail`); access decisions are counted
in ``weightserve_access_total``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast, get_args

from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.spec import SecurityRequirement
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import Forbidden, ServiceError, Unauthorized
from service.ops.logs import AUDIT_LOGGER
from service.ops.prometheus import ServiceMetrics
from service.settings import SCOPES, Settings, TokenSpec, configured_tokens
from service.settings import Scope as AccessScope

log = logging.getLogger("service.http")
audit_log = logging.getLogger(AUDIT_LOGGER)

RouteAccess = Literal["public", "infer", "inspect", "export", "admin"]
ACCESS_KEY = "access"
"""The ``opt`` key a route's declaration lives under."""

AUDITED: frozenset[AccessScope] = frozenset({"export", "admin"})
SECURITY_SCHEME = "bearer"

_WHAT: dict[AccessScope, str] = {
    "infer": "inference and model metadata",
    "inspect": "weight statistics and inspection",
    "export": "raw weight values",
    "admin": "the repository API",
}
_AUDIT_HEADERS = (b"authorization", b"x-forwarded-for")


def requires(access: RouteAccess) -> dict[str, RouteAccess]:
    """A route's access declaration, for its ``opt``: ``@post("/x", opt=requires("admin"))``."""
    return {ACCESS_KEY: access}


def declared_access(handler: BaseRouteHandler) -> RouteAccess | None:
    """What a registered handler declared, or None when it declared nothing valid."""
    # Litestar adds an OPTIONS handler to every path by itself; it answers only the allowed methods.
    if getattr(handler.fn, "__module__", "") == "litestar.routes.http" and handler.handler_name == "options_handler":
        return "public"
    value = handler.opt.get(ACCESS_KEY)
    return cast(RouteAccess, value) if value in get_args(RouteAccess) else None


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a request says it is: a configured token's name, or no / an unknown token."""

    name: str | None
    presented: bool
    scopes: frozenset[AccessScope]

    def describe(self) -> str:
        if self.name is not None:
            return f"token '{self.name}'"
        return "an unknown token" if self.presented else "no token"


NO_TOKEN = Caller(None, False, frozenset())
UNKNOWN_TOKEN = Caller(None, True, frozenset())

class TokensFile:
    """Notices when ``WEIGHTSERVE_AUTH_TOKENS_FILE`` changes (a rotated secret, a revoked token), looking
    at most once every ``RECHECK_S``, so a change takes effect without a restart."""

    RECHECK_S = 1.0

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._path = settings.auth.tokens_file
        self._stamp = self._read_stamp()
        self._next_check = time.monotonic() + self.RECHECK_S

    def changed_tokens(self) -> list[TokenSpec] | None:
        """Every configured token when the file changed since last time and is valid; else None."""
        now = time.monotonic()
        if self._path is None or now < self._next_check:
            return None
        self._next_check = now + self.RECHECK_S
        stamp = self._read_stamp()
        if stamp == self._stamp:
            return None
        self._stamp = stamp
        try:
            tokens = configured_tokens(self._settings)
        except ValueError as exc:  # a half-edited file must not lock everyone out: keep what is in force
            log.error("the tokens file changed, but %s; the tokens in force stay", exc)
            return None
        log.warning("tokens file %s re-read: %d tokens in force", self._path, len(tokens))
        return tokens

    def _read_stamp(self) -> tuple[int, int, int] | None:
        if self._path is None:
            return None
        try:
            # Through links: a mounted Kubernetes secret changes by swapping the folder a link names.
            found = self._path.stat()
        except OSError:
            return None
        return found.st_mtime_ns, found.st_size, found.st_ino


class AccessPolicy:
    """Which scopes are open, which tokens grant what; decides every request and counts the decisions."""

    def __init__(
        self,
        tokens: Sequence[TokenSpec],
        open_scopes: Iterable[AccessScope],
        metrics: ServiceMetrics,
        tokens_file: TokensFile | None = None,
    ) -> None:
        self._use(tokens)
        self._open = frozenset(open_scopes)
        self._tokens_file = tokens_file
        outcomes = ("granted", "unauthorized", "forbidden")
        # Resolved once: every series exists from the start (at 0), and no labels() call per request.
        self._counters = {(s, o): metrics.access.labels(s, o) for s in SCOPES for o in outcomes}

    @classmethod
    def from_settings(cls, settings: Settings, metrics: ServiceMetrics) -> AccessPolicy:
        watched = TokensFile(settings) if settings.auth.tokens_file is not None else None
        return cls(configured_tokens(settings), settings.auth.open_scopes, metrics, watched)

    def _use(self, tokens: Sequence[TokenSpec]) -> None:
        self._tokens = [(token.digest(), Caller(token.name, True, token.scopes)) for token in tokens]
        self._grantable = frozenset(scope for token in tokens for scope in token.scopes)

    def is_open(self, scope: AccessScope) -> bool:
        return scope in self._open

    def identify(self, authorization: str | None) -> Caller:
        """The caller an ``Authorization`` header names; every digest is compared, so timing tells nothing."""
        scheme, _, presented = (authorization or "").partition(" ")
        presented = presented.strip()
        if scheme.lower() != "bearer" or not presented:
            return NO_TOKEN
        # Headers arrive decoded as latin-1: encoding back gives the bytes that were sent.
        given = hashlib.sha256(presented.encode("latin-1", "replace")).digest()
        found = UNKNOWN_TOKEN
        for digest, caller in self._tokens:
            if hmac.compare_digest(digest, given):
                found = caller
        return found

    def authorize(self, scope: AccessScope, authorization: str | None) -> Caller:
        """The caller, when it may use ``scope``; else raise Unauthorized (401) or Forbidden (403)."""
        if scope in self._open and scope not in AUDITED:
            return NO_TOKEN
        if self._tokens_file is not None and (changed := self._tokens_file.changed_tokens()) is not None:
            self._use(changed)
        caller = self.identify(authorization)
        refusal = self._refusal(scope, caller)
        outcome = "granted" if refusal is None else "unauthorized" if isinstance(refusal, Unauthorized) else "forbidden"
        self._counters[scope, outcome].inc()
        if refusal is not None:
            raise refusal
        return caller

    def _refusal(self, scope: AccessScope, caller: Caller) -> ServiceError | None:
        if scope in self._open or scope in caller.scopes:
            return None
        realm = f'Bearer realm="weightserve", scope="{scope}"'
        if scope not in self._grantable:
            shorthand = ", or set WEIGHTSERVE_ADMIN_TOKEN" if scope == "admin" else ""
            return Forbidden(
                f"the '{scope}' scope ({_WHAT[scope]}) is closed: no configured token grants it. Add a token "
                f"with this scope to WEIGHTSERVE_AUTH_TOKENS or WEIGHTSERVE_AUTH_TOKENS_FILE{shorthand}, or "
                f"open the scope to everyone with WEIGHTSERVE_AUTH_OPEN_SCOPES",
                realm,
            )
        if caller.name is None and not caller.presented:
            return Unauthorized(f"this endpoint needs 'Authorization: Bearer <token>' with the '{scope}' scope", realm)
        if caller.name is None:
            return Unauthorized("invalid token", f'{realm}, error="invalid_token"')
        return Forbidden(
            f"token '{caller.name}' does not grant the '{scope}' scope ({_WHAT[scope]})",
            f'{realm}, error="insufficient_scope"',
        )

    def guard(self, connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
        """The one Litestar guard, on the app: runs before a handler reads its body or parameters."""
        access = declared_access(handler)
        if access is None:  # fail closed; tests/http/test_access_matrix.py keeps this from happening
            raise Forbidden(f"route {handler.handler_name} declares no access scope")
        if access != "public":
            self.authorize(access, connection.headers.get("authorization"))

    def security(self, access: RouteAccess) -> list[SecurityRequirement]:
        """The route's OpenAPI security requirements (scopes as OpenAPI 3.1 role names)."""
        if access == "public":
            return []
        required: SecurityRequirement = {SECURITY_SCHEME: [access]}
        return [{}, required] if access in self._open else [required]


class AuditTrail:
    """Litestar middleware: one log line for every ``export`` and ``admin`` call, with its outcome.

    Who (token name, never the token), what (method, path, model, version, tensor), from where (the
    peer address, and X-Forwarded-For as the client claims it), and the status sent; when is the
    line's time. Inside the route's exception handling, so refusals by the guard are logged too.
    """

    def __init__(self, app: ASGIApp, policy: AccessPolicy) -> None:
        self._app = app
        self._policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        access = declared_access(scope["route_handler"]) if scope["type"] == ScopeType.HTTP else None
        if access not in AUDITED:
            await self._app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, send_noting_status)
        finally:
            self._record(scope, str(access), status, time.perf_counter() - started)

    def _record(self, scope: Scope, access: str, status: int, elapsed: float) -> None:
        headers = {key: value.decode("latin-1") for key, value in scope.get("headers", []) if key in _AUDIT_HEADERS}
        caller = self._policy.identify(headers.get(b"authorization"))
        params = scope.get("path_params", {})
        client = scope.get("client")
        fields = {
            "audit": access,
            "token_name": caller.name,
            "credentials": "token" if caller.name else "unknown" if caller.presented else "none",
            "method": scope.get("method", ""),
            "path": scope.get("path", ""),
            "model": params.get("model_name"),
            "version": params.get("model_version"),  # none: the request asked for the default version
            "tensor": params.get("tensor_id"),
            "client": client[0] if client else None,
            "forwarded_for": headers.get(b"x-forwarded-for"),
            "status": status,
            "duration_ms": round(elapsed * 1000, 3),
        }
        audit_log.info(
            "%s %s %s by %s from %s: %d",
            access,
            fields["method"],
            json.dumps(fields["path"]),
            caller.describe(),
            fields["client"] or "unknown address",
            status,
            extra=fields,
        )

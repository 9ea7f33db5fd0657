"""Admin authentication for state-changing endpoints: ``Authorization: Bearer <token>``."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from pydantic import SecretStr

from service.errors import Forbidden, Unauthorized


def require_admin(headers: Mapping[str, str], token: SecretStr | None) -> None:
    """Raise unless the request carries the configured admin token (compared in constant time)."""
    if token is None or not token.get_secret_value():
        raise Forbidden("administrative endpoints are disabled: set WEIGHTSERVE_ADMIN_TOKEN to enable them")
    scheme, _, presented = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not presented:
        raise Unauthorized("this endpoint needs 'Authorization: Bearer <admin token>'")
    # Digests first: equal lengths, so not even the token's length shows in the timing.
    given = hashlib.sha256(presented.strip().encode("utf-8", "surrogateescape")).digest()
    expected = hashlib.sha256(token.get_secret_value().encode("utf-8")).digest()
    if not hmac.compare_digest(given, expected):
        raise Unauthorized("invalid admin token")

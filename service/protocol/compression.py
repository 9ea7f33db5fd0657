"""Content-Encoding for V2 bodies: gzip, deflate (zlib-wrapped, as Triton and tritonclient use it)."""

from __future__ import annotations

import gzip
import zlib

from service.errors import InvalidRequest, PayloadTooLarge, UnsupportedEncoding

SUPPORTED = ("gzip", "deflate")


def decompress(body: bytes, encoding: str | None, max_bytes: int) -> bytes:
    """The body as sent before compression, refusing to inflate past ``max_bytes`` (zip bombs)."""
    token = (encoding or "identity").strip().lower()
    if token in ("", "identity"):
        return body
    if token == "gzip":
        wbits = 16 + zlib.MAX_WBITS
    elif token == "deflate":
        wbits = zlib.MAX_WBITS
    else:
        raise UnsupportedEncoding(f"unsupported Content-Encoding {encoding!r}; use gzip or deflate")
    parts: list[bytes] = []
    size = 0
    rest = body
    while True:
        inflater = zlib.decompressobj(wbits)
        try:
            out = inflater.decompress(rest, max_bytes - size + 1)
        except zlib.error as exc:
            raise InvalidRequest(f"request body is not valid {token} data: {exc}") from exc
        size += len(out)
        if size > max_bytes or inflater.unconsumed_tail:
            raise PayloadTooLarge(f"decompressed request body exceeds the limit of {max_bytes} bytes")
        if not inflater.eof:
            raise InvalidRequest(f"request body is truncated {token} data")
        parts.append(out)
        rest = inflater.unused_data
        if not rest:
            return b"".join(parts)  # one member: the very bytes object, not a copy
        # gzip allows several members one after the other (RFC 1952), as `cat a.gz b.gz` makes; anything
        # else after the end of the data is an error, never silently dropped.
        if token != "gzip":
            raise InvalidRequest(f"request body has {len(rest)} bytes after the end of its deflate data")


def negotiate(accept_encoding: str | None) -> str | None:
    """The response encoding to use: the first of gzip / deflate the client accepts, else none."""
    if not accept_encoding:
        return None
    for part in accept_encoding.split(","):
        token, _, params = part.strip().partition(";")
        token = token.strip().lower()
        if token in SUPPORTED and params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000"):
            return token
    return None


def compress(body: bytes, encoding: str) -> bytes:
    # Level 1: response compression is on the request path; the ratio gain of higher levels is small.
    if encoding == "gzip":
        return gzip.compress(body, compresslevel=1, mtime=0)
    return zlib.compress(body, 1)

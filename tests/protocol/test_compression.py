"""Compressed request bodies: every byte sent is either decoded or refused, never dropped."""

from __future__ import annotations

import gzip
import zlib

import pytest

from service.errors import InvalidRequest, PayloadTooLarge
from service.protocol.compression import decompress


def test_a_gzip_body_of_several_members_decodes_whole() -> None:
    body = gzip.compress(b'{"inputs": ') + gzip.compress(b"[]}")

    assert decompress(body, "gzip", 1 << 20) == b'{"inputs": []}'
    assert decompress(body, "gzip", 1 << 20) == gzip.decompress(body)


@pytest.mark.parametrize(
    ("body", "encoding", "message"),
    [
        (gzip.compress(b"{}") + b"trailing", "gzip", "not valid gzip data"),
        (zlib.compress(b"{}") + b"trailing", "deflate", "8 bytes after the end of its deflate data"),
        (zlib.compress(b"{}") + zlib.compress(b"{}"), "deflate", "after the end of its deflate data"),
        (gzip.compress(b"{}")[:-3], "gzip", "truncated gzip data"),
    ],
)
def test_bytes_after_or_missing_from_the_compressed_data_are_refused(body: bytes, encoding: str, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        decompress(body, encoding, 1 << 20)


def test_the_size_limit_counts_every_gzip_member() -> None:
    member = gzip.compress(b" " * 600)

    assert len(decompress(member, "gzip", 1000)) == 600
    with pytest.raises(PayloadTooLarge):
        decompress(member + member, "gzip", 1000)
    assert len(decompress(member + member, "gzip", 1200)) == 1200

"""The weights dashboard: static HTML, CSS and JavaScript modules shipped inside the package.

Nothing here is built: the browser loads the files as they are, from the service's own origin.
"""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from importlib import resources
from pathlib import PurePosixPath

from service.errors import NotFound

# Declared here, not taken from the host's mime tables, so every machine serves the same types
# (browsers refuse ES modules served as text/plain).
CONTENT_TYPES = {
    ".html": "text/html",
    ".css": "text/css",
    ".js": "text/javascript",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
}


@dataclass(frozen=True, slots=True)
class Asset:
    path: str
    body: bytes
    content_type: str

    @property
    def etag(self) -> str:
        return '"' + hashlib.sha256(self.body).hexdigest()[:32] + '"'


def read_asset(path: str) -> Asset:
    """One file under ``static/``; anything outside it, hidden, or of an unknown type is not found."""
    parts = PurePosixPath(path).parts
    if not parts or any(part in ("", ".", "..") or part.startswith(".") or "\\" in part for part in parts):
        raise NotFound(f"no dashboard asset '{path}'")
    suffix = PurePosixPath(path).suffix.lower()
    content_type = CONTENT_TYPES.get(suffix) or mimetypes.types_map.get(suffix)
    if content_type is None:
        raise NotFound(f"no dashboard asset '{path}'")
    node = resources.files(__name__).joinpath("static", *parts)
    if not node.is_file():
        raise NotFound(f"no dashboard asset '{path}'")
    return Asset(path, node.read_bytes(), content_type)

"""Request ids, structured logs, and the per-request context that metrics and logs read.

Every HTTP response carries ``X-Request-ID``: the caller's, when it is a sane token, else a fresh
one. The id rides in a context variable for the duration of the request, so every log line written
while handling it (also from the registry or an error handler) names it.
"""

from __future__ import annotations

import contextvars
import itertools
import json
import logging
import os
import re
import secrets
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

REQUEST_ID_HEADER = "x-request-id"

AUDIT_LOGGER = "service.audit"
"""Audit lines (every export and admin call); written whatever the service's log level."""

# Generated ids: random per process start and the process id, then a counter. uuid4 reads the OS's
# random source on every call, which showed up as several per cent of a small request's CPU; so did
# os.getpid(), a system call each time, so the prefix is built once per process (again after a fork).
_ID_SEQUENCE = itertools.count(1)


def _id_prefix() -> str:
    return f"{secrets.token_hex(4)}{os.getpid() & 0xFFFFFFFF:08x}"


_id_prefix_now = [_id_prefix()]
os.register_at_fork(after_in_child=lambda: _id_prefix_now.__setitem__(0, _id_prefix()))

# An incoming id is echoed into headers and logs, so only plain tokens are accepted.
_VALID_ID = re.compile(r"[A-Za-z0-9._:@+=/-]{1,128}")

_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


@dataclass(slots=True)
class RequestContext:
    """What one request has touched; the registry notes the model version it leased."""

    request_id: str
    started: float = field(default_factory=time.perf_counter)
    model: str = ""
    version: str = ""


_current: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar("weightserve_request", default=None)


def request_id_from(raw: str | None) -> str:
    """The caller's id when it is a plain token, else a new one."""
    if raw and _VALID_ID.fullmatch(raw):
        return raw
    return f"{_id_prefix_now[0]}{next(_ID_SEQUENCE) & (2**64 - 1):016x}"


def begin_request(request_id: str) -> tuple[RequestContext, contextvars.Token[RequestContext | None]]:
    context = RequestContext(request_id)
    return context, _current.set(context)


def end_request(token: contextvars.Token[RequestContext | None]) -> None:
    _current.reset(token)


def current_request() -> RequestContext | None:
    return _current.get()


def note_model(name: str, version: str) -> None:
    """Record which model version serves the current request (no-op outside a request)."""
    context = _current.get()
    if context is not None:
        context.model = name
        context.version = version


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        context = _current.get()
        if not hasattr(record, "request_id"):
            record.request_id = context.request_id if context is not None else ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, and any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_") and value not in ("", None):
                document[key] = value
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str)


_HANDLER_NAME = "weightserve"


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time (test runners swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


def configure_logging(level: str, fmt: Literal["json", "text"]) -> None:
    """Attach the service's handler to the ``service`` logger once per process."""
    logger = logging.getLogger("service")
    logger.setLevel(level.upper())
    # A quieter service log must not drop the audit trail: its own level, through the same handler.
    logging.getLogger(AUDIT_LOGGER).setLevel(logging.INFO)
    if any(handler.get_name() == _HANDLER_NAME for handler in logger.handlers):
        return
    handler = _StderrHandler()
    handler.set_name(_HANDLER_NAME)
    handler.addFilter(_RequestIdFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    logger.addHandler(handler)

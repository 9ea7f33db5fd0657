"""The ``weightserve`` command: ``serve``, and the subcommands of the other packages."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.settings import Settings

# Subcommand -> module whose ``main(argv)`` runs it; imported lazily so `serve` never needs torch.
_DELEGATES = {
    "train": ("training.cli", "train models and export them into the repository (needs the 'train' extra)"),
    "inspect": ("service.weights.cli", "print the per-layer weight table of a model"),
    "explain": ("service.inspection.cli", "render a heat map PNG for an input"),
    "publish": ("training.publish_cli", "publish a PyTorch checkpoint as the next version (needs the 'train' extra)"),
}


def threads_per_worker(workers: int) -> int:
    """onnxruntime intra-op threads per session when not configured: the cores this process may use
    (its CPU quota included) split between the workers."""
    from service.settings import available_cores

    return max(1, available_cores() // workers)


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options for every server process (the benchmark's bare-ASGI ceiling uses them too)."""
    options: dict[str, Any] = {
        "log_level": settings.log_level.lower(),
        "timeout_graceful_shutdown": int(settings.drain_timeout_s) or None,
        "access_log": False,
        # The service reads no client address; parsing X-Forwarded-* would cost every request.
        "proxy_headers": False,
    }
    try:  # httptools comes with uvicorn[standard]; without it uvicorn's own choice stands
        from service.ops.server_protocol import CoalescingHttpToolsProtocol
    except ImportError:
        return options
    options["http"] = CoalescingHttpToolsProtocol
    return options


def _serve(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="weightserve serve", description="Serve the model repository over HTTP.")
    parser.add_argument("--repository", help="model repository folder (default: models)")
    parser.add_argument("--host", help="bind address (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: 8000)")
    parser.add_argument("--workers", type=int, help="server processes (default: one per core, within the CPU quota)")
    parser.add_argument("--log-level", help="debug, info, warning, error")
    args = parser.parse_args(argv)
    # Settings travel through the environment so every worker process builds the same ones.
    for key in ("repository", "host", "port", "workers", "log_level"):
        value = getattr(args, key)
        if value is not None:
            os.environ[f"WEIGHTSERVE_{key.upper()}"] = str(value)

    from pydantic import ValidationError

    from service.settings import Settings, configured_tokens

    try:
        settings = Settings()
        configured_tokens(settings)  # a bad tokens file stops here, not inside every worker
    except (ValidationError, ValueError) as exc:
        print(f"weightserve serve: invalid settings: {exc}", file=sys.stderr)
        return 2
    if settings.intra_op_threads == 0:
        # onnxruntime's default is a thread per core in every process, and it counts the host's
        # cores, not the container's CPU quota: N workers would run N x cores compute threads
        # (spinning while idle) against N event loops. Split the cores this process may use instead.
        os.environ["WEIGHTSERVE_INTRA_OP_THREADS"] = str(threads_per_worker(settings.workers))
    if not settings.repository.is_dir():
        print(f"weightserve serve: model repository {settings.repository} is not a directory", file=sys.stderr)
        return 2
    from service.ops.logs import configure_logging
    from service.ops.prometheus import shared_across_workers
    from service.ops.run_dir import private_run_dir
    from service.ops.shutdown import exit_zero_after_graceful_stop
    from service.ops.supervisor import Supervisor, serve_one

    options = server_options(settings)
    exit_zero_after_graceful_stop()
    with shared_across_workers(settings.workers):
        if settings.workers > 1:
            # Not uvicorn's supervisor: its workers share one socket, so connections pile onto one,
            # and nothing there keeps the workers serving one repository state.
            configure_logging(settings.log_level, settings.log_format)
            with private_run_dir(settings.state_dir) as run_dir:
                return Supervisor(settings.workers, settings.host, settings.port, options, settings, run_dir).run()
        return serve_one(settings, options)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands: dict[str, tuple[Callable[[list[str]], int] | str, str]] = {
        "serve": (_serve, "serve the model repository over the V2 protocol"),
        **{name: (module, help_) for name, (module, help_) in _DELEGATES.items()},
    }
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        lines = [f"  {name:<8} {help_}" for name, (_, help_) in commands.items()]
        print("usage: weightserve COMMAND [ARGS]\n\ncommands:\n" + "\n".join(lines), file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    target, _ = commands[argv[0]]
    if callable(target):
        return target(argv[1:])
    try:
        module = importlib.import_module(target)
    except ImportError as exc:
        print(f"weightserve {argv[0]}: unavailable ({exc}); install the matching extra", file=sys.stderr)
        return 2
    result: int = module.main(argv[1:])
    return result


if __name__ == "__main__":
    raise SystemExit(main())

"""Errors the training job reports to its user.

    TrainingError            anything the job refuses or cannot finish; the CLI prints it on one line
    ├── UsageError           bad arguments: unknown model, missing or unwritable repository, unknown version
    └── ExportError          the exported graph fails a check (e.g. a fixed batch dimension)
        └── ParityError      onnxruntime's outputs differ from torch's beyond the tolerance

The service's error tree (`service.errors`) maps to HTTP statuses; the training job is a command
line tool with exit codes, so it keeps its own small tree.
"""

from __future__ import annotations


class TrainingError(Exception):
    """Base of every error the training job raises on purpose."""

    exit_code: int = 1


class UsageError(TrainingError):
    exit_code = 2


class ExportError(TrainingError):
    exit_code = 3


class ParityError(ExportError):
    pass

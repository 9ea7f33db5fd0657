"""Validate custom resources offline against the openAPIV3Schema of their CustomResourceDefinition.

An API server prunes or rejects fields a structural schema does not declare; plain JSON Schema
allows them. `strict_schema` closes every object schema that lists its properties (unless it
says `x-kubernetes-preserve-unknown-fields`), so a misspelt field fails here as it would there.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import yaml


def load_schema(crd_path: Path, version: str) -> dict[str, Any]:
    crd = yaml.safe_load(crd_path.read_text())
    for served in crd["spec"]["versions"]:
        if served["name"] == version:
            schema: dict[str, Any] = served["schema"]["openAPIV3Schema"]
            return strict_schema(schema)
    raise KeyError(f"{crd_path.name} has no version {version}")


def strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    closed = copy.deepcopy(schema)
    _close(closed)
    return closed


def _close(node: Any) -> None:
    if isinstance(node, dict):
        if (
            "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields", False)
        ):
            node["additionalProperties"] = False
        for value in node.values():
            _close(value)
    elif isinstance(node, list):
        for item in node:
            _close(item)


def errors(resource: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{'/'.join(str(p) for p in error.absolute_path)}: {error.message}" for error in validator.iter_errors(resource)
    ]

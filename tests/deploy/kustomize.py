"""Render the kustomize overlays under deploy/ without the kustomize binary.

Supports exactly what the project's kustomizations use: `resources` (files and folders),
`images` (name / newName / newTag on every `containers` and `initContainers` entry) and
`patches` as JSON 6902 operations (inline `patch` or `path`) selected by kind and name. Anything
else is refused rather than silently ignored, so an overlay cannot outgrow this renderer
unnoticed; where `kubectl kustomize` exists, a test checks both give the same objects.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

Resource = dict[str, Any]

SUPPORTED_KEYS = frozenset({"apiVersion", "kind", "resources", "images", "patches"})


class KustomizeError(ValueError):
    """A kustomization uses something this renderer does not implement, or a patch fails."""


def render(directory: Path) -> list[Resource]:
    """The resources a kustomization folder builds to, in kustomize's order of inclusion."""
    kustomization = _load_kustomization(directory)
    resources: list[Resource] = []
    for entry in kustomization.get("resources", []):
        target = directory / entry
        if target.is_dir():
            resources.extend(render(target))
        else:
            resources.extend(d for d in yaml.safe_load_all(target.read_text()) if d)
    for patch in kustomization.get("patches", []):
        _apply_patch(resources, patch, directory)
    for image in kustomization.get("images", []):
        _set_image(resources, image)
    return resources


def _load_kustomization(directory: Path) -> dict[str, Any]:
    loaded = yaml.safe_load((directory / "kustomization.yaml").read_text())
    if not isinstance(loaded, dict):
        raise KustomizeError(f"{directory}: kustomization.yaml is not a mapping")
    unknown = set(loaded) - SUPPORTED_KEYS
    if unknown:
        raise KustomizeError(f"{directory}: unsupported kustomization keys {sorted(unknown)}")
    return loaded


def _apply_patch(resources: list[Resource], patch: dict[str, Any], directory: Path) -> None:
    target = patch.get("target", {})
    text = patch["patch"] if "patch" in patch else (directory / patch["path"]).read_text()
    operations = yaml.safe_load(text)
    if not isinstance(operations, list):
        raise KustomizeError(f"{directory}: only JSON 6902 patches (a list of operations) are supported")
    matched = [
        r for r in resources if r.get("kind") == target.get("kind") and r["metadata"]["name"] == target.get("name")
    ]
    if not matched:
        raise KustomizeError(f"{directory}: patch target {target} matches no resource")
    for resource in matched:
        for operation in operations:
            _apply_operation(resource, operation)


def _apply_operation(document: Resource, operation: dict[str, Any]) -> None:
    *parents, last = _pointer(operation["path"])
    node: Any = document
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    op = operation["op"]
    if isinstance(node, list):
        index = len(node) if last == "-" else int(last)
        if op == "add":
            node.insert(index, copy.deepcopy(operation["value"]))
        elif op == "replace":
            node[index] = copy.deepcopy(operation["value"])
        elif op == "remove":
            del node[index]
        else:
            raise KustomizeError(f"unsupported JSON patch op {op!r}")
        return
    if op == "add":
        node[last] = copy.deepcopy(operation["value"])
    elif op == "replace":
        if last not in node:
            raise KustomizeError(f"replace of missing path {operation['path']}")
        node[last] = copy.deepcopy(operation["value"])
    elif op == "remove":
        del node[last]
    else:
        raise KustomizeError(f"unsupported JSON patch op {op!r}")


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise KustomizeError(f"JSON pointer {path!r} must start with /")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _set_image(resources: list[Resource], image: dict[str, str]) -> None:
    for resource in resources:
        for container in _containers(resource):
            name, tag = _split_image(container["image"])
            if name != image["name"]:
                continue
            new_name = image.get("newName", name)
            new_tag = image.get("newTag", tag)
            container["image"] = f"{new_name}:{new_tag}" if new_tag else new_name


def _containers(node: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                found.extend(c for c in value if isinstance(c, dict) and "image" in c)
            else:
                found.extend(_containers(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(_containers(item))
    return found


def _split_image(reference: str) -> tuple[str, str | None]:
    # A registry host may carry a port ("host:5000/app:tag"): the tag follows the last "/".
    slash = reference.rfind("/")
    colon = reference.rfind(":")
    if colon > slash:
        return reference[:colon], reference[colon + 1 :]
    return reference, None

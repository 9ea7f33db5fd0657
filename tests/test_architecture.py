"""The package layout is the architecture: each package imports only the packages below it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVICE = Path(__file__).resolve().parents[1] / "service"

# What each part of the service may import from the service (besides itself).
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "settings": set(),
    "protocol": {"errors", "settings"},
    "ops": {"errors", "settings"},
    "weights": {"model_files", "errors", "settings"},
    "serving": {"protocol", "ops", "model_files", "errors", "settings"},
    "inspection": {"serving", "weights", "protocol", "ops", "model_files", "errors", "settings"},
    "http": {"inspection", "serving", "weights", "protocol", "ops", "model_files", "errors", "settings"},
    "app": {"http", "inspection", "serving", "weights", "protocol", "ops", "model_files", "errors", "settings"},
    "cli": {"ops", "settings"},
    "model_files": {"errors"},
}


def _part(module: Path) -> str:
    relative = module.relative_to(SERVICE)
    return relative.parts[0].removesuffix(".py")


def _imported_parts(module: Path) -> set[str]:
    tree = ast.parse(module.read_text(encoding="utf-8"))
    parts: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            pieces = name.split(".")
            if pieces[0] == "service" and len(pieces) > 1:
                parts.add(pieces[1])
    return parts


MODULES = sorted(p for p in SERVICE.rglob("*.py") if p.name != "__init__.py" or p.parent != SERVICE)


def test_every_part_of_the_service_has_a_rule() -> None:
    assert {_part(module) for module in MODULES} == set(ALLOWED)


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(SERVICE)))
def test_imports_point_down(module: Path) -> None:
    part = _part(module)
    upward = _imported_parts(module) - ALLOWED[part] - {part}
    assert not upward, f"{module.relative_to(SERVICE)} ({part}) imports {sorted(upward)}"


def test_the_service_never_imports_torch() -> None:
    offenders = [str(m.relative_to(SERVICE)) for m in MODULES if {"torch"} & _top_level_imports(m)]
    assert offenders == []


def _top_level_imports(module: Path) -> set[str]:
    tree = ast.parse(module.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found

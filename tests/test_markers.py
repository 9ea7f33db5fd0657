"""Every test module that needs a Docker engine, Chromium or torch says so with its marker, so that
``make test-quick`` (``-m "not docker and not browser and not torch"``) leaves out exactly those.

What a module needs is read from its code, not from its name: the imports of the module, of the
conftest files above it and of every project module they import in turn (test helpers, ``training``,
``weightserve``), followed to the end. A module needs Docker when it reaches ``tests/deploy/engine.py``
(the engine helper), Chromium when it reaches ``tests/http/ui/browser.py`` (the browser helper), torch
when anything it reaches imports ``torch`` (or asks ``pytest.importorskip("torch")``), at module level or
inside a function.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOCAL_PACKAGES = ("tests", "training", "service", "weightserve", "bench")
HELPERS = {"docker": "tests.deploy.engine", "browser": "tests.http.ui.browser"}
"""The module through which a test reaches each resource."""
TIER_MARKERS = ("docker", "browser", "torch")


@dataclass
class Tree:
    """A source tree (the repository, or a made-up one in the self-test) whose modules are read once."""

    root: Path
    _imports: dict[Path, tuple[set[str], set[str]]] = field(default_factory=dict)

    def path_of(self, module: str) -> Path | None:
        base = self.root.joinpath(*module.split("."))
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
        return None

    def module_of(self, path: Path) -> str:
        parts = path.relative_to(self.root).with_suffix("").parts
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    def imports(self, path: Path) -> tuple[set[str], set[str]]:
        if path not in self._imports:
            self._imports[path] = imported(self, path)
        return self._imports[path]


def imported(tree: Tree, path: Path) -> tuple[set[str], set[str]]:
    """(third-party top-level names, local modules) that ``path`` imports anywhere in its code."""
    module = tree.module_of(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "importorskip"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
    local = {name for name in names if name.split(".")[0] in LOCAL_PACKAGES}
    third_party = {name.split(".")[0] for name in names - local if name}
    return third_party, local


def _with_packages(module: str) -> list[str]:
    """Importing ``a.b.c`` runs ``a``, ``a.b`` and ``a.b.c``."""
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def needs(tree: Tree, start: list[Path]) -> set[str]:
    """The tier markers that the modules reached from ``start`` call for."""
    found: set[str] = set()
    seen: set[Path] = set()
    queue = list(start)
    while queue:
        path = queue.pop()
        if path in seen:
            continue
        seen.add(path)
        module = tree.module_of(path)
        found.update(marker for marker, helper in HELPERS.items() if module == helper)
        third_party, local = tree.imports(path)
        if "torch" in third_party:
            found.add("torch")
        for name in local:
            for step in _with_packages(name):
                target = tree.path_of(step)
                if target is not None and target not in seen:
                    queue.append(target)
    return found


def conftests(tree: Tree, path: Path) -> list[Path]:
    """The conftest files pytest loads before a test module: its folder's and every one above it."""
    found = []
    folder = path.parent
    while folder != tree.root.parent and tree.root in (folder, *folder.parents):
        if (folder / "conftest.py").is_file():
            found.append(folder / "conftest.py")
        folder = folder.parent
    return found


def declared(path: Path) -> set[str]:
    """The markers of the module-level ``pytestmark``."""
    marks: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets):
            for inner in ast.walk(node.value):
                if (
                    isinstance(inner, ast.Attribute)
                    and isinstance(inner.value, ast.Attribute)
                    and inner.value.attr == "mark"
                ):
                    marks.add(inner.attr)
    return marks


def missing(tree: Tree, test_module: Path) -> set[str]:
    need = needs(tree, [test_module, *conftests(tree, test_module)])
    return need - declared(test_module)


REPOSITORY = Tree(ROOT)
TEST_MODULES = sorted((ROOT / "tests").rglob("test_*.py"))


@pytest.mark.parametrize("module", TEST_MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_module_that_needs_docker_chromium_or_torch_carries_its_marker(module: Path) -> None:
    lacking = missing(REPOSITORY, module)
    assert not lacking, f"{module.relative_to(ROOT)} needs {sorted(lacking)}: add pytestmark = pytest.mark.<name>"


def test_the_helpers_and_the_markers_exist() -> None:
    tree = Tree(ROOT)
    for helper in HELPERS.values():
        assert tree.path_of(helper) is not None, helper
    text = (ROOT / "pyproject.toml").read_text()
    for marker in (*TIER_MARKERS, "slow"):
        assert f'"{marker}:' in text, marker


def test_the_check_sees_needs_through_helpers_conftests_and_function_imports(tmp_path: Path) -> None:
    """A made-up tree: each kind of reach, with and without its marker."""
    files = {
        "tests/__init__.py": "",
        "tests/deploy/__init__.py": "",
        "tests/deploy/engine.py": "import subprocess\n",
        "tests/deploy/support.py": "from tests.deploy.engine import Engine\n",
        "tests/http/__init__.py": "",
        "tests/http/ui/__init__.py": "",
        "tests/http/ui/browser.py": "",
        "tests/train/__init__.py": "",
        "tests/train/conftest.py": "import pytest\npytest.importorskip('torch')\n",
        "training/__init__.py": "",
        "training/loop.py": "def fit():\n    import torch.nn\n",
        "weightserve/__init__.py": "from training.loop import fit\n",
        "tests/test_docker_via_helper.py": "from tests.deploy import support\n",
        "tests/test_docker_marked.py": "import pytest\nfrom tests.deploy import support\npytestmark = [pytest.mark.docker, pytest.mark.slow]\n",
        "tests/http/ui/test_page.py": "from .browser import chromium\n",
        "tests/train/test_needs_conftest.py": "x = 1\n",
        "tests/test_torch_in_function.py": "def test_x():\n    from weightserve import fit\n",
        "tests/test_plain.py": "import numpy\nfrom tests.http import ui\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    tree = Tree(tmp_path)
    found = {name: missing(tree, tmp_path / name) for name in files if Path(name).name.startswith("test_")}
    assert found == {
        "tests/test_docker_via_helper.py": {"docker"},
        "tests/test_docker_marked.py": set(),
        "tests/http/ui/test_page.py": {"browser"},
        "tests/train/test_needs_conftest.py": {"torch"},
        "tests/test_torch_in_function.py": {"torch"},
        "tests/test_plain.py": set(),
    }

"""The README's "Publish your own model" example runs as written: the script, then its curl lines."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.server import serve

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.torch


def _section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("\n## Publish your own model\n")
    return text[start : text.index("\n## ", start + 1)]


@pytest.mark.slow
def test_the_readme_example_trains_publishes_and_serves(tmp_path: Path) -> None:
    section = _section()
    (script,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len([line for line in script.splitlines() if line.strip()]) <= 20
    (tmp_path / "models").mkdir()
    (tmp_path / "publish_iris.py").write_text(script)
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "publish_iris.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("models/iris_mlp/1 ")

    shell = re.findall(r"```bash\n(.*?)```", section, flags=re.S)[0]
    lines = [line.split("  #")[0].strip() for line in shell.splitlines()]
    assert lines[0] == ".venv/bin/weightserve serve --repository models &"
    curls = [line for line in lines if line.startswith("curl ")]
    assert len(curls) == 3
    with serve(tmp_path / "models", tmp_path) as server:
        answers = []
        for line in curls:
            command = shlex.split(line.replace("localhost:8000", server.url))
            command.insert(1, "-f")
            result = subprocess.run(command, cwd=tmp_path, capture_output=True, timeout=120, check=False)
            assert result.returncode == 0, (line, result.stderr)
            answers.append(json.loads(result.stdout))
    predicted, evaluated, weights = answers
    assert predicted["outputs"][0]["shape"] == [1, 3]
    assert evaluated["samples"] == 150
    assert evaluated["labels"] == ["setosa", "versicolor", "virginica"]
    assert evaluated["accuracy"] > 0.6  # two epochs of a small MLP
    assert {t["state_dict_key"] for t in weights["trained"]} == {"0.weight", "0.bias", "2.weight", "2.bias"}

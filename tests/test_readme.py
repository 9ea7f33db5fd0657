"""The README's API section runs as written: a server started as ``make run`` starts it (with the tokens the
README says to set), then every fenced shell command of the section, from the repository root, each
checked for success (curl ``-f``, exit status 0), a JSON answer where one is expected and the file where
one is written. The README cannot drift from the service."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.settings import available_cores
from tests.server import RunningServer, serve

pytestmark = pytest.mark.timeout(600)

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
CLI = ".venv/bin/weightserve"
MAKE_RUN = "$(BIN)/weightserve serve --repository models --host 127.0.0.1 --port 8000"
"""The recipe of ``make run``, which the server here repeats (on a free port)."""


def _section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end > 0 else len(README)]


def _commands(block: str) -> list[str]:
    """The block's shell commands, each as written (a quoted argument may span lines); comment lines dropped."""
    commands, pending = [], ""
    for line in block.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending = f"{pending}\n{line}" if pending else line
        try:
            shlex.split(pending, comments=True)
        except ValueError:  # an open quote: the command goes on
            continue
        commands.append(pending)
        pending = ""
    assert not pending, f"unterminated command in the README: {pending}"
    return commands


BLOCKS = re.findall(r"```bash\n(.*?)```", _section("API"), flags=re.S)
SETUP = next(block for block in BLOCKS if "make run" in block)
COMMANDS = [command for block in BLOCKS if block is not SETUP for command in _commands(block)]


def _label(command: str) -> str:
    words = shlex.split(command, comments=True)
    if words[0] != "curl":
        return " ".join(words[:5])
    url = next(word for word in words if ":8000" in word).split(":8000", 1)[1]
    extras = [word for word in words if word == "Accept: image/png" or word.startswith("@")]
    if "-o" in words:
        extras.append(words[words.index("-o") + 1])
    return " ".join(["POST" if "POST" in words else "GET", url, *extras])


def test_the_api_section_shows_commands_that_run_after_make_run() -> None:
    assert len(COMMANDS) >= 25
    for command in COMMANDS:
        assert command.startswith(("curl ", f"{CLI} ")), f"not a command a reader can run here: {command}"
    assert re.search(r"^run: setup\n\t" + re.escape(MAKE_RUN) + "$", (ROOT / "Makefile").read_text(), re.M)
    two_commands = README[: README.index("\n## What you get\n")]
    assert CLI in two_commands
    assert ". .venv/bin/activate" in two_commands
    for title in ("API", "Development"):
        for line in _section(title).splitlines():
            assert not re.match(r"\s*weightserve \w", line), f"call {CLI} instead: {line}"


@pytest.fixture(scope="module")
def readme_env() -> dict[str, str]:
    """The variables the README's setup block sets (its lines before ``make run``), run in bash."""
    script = "\n".join(line for line in SETUP.splitlines() if not line.startswith("make run")) + "\nenv -0\n"
    done = subprocess.run(["bash", "-c", script], capture_output=True, check=True, timeout=60, cwd=ROOT)
    variables = dict(item.split("=", 1) for item in done.stdout.decode().split("\0") if "=" in item)
    exported = {key: value for key, value in variables.items() if os.environ.get(key) != value and key != "_"}
    assert {"WEIGHTSERVE_ADMIN_TOKEN", "EXPORT_TOKEN", "WEIGHTSERVE_AUTH_TOKENS"} <= set(exported)
    return {key: value for key, value in exported.items() if key.isupper() and key not in ("SHLVL", "PWD")}


@pytest.fixture(scope="module")
def server(readme_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """As ``make run`` runs it: the shipped ``models`` from the repository root on 127.0.0.1, the default
    worker count, the README's tokens in the environment."""
    env = readme_env | {"WEIGHTSERVE_WORKERS": str(available_cores())}
    with serve(Path("models"), tmp_path_factory.mktemp("readme"), env=env, ready_timeout_s=120) as running:
        yield running


@pytest.mark.parametrize("command", COMMANDS, ids=_label)
def test_each_command_runs_as_written(
    server: RunningServer, readme_env: dict[str, str], tmp_path: Path, command: str
) -> None:
    """From the repository root, with the README's tokens; HTTP errors fail curl (-f); written files go to a
    temporary folder instead of the checkout."""
    line = command.replace("localhost:8000", server.url).replace("127.0.0.1:8000", server.url)
    outputs = re.findall(r"(?:-o|--out) (\S+)", line)
    line = re.sub(r"(-o|--out) (\S+)", lambda m: f"{m.group(1)} {tmp_path / m.group(2)}", line)
    if line.startswith("curl "):
        line = "curl -f " + line[len("curl ") :]
    # The checkout's own code: the console script of a shared environment may import another checkout.
    line = line.replace(CLI, f"{shlex.quote(sys.executable)} -m service.cli")
    env = os.environ | readme_env | {"WEIGHTSERVE_WEIGHTS_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run(["bash", "-c", line], cwd=ROOT, env=env, capture_output=True, timeout=300, check=False)
    assert done.returncode == 0, (command, done.stderr.decode(errors="replace")[-2000:])
    for name in outputs:
        written = (tmp_path / name).read_bytes()
        magic = {".png": b"\x89PNG", ".npy": b"\x93NUMPY"}[Path(name).suffix]
        assert written.startswith(magic), name
    if outputs:
        return
    if "/metrics" in command:
        assert b"weightserve_" in done.stdout
    elif command.startswith("curl "):
        json.loads(done.stdout)
    else:
        assert done.stdout.strip(), command

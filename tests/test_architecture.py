"""The package layers hold: imports point one way, and no module grows past its limit
(docs/architecture.md, "Dependencies"; the rules live in scripts/import_graph.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import ROOT

SCRIPT = ROOT / "scripts" / "import_graph.py"


def check(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--check", "--root", str(root)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_repository_keeps_its_layers() -> None:
    result = check(ROOT)
    assert result.returncode == 0, result.stdout


def test_an_upward_import_or_a_command_import_is_reported(tmp_path: Path) -> None:
    # The check must be able to fail: a tree with each kind of violation.
    files = {
        "streaming/events.py": "from tasks.models import AsyncTask\n",
        "tasks/services.py": "import realtime.store\n",
        "realtime/embedded.py": "def f():\n    from config.asgi import application\n",
        "realtime/runner.py": "from tasks.management.commands.run_worker import run_worker\n",
        "tasks/big.py": "x = 1\n" * 401,
        "config/__init__.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(textwrap.dedent(text))
    result = check(tmp_path)
    assert result.returncode == 1
    report = result.stdout
    assert "streaming/events.py:1: streaming imports tasks.models" in report
    assert "tasks/services.py:1: tasks imports realtime.store" in report
    assert "realtime/embedded.py:2: realtime imports config.asgi" in report
    assert "imports the command module tasks.management.commands.run_worker" in report
    assert "tasks/big.py: 401 lines" in report

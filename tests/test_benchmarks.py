"""The benchmark scripts start (their imports resolve) and share helpers only through benchmarks/common.py."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(p for p in BENCHMARKS.glob("*.py") if p.name != "common.py")


def test_there_are_benchmarks():
    assert len(SCRIPTS) >= 10


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_help_runs(script: Path):
    done = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout


def test_scripts_import_no_sibling_but_common():
    siblings = {p.stem for p in SCRIPTS}
    for script in SCRIPTS:
        for node in ast.walk(ast.parse(script.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            borrowed = [n for n in names if n.split(".")[0] in siblings - {script.stem}]
            # search_step's worker is what nni_side_by_side compares NNI against: the measured code, not a helper
            if script.name == "nni_side_by_side.py":
                borrowed = [n for n in borrowed if n != "search_step"]
            assert not borrowed, f"{script.name} imports {borrowed}; shared helpers belong in benchmarks/common.py"

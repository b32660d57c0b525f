"""Every lesson runs end to end, and is shaped like a lesson.

A lesson asserts its own claims (gradients against torch and finite differences), so "it exits 0"
is a real test: a wrong gradient anywhere in minigrad fails the lesson that teaches it. Lessons are
found by pattern, so lessons added later are picked up without touching this file.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LESSONS = sorted((ROOT / "lessons").glob("[0-9][0-9]_*.py"))
TIMEOUT_S = 300  # a hang guard, not a speed check: the suite runs the grader and site beside it


def _ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


def test_lessons_exist() -> None:
    assert LESSONS, f"no lessons/NN_*.py files found under {ROOT / 'lessons'}"


@pytest.mark.parametrize("path", LESSONS, ids=_ids(LESSONS))
def test_lesson_is_a_notebook_with_assertions(path: Path) -> None:
    """Percent-format cells (so it opens as a notebook), markdown cells, and real assert statements."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    code_cells = [ln for ln in lines if ln.rstrip() == "# %%"]
    markdown_cells = [ln for ln in lines if ln.startswith("# %% [markdown]")]
    assert code_cells, f"{path.name}: no '# %%' code cells"
    assert markdown_cells, f"{path.name}: no '# %% [markdown]' cells explaining the idea"
    asserts = [n for n in ast.walk(ast.parse(text, filename=str(path))) if isinstance(n, ast.Assert)]
    assert asserts, f"{path.name}: a lesson must assert its claims (no assert statement found)"


@pytest.mark.parametrize("path", LESSONS, ids=_ids(LESSONS))
def test_lesson_runs(path: Path) -> None:
    env = {**os.environ, "MPLBACKEND": "Agg"}
    try:
        proc = subprocess.run([sys.executable, str(path)], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{path.name} took longer than {TIMEOUT_S} s")
    assert proc.returncode == 0, (f"{path.name} exited with {proc.returncode}\n"
                                  f"--- stdout (tail) ---\n{proc.stdout[-3000:]}\n"
                                  f"--- stderr (tail) ---\n{proc.stderr[-3000:]}")

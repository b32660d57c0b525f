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


def test_savefig_renames_a_complete_image_into_place(tmp_path, monkeypatch) -> None:
    """Regression: CI's site build copied lessons/out/17_completeness_vs_steps.png while the other
    worker's run of lesson 17 was rewriting it, and Chromium got half a PNG. savefig now writes
    beside the file and renames: at the rename the source is a whole PNG, and nothing is left over."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sys.path.insert(0, str(ROOT / "lessons"))
    try:
        import _common
    finally:
        sys.path.remove(str(ROOT / "lessons"))
    monkeypatch.setattr(_common, "OUT", tmp_path)
    monkeypatch.setattr(_common, "ROOT", tmp_path)  # (saved() prints the path relative to it)
    renames = []
    real_replace = os.replace

    def replace(src, dst):
        renames.append((Path(src), Path(dst), Path(src).read_bytes()))
        real_replace(src, dst)
    monkeypatch.setattr(_common.os, "replace", replace)
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = _common.savefig(fig, "figure.png")
    [(src, dst, data)] = renames
    assert dst == path == tmp_path / "figure.png" and src.parent == tmp_path
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and data.endswith(b"IEND\xaeB`\x82")  # a whole PNG
    assert path.read_bytes() == data and sorted(tmp_path.iterdir()) == [path]

"""Lessons as notebooks: parse a ``# %%`` (jupytext percent-format) lesson into cells, execute the
cells one by one in a subprocess, and export them as a Jupyter ``.ipynb``.

The format, as the lessons use it:

- ``# %%`` starts a code cell; ``# %% [markdown]`` a markdown cell, whose lines are ``# text`` (or a
  bare ``#`` for a blank line);
- jupytext cell metadata may follow the marker: ``# %% [markdown] tags=["questions"]``.

Executing cell by cell (rather than running the file) is what lets the site put each cell's printed
output and figures under that cell, and name the cell that failed. Figures are the files a lesson
asks ``_common.out_path`` for (``_common.savefig`` goes through it): after each cell, those that now
exist belong to that cell.

``python -m course.notebook run LESSON RESULT.json`` is the subprocess side (cwd: the lesson's
folder); ``python -m course.notebook ipynb LESSON OUT.ipynb`` exports one lesson, unexecuted.
"""
from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

_MARKER = re.compile(r"^# %%(?:\s+\[(?P<kind>\w+)\])?(?P<meta>.*)$")
_TAGS = re.compile(r"""tags\s*=\s*(\[[^\]]*\])""")


class LessonError(Exception):
    """A lesson could not be parsed or failed while running; the message names the file and cell."""


@dataclass(frozen=True)
class Cell:
    kind: str                        # "markdown" or "code"
    source: str                      # markdown without its "# " prefixes; code as written
    line: int                        # 1-based line of the cell's "# %%" marker
    tags: tuple[str, ...] = ()


@dataclass
class CellRun:
    """What running one code cell produced."""
    output: str = ""                 # stdout and stderr, interleaved as printed
    figures: list[str] = field(default_factory=list)   # absolute paths of the images it wrote
    seconds: float = 0.0


def parse(path: Path) -> list[Cell]:
    """Split a percent-format lesson into cells. Text before the first marker is an error (it
    would belong to no cell); so is a markdown line that is not a comment."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    cells: list[Cell] = []
    start, head = None, None
    for i, text in enumerate(lines + ["# %%"]):          # a sentinel marker closes the last cell
        m = _MARKER.match(text)
        if m is None:
            if start is None and text.strip():
                raise LessonError(f"{path}:{i + 1}: text before the first '# %%' cell marker")
            continue
        if start is not None:
            cells.append(_make_cell(path, head, lines[start:i], start))
        start, head = i + 1, m
    return cells


def _make_cell(path: Path, m: re.Match, body: list[str], line: int) -> Cell:
    kind = (m.group("kind") or "code").lower()
    if kind not in ("markdown", "code", "md"):
        raise LessonError(f"{path}:{line}: unknown cell type [{kind}] (expected [markdown] or none)")
    tags_m = _TAGS.search(m.group("meta"))
    try:
        tags = tuple(json.loads(tags_m.group(1))) if tags_m else ()
    except json.JSONDecodeError as e:
        raise LessonError(f"{path}:{line}: cell tags are not a JSON list of strings ({e})") from None
    while body and not body[-1].strip():                 # blank lines between cells belong to none
        body = body[:-1]
    if kind == "code":
        return Cell("code", "\n".join(body), line, tags)
    md = []
    for j, text in enumerate(body):
        if text.strip() and not text.startswith("#"):
            raise LessonError(f"{path}:{line + j + 1}: a markdown cell line must start with '#'")
        md.append(text[2:] if text.startswith("# ") else text[1:])
    return Cell("markdown", "\n".join(md), line, tags)


# --- running ----------------------------------------------------------------------------------

def execute(path: Path, result_json: Path, timeout_s: float = 600.0, lang: str = "en") -> list[CellRun | None]:
    """Run the lesson's code cells in a fresh interpreter (cwd: its folder, ``MPLBACKEND=Agg``,
    ``LESSON_LANG=lang`` for the edition's figure labels). Returns one entry per cell (None for
    markdown). Raises LessonError naming the cell on failure."""
    path = Path(path).resolve()
    repo = Path(__file__).resolve().parent.parent
    env = {**os.environ, "MPLBACKEND": "Agg", "LESSON_LANG": lang,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "course.notebook", "run", str(path), str(result_json)]
    try:
        proc = subprocess.run(cmd, cwd=path.parent, env=env, capture_output=True, text=True,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise LessonError(f"{path.name}: still running after {timeout_s:.0f} s") from None
    try:
        result = json.loads(Path(result_json).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        raise LessonError(f"{path.name}: the runner exited with {proc.returncode} and no result\n"
                          f"{proc.stderr[-2000:]}") from None
    if "error" in result:
        e = result["error"]
        raise LessonError(f"{path.name}, cell {e['cell']} (line {e['line']}) failed: {e['message']}\n"
                          f"{e['traceback']}")
    return [None if r is None else CellRun(**r) for r in result["cells"]]


def _run_cells(path: Path, result_json: Path) -> int:
    """Subprocess side of ``execute``: one namespace for the whole lesson, as in a notebook."""
    cells = parse(path)
    sys.path.insert(0, str(path.parent))
    namespace = {"__name__": "__main__", "__file__": str(path)}
    runs: list[dict | None] = []
    claimed: set[str] = set()
    for n, cell in enumerate(cells, start=1):
        if cell.kind != "code":
            runs.append(None)
            continue
        buf, t0 = io.StringIO(), time.perf_counter()
        # Leading newlines make the line numbers in a traceback the lesson file's own.
        code = compile("\n" * cell.line + cell.source, str(path), "exec")
        try:
            with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
                exec(code, namespace)
        except BaseException as exc:  # noqa: BLE001 - report anything, KeyboardInterrupt included
            frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == str(path)]
            lesson_tb = exc.__traceback__.tb_next     # from the lesson's frame down: exec() is noise
            error = {"cell": n, "line": frames[-1].lineno if frames else cell.line,
                     "message": "".join(traceback.format_exception_only(type(exc), exc)).strip(),
                     "traceback": "".join(traceback.format_exception(type(exc), exc, lesson_tb))[-3000:]}
            _write_json(result_json, {"error": error})
            return 1
        runs.append({"output": buf.getvalue(), "figures": _new_figures(claimed),
                     "seconds": round(time.perf_counter() - t0, 3)})
    _write_json(result_json, {"cells": runs})
    return 0


def _new_figures(claimed: set[str]) -> list[str]:
    """Images the lesson asked ``_common.out_path`` for that exist now and no cell has claimed."""
    common = sys.modules.get("_common")
    requested = [str(p) for p in getattr(common, "REQUESTED", [])]
    new = [p for p in requested if p not in claimed and p.endswith(".png") and os.path.exists(p)]
    claimed.update(new)
    return new


def _write_json(path: Path, obj: object) -> None:
    Path(path).write_text(json.dumps(obj), encoding="utf-8")


# --- export -----------------------------------------------------------------------------------

def to_ipynb(cells: list[Cell], runs: list[CellRun | None] | None = None) -> dict:
    """An nbformat 4.5 notebook (as a dict) of ``cells``; with ``runs``, code cells carry their
    printed output and figures (PNG), so the notebook reads like the executed page."""
    out = []
    for i, cell in enumerate(cells):
        entry = {"cell_type": cell.kind, "id": f"cell-{i + 1}", "metadata": {"tags": list(cell.tags)}
                 if cell.tags else {}, "source": cell.source.splitlines(keepends=True)}
        if cell.kind == "code":
            run = runs[i] if runs else None
            entry.update(execution_count=None, outputs=_outputs(run) if run else [])
        out.append(entry)
    return {"cells": out, "nbformat": 4, "nbformat_minor": 5,
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                         "language_info": {"name": "python"},
                         "jupytext": {"formats": "ipynb,py:percent"}}}


def _outputs(run: CellRun) -> list[dict]:
    outs: list[dict] = []
    if run.output:
        outs.append({"output_type": "stream", "name": "stdout", "text": run.output.splitlines(keepends=True)})
    for fig in run.figures:
        data = base64.b64encode(Path(fig).read_bytes()).decode("ascii")
        outs.append({"output_type": "display_data", "metadata": {}, "data": {"image/png": data}})
    return outs


def write_ipynb(cells: list[Cell], dest: Path, runs: list[CellRun | None] | None = None) -> Path:
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(to_ipynb(cells, runs), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return dest


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 3 and argv[0] == "run":
        return _run_cells(Path(argv[1]).resolve(), Path(argv[2]))
    if len(argv) == 3 and argv[0] == "ipynb":
        write_ipynb(parse(Path(argv[1])), Path(argv[2]))
        return 0
    print("usage: python -m course.notebook {run LESSON RESULT.json | ipynb LESSON OUT.ipynb}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

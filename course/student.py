"""``python -m course.student OUT``: write the student copy of the project to OUT.

The copy is the project's tracked files (``git ls-files``; no .venv, site/, runs/, lessons/out, nor
the grader's own tests), with every assignment's blanks replaced by
``raise NotImplementedError("<task id>: <hint>")`` and the instructor-only ``tags=["answers"]``
cells dropped from the lessons. Every blank is checked
before anything is written: a blank naming a missing file, function or marker is an error.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from . import _blank, assignments, i18n

ROOT = Path(__file__).resolve().parent.parent
# Not copied: build outputs, and the grader's own tests (their planted bugs are near-solutions).
SKIP = (".venv/", "site/", "runs/", "lessons/out/", "student/", "tests/test_course_")


class BuildError(Exception):
    pass


def tracked_files(root: Path) -> list[str]:
    """Files git tracks under ``root`` that exist in the working tree, minus SKIP."""
    try:
        out = subprocess.run(["git", "-C", str(root), "ls-files", "-z"], capture_output=True,
                             check=True).stdout.decode()
    except (OSError, subprocess.CalledProcessError) as e:
        raise BuildError(f"{root} is not a git checkout ({e}); the student build copies the "
                         "files git tracks") from None
    return sorted(f for f in out.split("\0") if f and not f.startswith(SKIP) and (root / f).is_file())


def blanked_texts(root: Path, files: list[str]) -> dict[str, str]:
    """{path: new text} for every file a blank touches, plus lessons with answer cells dropped.
    Raises BuildError naming the task and the blank on the first one that cannot be made."""
    texts: dict[str, str] = {}
    listed = set(files)
    for a in assignments.load_all():
        for task in a.tasks:
            for spec in task.blanks:
                where = f"{task.id} blank {spec!r}"
                try:
                    blank = _blank.parse_blank(spec)
                except ValueError as e:
                    raise BuildError(f"{task.id}: {e}") from None
                if blank.path not in listed:
                    raise BuildError(f"{where}: {blank.path} is not a tracked file of {root}")
                text = texts.get(blank.path) or (root / blank.path).read_text(encoding="utf-8")
                try:
                    if blank.is_region:
                        text = _blank.blank_region(text, blank.region, task.id, task.hint)
                    else:
                        text = _blank.blank_function(text, blank, task.id, task.hint, task.hide_doc)
                except _blank.BlankError as e:
                    raise BuildError(str(e) if str(e).startswith(task.id) else f"{where}: {e}") from None
                texts[blank.path] = text
    for path, text in texts.items():
        if path.endswith(".py"):
            try:
                compile(text, path, "exec", dont_inherit=True)
            except SyntaxError as e:  # a bug here, not in the assignment: never ship it
                raise BuildError(f"blanking {path} broke it (line {e.lineno}: {e.msg})") from None
    for f in files:
        if f.startswith("lessons/") and f.endswith(".py"):
            text = texts.get(f) or (root / f).read_text(encoding="utf-8")
            stripped = _blank.strip_answer_cells(text)
            if stripped != text or f in texts:
                texts[f] = stripped
        elif f.startswith("lessons/zh/") and f.endswith(".md"):   # the answers' translations go too
            texts[f] = i18n.without_answers(i18n.lesson_path(root / f), root / f)
    return texts


def build(out: Path, root: Path = ROOT) -> tuple[int, int]:
    """Write the student build; returns (files written, blanks made)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BuildError(f"{out} exists and is not empty; give a new directory")
    files = tracked_files(root)
    texts = blanked_texts(root, files)  # all validated before anything is written
    for f in files:
        dst = out / f
        dst.parent.mkdir(parents=True, exist_ok=True)
        if f in texts:
            dst.write_text(texts[f], encoding="utf-8")
            shutil.copymode(root / f, dst)
        else:
            shutil.copy2(root / f, dst)
    n_blanks = sum(len(t.blanks) for a in assignments.load_all() for t in a.tasks)
    return len(files), n_blanks


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m course.student", description=__doc__.split("\n")[0])
    p.add_argument("out", type=Path, help="a new (or empty) directory for the student copy")
    args = p.parse_args(argv)
    try:
        n_files, n_blanks = build(args.out)
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    tasks = sum(len(a.tasks) for a in assignments.load_all())
    print(f"wrote {n_files} files to {args.out}: {n_blanks} blanks in {tasks} tasks. "
          f"Students grade themselves with: python -m course.grade {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

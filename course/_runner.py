"""One graded task, in its own process (started by ``course.grade``; not a command for people).

    python -c BOOT GRADER_ROOT ROOT TASK_ID SEED ISOLATE RESULT_JSON [LANG]

Order matters. ``course`` (the checks) is imported first, from the grader's own tree; only then is
the graded tree put first on ``sys.path``, so ``minigrad``/``mini_bert`` come from ROOT while
``course`` stays the grader's (already in ``sys.modules``, it is never looked up in ROOT).

With ISOLATE=1 every *other* task's blanks are replaced, in memory, by the reference solution read
from the grader's tree, so this task passes or fails on its own code alone.
"""
from __future__ import annotations

import ast
import json
import os
import sys
import textwrap
import traceback
import zlib
from pathlib import Path

# The bootstrap ``course.grade`` runs with ``python -c``: it puts the grader's root first, imports
# this module from there, and hands over the arguments.
BOOT = "import sys; sys.path.insert(0, sys.argv[1]); from course._runner import main; main(sys.argv[1:])"


def task_rng_seed(seed: int, task_id: str) -> list[int]:
    """Each task's generator depends on the run's seed and its own id (not on the order run)."""
    return [seed, zlib.crc32(task_id.encode())]


def _reference_function(grader_root: Path, blank, module):
    """The reference def for ``blank``, compiled in the graded module's globals (so it calls the
    graded tree's helpers), with line numbers pointing into the reference file."""
    from course import _blank

    path = grader_root / blank.path
    src, first = _blank.function_source(path.read_text(encoding="utf-8"), blank, "reference")
    tree = ast.parse(textwrap.dedent(src))
    ast.increment_lineno(tree, first - 1)
    namespace: dict = {}
    exec(compile(tree, str(path), "exec"), module.__dict__, namespace)
    return namespace[blank.qualname.rsplit(".", 1)[-1]]


def _isolate(grader_root: Path, tasks, own_id: str) -> None:
    """Patch every other task's function blanks with the reference; record its lesson regions."""
    import importlib

    from course import _blank, checks

    for task in tasks:
        if task.id == own_id:
            continue
        for spec in task.blanks:
            blank = _blank.parse_blank(spec)
            if blank.is_region:
                text = (grader_root / blank.path).read_text(encoding="utf-8")
                checks.LESSON_REFERENCE.setdefault(blank.path, {})[blank.region] = \
                    _blank.region_source(text, blank.region, f"reference for {task.id}")
                continue
            module = importlib.import_module(_blank.module_name(blank.path))
            *owner_path, name = blank.qualname.split(".")
            owner = module
            for part in owner_path:
                owner = getattr(owner, part)
            old = owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name, None)
            new = _reference_function(grader_root, blank, module)
            setattr(owner, name, new)
            if owner is module:  # a module-level function: rebind it wherever it was imported
                for other in list(sys.modules.values()):
                    if getattr(other, "__name__", "").split(".")[0] in ("minigrad", "mini_bert"):
                        for attr, value in list(vars(other).items()):
                            if value is old and old is not None:
                                setattr(other, attr, new)


def _graded_location(exc: BaseException, root: Path, files: set[str]) -> str:
    """file:line of the innermost frame in a file this task grades, else in the graded tree."""
    best = fallback = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        try:
            rel = Path(frame.filename).resolve().relative_to(root).as_posix()
        except ValueError:
            continue
        fallback = f"{rel}:{frame.lineno}"
        if rel in files:
            best = fallback
    return best or fallback


def describe(exc: BaseException, root: Path, files: set[str] = frozenset(), lang: str = "en") -> str:
    """The first failing check, in words a student understands. A blank not yet written says so,
    with its task's hint in ``lang`` (the stub's message is ``"<task id>: <English hint>"``)."""
    from course import i18n
    from course.framework import TaskFailure

    if isinstance(exc, NotImplementedError):
        detail = str(exc)
        task_id, sep, _ = detail.partition(": ")
        hint = i18n.load_table("hints").get(task_id, {}).get("hint") if lang == "zh" else None
        return i18n.message("grade.not_implemented", lang, detail=f"{task_id}：{hint}" if sep and hint else detail)
    if isinstance(exc, TaskFailure):
        return str(exc)
    where = _graded_location(exc, root, files)
    first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")  # one line: a table
    text = f"{type(exc).__name__}: {first}".strip().rstrip(":")
    return f"{text} (at {where})" if where else text


def main(argv: list[str]) -> None:
    grader_root, root = Path(argv[0]).resolve(), Path(argv[1]).resolve()
    task_id, seed, isolate, result_path = argv[2], int(argv[3]), argv[4] == "1", Path(argv[5])
    lang = argv[6] if len(argv) > 6 else "en"

    import numpy as np

    from course import assignments, checks

    _, task = assignments.find_task(task_id)
    all_tasks = [t for a in assignments.load_all() for t in a.tasks]
    for name in ("minigrad", "mini_bert"):
        if name in sys.modules:
            raise RuntimeError(f"grader bug: {name} was imported before the graded tree was on sys.path")
    # The graded tree first; the grader's own root and the cwd ('') out, so nothing else is found.
    sys.path[:] = [str(root)] + [p for p in sys.path if p not in ("", str(grader_root))]
    os.environ.setdefault("MPLBACKEND", "Agg")
    checks.ROOT, checks.LANG = root, lang
    result = {"passed": False, "message": "", "traceback": ""}
    try:
        import mini_bert
        import minigrad

        for mod in (minigrad, mini_bert):
            if Path(mod.__file__).resolve().parent.parent != root:
                raise RuntimeError(f"grader bug: {mod.__name__} was imported from {mod.__file__}, "
                                   f"not from {root}")
        if isolate:
            try:
                _isolate(grader_root, all_tasks, task_id)
            except Exception as exc:  # the graded tree lacks a class/module another task needs
                raise RuntimeError(f"could not put the reference in for the other tasks "
                                   f"({type(exc).__name__}: {exc}); is a file or class missing "
                                   "from the graded tree?") from exc
        task.check(np.random.default_rng(task_rng_seed(seed, task_id)))
        result["passed"] = True
    except Exception as exc:  # a student's code may raise anything; report it, do not crash
        files = {spec.split(":")[0].split("#")[0] for spec in task.blanks}
        result["message"] = describe(exc, root, files, lang)
        result["traceback"] = traceback.format_exc()
    result_path.write_text(json.dumps(result), encoding="utf-8")

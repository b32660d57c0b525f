"""``python -m course.grade ROOT [--assignment A] [--task T] [--json FILE] [--seed N]``: grade ROOT.

Each task runs in its own process (``course._runner``) with a timeout, on shapes and values drawn
from a seed chosen now (printed; ``--seed`` replays a run). Before it runs, the code the student
wrote for it is parsed: torch, transformers, scipy, ``course`` (the grader), ``importlib``, ``exec``
and friends, or a path to the reference solution, make the task fail with that reason.

While one task is graded, every other task's blanks are the reference solution (read from this
grader's own tree), so a wrong answer costs that task only. A grader inside a student build has no
reference; it then grades without isolation and says so.

``--lang zh`` speaks Chinese: headers, results, totals, rejection reasons and the hint of a task not
yet written (``course/zh/messages.toml`` [grade], ``course/zh/hints.toml``); the ``--json`` report
keeps its English keys.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import secrets
import subprocess
import sys
import tempfile
import textwrap
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from . import _blank, _runner, assignments, i18n
from .framework import Assignment, Task

GRADER_ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 120
FORBIDDEN_MODULES = ("torch", "transformers", "scipy", "jax", "tensorflow", "course", "importlib",
                     "ctypes", "subprocess", "builtins")
FORBIDDEN_NAMES = ("__import__", "exec", "eval", "compile", "__builtins__", "globals")


@dataclass
class Result:
    assignment: str
    task: str
    points: int
    max: int
    passed: bool
    message: str
    detail: str = ""  # the traceback, shown with --verbose


class UsageError(Exception):
    pass


def _m(key: str, lang: str, **values: object) -> str:
    return i18n.message(f"grade.{key}", lang, **values)


def forbidden_reason(source: str, reference_paths: tuple[str, ...] = (), lang: str = "en") -> str | None:
    """Why this graded code may not run (in ``lang``), or None. Graded code computes with minigrad only."""
    try:
        tree = ast.parse(textwrap.dedent(source))
    except SyntaxError as e:
        return _m("does_not_parse", lang, msg=e.msg, line=e.lineno)
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        for n in names:
            if n.split(".")[0] in FORBIDDEN_MODULES:
                return _m("forbidden", lang, name=n.split(".")[0])
        if isinstance(node, ast.Name) and (node.id in FORBIDDEN_MODULES or node.id in FORBIDDEN_NAMES):
            return _m("forbidden", lang, name=node.id)
        if isinstance(node, ast.Attribute) and node.attr in ("modules", "__import__") and \
                isinstance(node.value, ast.Name) and node.value.id in ("sys", "builtins"):
            return _m("forbidden", lang, name=f"{node.value.id}.{node.attr}")
        if isinstance(node, ast.Attribute) and node.attr in FORBIDDEN_MODULES:
            return _m("forbidden_attr", lang, name=node.attr)
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if any(p and p in node.value for p in reference_paths):
                return _m("reads_reference", lang)
    return None


def _members(tree: ast.Module):
    """Top-level statements, with each class opened up into its own statements."""
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            yield from node.body
        else:
            yield node


def _bound(node: ast.AST) -> set[str]:
    """Names a top-level statement binds (def/class name, import alias, assignment target)."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".")[0] for a in node.names}
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}


def _used(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def added_code_reason(root: Path, path: str, graded: str, reference_paths: tuple[str, ...],
                      lang: str = "en") -> str | None:
    """Scan the code the graded function reaches that the student added or changed *outside* the
    blank (a helper, a module-level import): it could otherwise smuggle torch in. Statements equal
    to the reference's are trusted (the reference may use torch where nothing is graded)."""
    try:
        tree = ast.parse((root / path).read_text(encoding="utf-8"))
        reference = ast.parse((GRADER_ROOT / path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return None  # a missing or broken file is reported by the task itself
    known = {ast.dump(n) for n in _members(reference)}
    added = [n for n in _members(tree) if ast.dump(n) not in known]
    names, seen = _used(ast.parse(textwrap.dedent(graded))), set()
    while True:  # what the graded code uses, and what that uses in turn
        reached = [n for n in added if _bound(n) & names and id(n) not in seen]
        if not reached:
            return None
        for node in reached:
            seen.add(id(node))
            reason = forbidden_reason(ast.unparse(node), reference_paths, lang)
            if reason:
                return _m("added_code", lang, path=path, line=node.lineno, reason=reason)
            names |= _used(node)


def reference_available(tasks: list[Task]) -> bool:
    """True if the grader's own tree holds a solution (not a stub) for every blank."""
    for task in tasks:
        for spec in task.blanks:
            try:
                src = _blank.graded_source(GRADER_ROOT, _blank.parse_blank(spec), task.id)
            except _blank.BlankError:
                return False
            if _blank.is_stub(src):
                return False
    return True


def _run_task(root: Path, assignment: Assignment, task: Task, seed: int, isolate: bool,
              timeout: float, lang: str = "en") -> Result:
    def result(passed: bool, message: str, detail: str = "") -> Result:
        return Result(assignment.id, task.id, task.points if passed else 0, task.points, passed,
                      message, detail)

    reference_paths = (str(GRADER_ROOT),) if GRADER_ROOT != root else ()
    for spec in task.blanks:
        blank = _blank.parse_blank(spec)
        try:
            src = _blank.graded_source(root, blank, task.id)
        except _blank.BlankError as e:
            return result(False, _m("no_graded_code", lang, error=e))
        reason = forbidden_reason(src, reference_paths, lang)
        if not reason and isolate and not blank.is_region:
            reason = added_code_reason(root, blank.path, src, reference_paths, lang)
            if reason:
                return result(False, reason)
        if reason:
            return result(False, f"{blank} {reason}")
    with tempfile.TemporaryDirectory(prefix="grade-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-c", _runner.BOOT, str(GRADER_ROOT), str(root), task.id, str(seed),
               "1" if isolate else "0", str(out), lang]
        # MINIGRAD_JIT=0: numpy's compiled kernels (minigrad/backend/jit.py) would compute GELU,
        # softmax, LayerNorm and attention right whatever the submission's formulas say.
        env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONDONTWRITEBYTECODE": "1", "MINIGRAD_JIT": "0"}
        env.pop("PYTHONPATH", None)
        try:
            proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return result(False, _m("timeout", lang, seconds=f"{timeout:g}"))
        if not out.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            return result(False, _m("crashed", lang, tail=" | ".join(tail)), proc.stderr)
        data = json.loads(out.read_text(encoding="utf-8"))
    return result(data["passed"], data["message"], data["traceback"])


def grade(root: Path, selected: list[Assignment], seed: int, timeout: float = TIMEOUT_S,
          jobs: int = 1, log=print, lang: str = "en") -> list[Result]:
    all_tasks = [t for a in assignments.load_all() for t in a.tasks]
    isolate = reference_available(all_tasks)
    if not isolate:
        log(_m("no_isolation", lang))
    jobs_list = [(a, t) for a in selected for t in a.tasks]
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        return list(pool.map(lambda at: _run_task(root, at[0], at[1], seed, isolate, timeout, lang),
                             jobs_list))


def _pad(text: str, width: int, right: bool = False) -> str:
    """``text`` aligned in ``width`` terminal columns (a CJK character takes two)."""
    fill = " " * max(0, width - sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text))
    return fill + text if right else text + fill


def table(results: list[Result], verbose: bool = False, lang: str = "en") -> str:
    w = max([len(r.task) for r in results] + [4])
    m = {k: _m(k, lang) for k in ("col_task", "col_points", "col_result", "col_first_failure", "pass", "fail")}
    lines = [f"{'':3}{_pad(m['col_task'], w)}  {_pad(m['col_points'], 7, right=True)}  {_pad(m['col_result'], 6)}  "
             f"{m['col_first_failure']}", "-" * (w + 48)]
    for r in results:
        mark = m["pass"] if r.passed else m["fail"]
        lines.append(f"{r.assignment:<3}{r.task:<{w}}  {r.points:>3}/{r.max:<3}  {_pad(mark, 6)}  {r.message}")
        if verbose and r.detail and not r.passed:
            lines.append(textwrap.indent(r.detail.rstrip(), " " * 8))
    total, top = sum(r.points for r in results), sum(r.max for r in results)
    lines += ["-" * (w + 48), _m("total", lang, points=total, max=top, passed=sum(r.passed for r in results),
                                 tasks=len(results))]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m course.grade", description=__doc__.split("\n")[0])
    p.add_argument("root", help="the project tree to grade (a student build, or the reference)")
    p.add_argument("--assignment", action="append", help="grade only this assignment (a1, a2, ...); "
                   "repeat for several")
    p.add_argument("--task", action="append", help="grade only this task (a1.mul, ...); repeatable")
    p.add_argument("--json", type=Path, help="also write the results as JSON (for an LMS)")
    p.add_argument("--seed", type=int, help="replay a run: the seed it printed")
    p.add_argument("--timeout", type=float, default=TIMEOUT_S, help="seconds per task")
    p.add_argument("--jobs", type=int, default=1, help="tasks graded at once")
    p.add_argument("--verbose", action="store_true", help="full tracebacks of failures")
    p.add_argument("--lang", default="en", choices=i18n.LANGS, help="the language of the report (zh: Chinese)")
    args = p.parse_args(argv)
    try:
        root = Path(args.root).resolve()
        if not root.is_dir():
            raise UsageError(f"{args.root}: no such directory")
        if not (root / "minigrad").is_dir():
            raise UsageError(f"{args.root}: not a project tree (no minigrad/ in it)")
        if args.json and not args.json.resolve().parent.is_dir():
            raise UsageError(f"--json {args.json}: the directory {args.json.parent} does not exist")
        if args.seed is not None and args.seed < 0:
            raise UsageError(f"--seed {args.seed}: a seed is a non-negative integer")
        everything = assignments.load_all()
        known = [a.id for a in everything]
        for a in args.assignment or []:
            if a not in known:
                raise UsageError(f"--assignment {a}: unknown; the assignments are {', '.join(known)}")
        selected = [a for a in everything if not args.assignment or a.id in args.assignment]
        if args.task:
            ids = {t.id for a in selected for t in a.tasks}
            for t in args.task:
                if t not in ids:
                    raise UsageError(f"--task {t}: unknown (or not in the assignments selected)")
            selected = [Assignment(a.id, a.title, [t for t in a.tasks if t.id in args.task])
                        for a in selected]
            selected = [a for a in selected if a.tasks]
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else secrets.randbelow(2 ** 31)
    print(_m("grading", args.lang, root=root, seed=seed))
    results = grade(root, selected, seed, args.timeout, args.jobs, lang=args.lang)
    print(table(results, args.verbose, args.lang))
    if args.json:
        args.json.write_text(json.dumps({
            "total": sum(r.points for r in results), "max": sum(r.max for r in results), "seed": seed,
            "tasks": [{"assignment": r.assignment, "task": r.task, "points": r.points, "max": r.max,
                       "passed": r.passed, "message": r.message} for r in results]},
            indent=2, ensure_ascii=False) + "\n",
            encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

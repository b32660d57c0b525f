"""One module per assignment, each defining ``ASSIGNMENT`` (see ``course.framework``).

Modules are found by name, ``a<N>_<topic>.py``, and ordered by N, so an assignment added later is
picked up without editing this file (and one not written yet is simply absent).
"""
from __future__ import annotations

import importlib
import pkgutil
import re

from ..framework import Assignment, Task

_NAME = re.compile(r"a(\d+)_\w+")


def module_names() -> list[str]:
    """``["a1_engine", "a2_losses", ...]`` in course order."""
    found = [m.name for m in pkgutil.iter_modules(__path__) if _NAME.fullmatch(m.name)]
    return sorted(found, key=lambda n: int(_NAME.fullmatch(n).group(1)))


def load_all() -> list[Assignment]:
    """Every assignment, in course order; a module without ``ASSIGNMENT`` is an error."""
    out = []
    for name in module_names():
        module = importlib.import_module(f"{__name__}.{name}")
        if not isinstance(getattr(module, "ASSIGNMENT", None), Assignment):
            raise TypeError(f"course/assignments/{name}.py defines no ASSIGNMENT = Assignment(...)")
        out.append(module.ASSIGNMENT)
    ids = [t.id for a in out for t in a.tasks]
    blanks = [b for a in out for t in a.tasks for b in t.blanks]
    for what, items in (("task ids", ids), ("blanks", blanks)):
        dup = sorted({i for i in items if items.count(i) > 1})
        if dup:
            raise ValueError(f"{what} used by two tasks: {dup}")
    return out


def find_task(task_id: str) -> tuple[Assignment, Task]:
    for a in load_all():
        for t in a.tasks:
            if t.id == task_id:
                return a, t
    raise KeyError(f"no task {task_id!r}")

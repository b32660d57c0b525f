"""What an assignment is: tasks, each naming the code it blanks and the check that grades it.

An assignment module in ``course/assignments/`` defines one ``ASSIGNMENT``. The student build
(``course.student``) replaces every blank with a stub; the grader (``course.grade``) runs each
task's ``check`` against the tree being graded.

A blank is written one of two ways:

- ``"minigrad/ops/elementwise.py:Mul.backward"``: a function or method, by file and qualified name.
  Its body becomes ``raise NotImplementedError("<task id>: <hint>")``; the docstring stays unless the
  task sets ``hide_doc``.
- ``"lessons/03_bce_derivation.py#bce-grad"``: the lines between ``# BEGIN SOLUTION bce-grad`` and
  ``# END SOLUTION bce-grad`` in a lesson cell.

A check takes a ``numpy.random.Generator`` seeded at grading time (so shapes and values are drawn
fresh on every run and nothing can be memorised), imports ``minigrad``/``mini_bert`` *inside* the
function (so it sees the tree being graded), and raises ``TaskFailure`` with a sentence a student
understands when the answer is wrong. The oracle is torch/HF computed in the check, or float64
finite differences (``minigrad.gradcheck``); never a number copied from the reference.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np


class TaskFailure(AssertionError):
    """A graded check failed; the message is shown to the student as it is."""


@dataclass(frozen=True)
class Task:
    id: str                     # "a1.mul_backward": assignment id, a dot, a short name
    title: str                  # one line for the grade table
    points: int
    blanks: list[str]           # see the module docstring
    hint: str                   # one line, put in the stub's NotImplementedError
    check: Callable[[np.random.Generator], None]
    hide_doc: bool = False      # blank the docstring too (when it gives the answer away)


@dataclass(frozen=True)
class Assignment:
    id: str                     # "a1"
    title: str
    tasks: list[Task] = field(default_factory=list)

    @property
    def max_points(self) -> int:
        return sum(t.points for t in self.tasks)

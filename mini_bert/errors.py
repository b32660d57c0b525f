"""Errors caused by what a user gave us (a flag, a file, a directory), as opposed to bugs.

Everything here derives from ``UserError``. The command-line tools catch ``UserError`` once and
print it as one ``error: ...`` line with a non-zero exit status; anything else is a bug in this
package and keeps its traceback. Each subclass also derives from the builtin a caller would
expect (``ValueError`` for a bad value, ``FileNotFoundError`` for a missing file, ...), so code
written against those keeps working.
"""
from __future__ import annotations

import sys


class UserError(Exception):
    """Base class: the user's input is at fault, and the message says which input and why."""


class UsageError(UserError, ValueError):
    """A command-line flag or configuration value is out of range or contradicts another one."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or directory the user named (or that a named directory must hold) does not exist."""


class DataError(UserError, ValueError):
    """A problem with a data file; the message starts with ``file:line``."""


class OutputDirError(UserError):
    """The output directory cannot be used: it is a file, or it holds another run."""


class ResumeError(UserError, ValueError):
    """``--resume`` points at no saved run, or at one saved with different settings."""


def one_line(error: BaseException) -> str:
    """The message on one line: a multi-line report (e.g. a state-dict fit) joined with '; ',
    so that the ``error:`` line is the last line a user sees."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    return lines[0] + (" " + "; ".join(lines[1:]) if len(lines) > 1 else "")


def fail(error: BaseException, status: int = 2) -> int:
    """Print the ``error:`` line a command ends with (stderr, one line) and return its exit status:
    2 by default, the shell's convention for bad usage or input."""
    print(f"error: {one_line(error)}", file=sys.stderr)
    return status

"""Finding, reading and blanking the code an assignment names (shared by the student build and the grader).

A function blank is located through the AST, but edited by *line ranges*: only the body's lines are
replaced, so the rest of the file (comments, blank lines, formatting) stays byte-identical. A lesson
region is the lines between ``# BEGIN SOLUTION name`` and ``# END SOLUTION name``.
"""
from __future__ import annotations

import ast
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

_ANSWERS_CELL = re.compile(r'^# %% \[markdown\].*tags=\[[^\]]*"answers"')


class BlankError(ValueError):
    """A blank that names a file, function or marker that is not there."""


@dataclass(frozen=True)
class Blank:
    path: str            # relative to the project root, '/'-separated
    qualname: str = ""   # "Class.method" or "function" (a function blank)
    region: str = ""     # the marker name (a lesson region)

    @property
    def is_region(self) -> bool:
        return bool(self.region)

    def __str__(self) -> str:
        return f"{self.path}#{self.region}" if self.is_region else f"{self.path}:{self.qualname}"


def parse_blank(spec: str) -> Blank:
    """``"path.py:Qual.name"`` or ``"path.py#region"`` -> Blank (ValueError on anything else)."""
    if "#" in spec:
        path, region = spec.split("#", 1)
        if path.endswith(".py") and re.fullmatch(r"[\w.-]+", region):
            return Blank(path, region=region)
    elif ":" in spec:
        path, qual = spec.split(":", 1)
        if path.endswith(".py") and re.fullmatch(r"\w+(\.\w+)*", qual):
            return Blank(path, qualname=qual)
    raise ValueError(f"blank {spec!r}: expected 'path.py:Class.method' or 'path.py#region-name'")


def module_name(path: str) -> str:
    """``minigrad/ops/shape.py`` -> ``minigrad.ops.shape``."""
    return path[:-3].replace("/", ".").removesuffix(".__init__")


# ---- functions -----------------------------------------------------------------------------------
def find_def(tree: ast.Module, qualname: str) -> tuple[ast.FunctionDef, ast.ClassDef | None] | None:
    """The def named by ``qualname`` and its enclosing class (None at module level), or None."""
    scope: list[ast.stmt] = tree.body
    owner = None
    parts = qualname.split(".")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        kinds = (ast.FunctionDef, ast.AsyncFunctionDef) if last else (ast.ClassDef,)
        found = [n for n in scope if isinstance(n, kinds) and n.name == part]
        if not found:
            return None
        if last:
            return found[-1], owner  # the last definition wins, as at run time
        owner = found[-1]
        scope = owner.body
    return None


def _docstring_node(node) -> ast.Expr | None:
    first = node.body[0] if node.body else None
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and \
            isinstance(first.value.value, str):
        return first
    return None


def _locate(text: str, blank: Blank, where: str):
    try:
        tree = ast.parse(text)
    except SyntaxError as e:
        raise BlankError(f"{where}: {blank.path} does not parse (line {e.lineno}: {e.msg})") from None
    hit = find_def(tree, blank.qualname)
    if hit is None:
        raise BlankError(f"{where}: no function {blank.qualname!r} in {blank.path}")
    return hit


def function_source(text: str, blank: Blank, where: str = "blank") -> tuple[str, int]:
    """The def's source with its decorators, dedented, and its first line number (1-based)."""
    node, _ = _locate(text, blank, where)
    start = min([d.lineno for d in node.decorator_list] + [node.lineno])
    lines = text.splitlines(keepends=True)[start - 1:node.end_lineno]
    return textwrap.dedent("".join(lines)), start


def is_stub(source: str) -> bool:
    """True if a graded source (a def, or a region's lines) is only ``raise NotImplementedError``
    (a def's docstring aside): the tree it came from is a student build, not the reference."""
    try:
        body = ast.parse(textwrap.dedent(source)).body
    except SyntaxError:
        return False
    if len(body) == 1 and isinstance(body[0], (ast.FunctionDef, ast.AsyncFunctionDef)):
        body = body[0].body[1:] if _docstring_node(body[0]) else body[0].body
    if len(body) != 1 or not isinstance(body[0], ast.Raise) or body[0].exc is None:
        return False
    exc = body[0].exc
    exc = exc.func if isinstance(exc, ast.Call) else exc
    return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"


def stub_line(task_id: str, hint: str) -> str:
    return f"raise NotImplementedError({f'{task_id}: {hint}'!r})"


def blank_function(text: str, blank: Blank, task_id: str, hint: str, hide_doc: bool) -> str:
    """``text`` with the function's body replaced by a NotImplementedError stub.

    The signature, decorators and (unless ``hide_doc``) the docstring stay. With ``hide_doc`` the
    docstring goes, and so does the enclosing class's, where an op's math is written.
    """
    where = f"{task_id} blank {blank}"
    node, owner = _locate(text, blank, where)
    lines = text.splitlines(keepends=True)
    doc = _docstring_node(node)
    first = node.body[0]
    if first.lineno == node.lineno:
        raise BlankError(f"{where}: the body is on the def line; put it on its own line")
    indent = lines[first.lineno - 1][:first.col_offset]
    if doc is not None and not hide_doc:
        start = doc.end_lineno + 1
    else:
        start = first.lineno
        # Comments between the signature and the first statement belong to the solution too.
        while start - 2 >= node.lineno and lines[start - 2].strip().startswith("#"):
            start -= 1
    new = lines[:start - 1] + [indent + stub_line(task_id, hint) + "\n"] + lines[node.end_lineno:]
    if hide_doc and owner is not None and _docstring_node(owner) is not None:
        cdoc = _docstring_node(owner)
        cindent = lines[cdoc.lineno - 1][:cdoc.col_offset]
        hidden = f'{cindent}"""{owner.name}: its math is hidden; deriving it is part of {task_id}."""\n'
        new = new[:cdoc.lineno - 1] + [hidden] + new[cdoc.end_lineno:]
    return "".join(new)


# ---- lesson regions ------------------------------------------------------------------------------
def find_region(text: str, name: str, where: str = "blank") -> tuple[int, int, str]:
    """0-based line indices of the BEGIN and END marker lines, and the BEGIN line's indentation."""
    lines = text.splitlines()
    begin = [i for i, ln in enumerate(lines) if ln.strip() == f"# BEGIN SOLUTION {name}"]
    end = [i for i, ln in enumerate(lines) if ln.strip() == f"# END SOLUTION {name}"]
    if len(begin) != 1 or len(end) != 1 or end[0] <= begin[0]:
        raise BlankError(f"{where}: expected one '# BEGIN SOLUTION {name}' line followed by one "
                         f"'# END SOLUTION {name}' line (found {len(begin)} and {len(end)})")
    b = begin[0]
    return b, end[0], lines[b][:len(lines[b]) - len(lines[b].lstrip())]


def region_source(text: str, name: str, where: str = "blank") -> str:
    b, e, _ = find_region(text, name, where)
    return "".join(text.splitlines(keepends=True)[b + 1:e])


def replace_region(text: str, name: str, body: str, where: str = "blank") -> str:
    """``text`` with the lines strictly between the markers replaced by ``body`` (markers kept)."""
    b, e, _ = find_region(text, name, where)
    lines = text.splitlines(keepends=True)
    return "".join(lines[:b + 1]) + body + "".join(lines[e:])


def blank_region(text: str, name: str, task_id: str, hint: str) -> str:
    """The solution between the markers becomes a comment and a stub, same indentation. The markers
    stay: they tell the student where to write, and the grader where to read."""
    b, e, indent = find_region(text, name, f"{task_id} blank #{name}")
    lines = text.splitlines(keepends=True)
    stub = [f"{indent}# YOUR CODE HERE\n", f"{indent}{stub_line(task_id, hint)}\n"]
    return "".join(lines[:b + 1] + stub + lines[e:])


def strip_answer_cells(text: str) -> str:
    """Drop every ``# %% [markdown] tags=["answers"]`` cell (up to the next ``# %%`` line)."""
    out, skipping = [], False
    for line in text.splitlines(keepends=True):
        if line.startswith("# %%"):
            skipping = bool(_ANSWERS_CELL.match(line))
        if not skipping:
            out.append(line)
    return "".join(out)


def graded_source(root: Path, blank: Blank, where: str) -> str:
    """What the student wrote for this blank in the tree at ``root`` (BlankError if absent)."""
    path = root / blank.path
    if not path.is_file():
        raise BlankError(f"{where}: {blank.path} is missing")
    text = path.read_text(encoding="utf-8")
    if blank.is_region:
        return region_source(text, blank.region, where)
    return function_source(text, blank, where)[0]

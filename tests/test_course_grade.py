"""The student build and the autograder, proven both ways (issue 11 §1).

- the reference tree scores full marks, every task passing;
- a fresh student build scores 0, each task failing on its own NotImplementedError;
- a tree with one planted wrong backward loses exactly that task's points;
- a planted ``import torch`` in a graded function is rejected with that reason;
- ``--json`` has the documented schema; bad usage says ``error:`` and exits non-zero.

Grading runs the real command in a subprocess, with a seed drawn here (printed in every failure
message, so ``python -m course.grade ROOT --seed N`` replays it). Planted bugs go into copies of the
tree under tmp_path, never into the project.
"""
from __future__ import annotations

import ast
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from course import _blank, assignments, student
from course.grade import forbidden_reason

ROOT = Path(__file__).resolve().parent.parent
SEED = random.randrange(2 ** 31)
TASKS = {t.id: t for a in assignments.load_all() for t in a.tasks}
MAX = sum(t.points for t in TASKS.values())


def run(*args: str, timeout: float = 1500) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def grade(tree: Path, tmp_path: Path, *extra: str) -> dict:
    out = tmp_path / "grade.json"
    proc = run("course.grade", str(tree), "--json", str(out), "--seed", str(SEED), "--jobs", "2", *extra)
    assert proc.returncode == 0, f"seed {SEED}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    data = json.loads(out.read_text())
    data["stdout"] = proc.stdout
    return data


def copy_tree(dst: Path) -> Path:
    """The tracked files, as the student build copies them (none of them blanked)."""
    for f in student.tracked_files(ROOT):
        (dst / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, dst / f)
    return dst


def replace_body(path: Path, qualname: str, body: list[str]) -> None:
    """Give ``qualname`` in ``path`` a new body (lines without indentation)."""
    text = path.read_text()
    node, _ = _blank.find_def(ast.parse(text), qualname)
    lines = text.splitlines(keepends=True)
    first = node.body[0]
    indent = " " * first.col_offset
    new = [indent + b + "\n" for b in body]
    path.write_text("".join(lines[:first.lineno - 1] + new + lines[node.end_lineno:]))


def body_lines(path: Path, qualname: str) -> list[str]:
    text = path.read_text()
    node, _ = _blank.find_def(ast.parse(text), qualname)
    return [ln.strip() for ln in text.splitlines()[node.body[0].lineno - 1:node.end_lineno]]


def test_reference_tree_scores_full_marks(tmp_path: Path) -> None:
    data = grade(ROOT, tmp_path)
    failed = [(t["task"], t["message"]) for t in data["tasks"] if not t["passed"]]
    assert not failed, f"seed {SEED}: the reference fails {failed}"
    assert data["total"] == data["max"] == MAX
    assert set(data) == {"total", "max", "seed", "tasks", "stdout"} and data["seed"] == SEED
    for t in data["tasks"]:
        assert set(t) == {"assignment", "task", "points", "max", "passed", "message"}
        assert t["points"] == t["max"] == TASKS[t["task"]].points
    assert [t["task"] for t in data["tasks"]] == list(TASKS)
    assert f"total: {MAX}/{MAX} points" in data["stdout"]


@pytest.fixture(scope="module")
def student_tree(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("build") / "student"
    proc = run("course.student", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


def test_student_build_scores_zero_each_task_on_its_own_stub(student_tree: Path, tmp_path: Path) -> None:
    data = grade(student_tree, tmp_path)
    assert data["total"] == 0 and data["max"] == MAX
    for t in data["tasks"]:
        assert not t["passed"]
        assert t["message"].startswith(f"not implemented yet ({t['task']}: "), (SEED, t)


def test_student_build_is_importable_and_keeps_the_rest_of_each_file(student_tree: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", "import minigrad, mini_bert, sys; "
                           "print(minigrad.__file__)"], cwd=student_tree, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(str(student_tree))
    assert not (student_tree / ".venv").exists() and (student_tree / "README.md").is_file()
    assert not list((student_tree / "tests").glob("test_course_*.py"))  # planted bugs ~ solutions
    # Outside the blanked bodies every line is the reference's, in order (comments included).
    for rel in ("minigrad/ops/elementwise.py", "mini_bert/model.py"):
        ref, stu = (ROOT / rel).read_text().splitlines(), (student_tree / rel).read_text().splitlines()
        it = iter(ref)
        assert all(any(s == r for r in it) for s in stu if "NotImplementedError" not in s), rel
    mul = body_lines(student_tree / "minigrad/ops/elementwise.py", "Mul.backward")
    assert mul == [_blank.stub_line("a1.mul", TASKS["a1.mul"].hint)]
    # hide_doc (a3.layernorm_backward): the derivation is gone from the class docstring too.
    assert TASKS["a3.layernorm_backward"].hide_doc
    path = TASKS["a3.layernorm_backward"].blanks[0].split(":")[0]
    for tree, present in ((ROOT, True), (student_tree, False)):
        layer_norm = (tree / path).read_text().split("class LayerNorm")[1].split("\nclass ")[0]
        assert ("dx = (" in layer_norm) is present, tree
    lesson = (student_tree / "lessons/03_bce_derivation.py").read_text()
    assert "# BEGIN SOLUTION a2-logreg-grad\n# YOUR CODE HERE\nraise NotImplementedError(" in lesson
    assert "grad_simple = X_np.T" not in lesson
    for path in (student_tree / "lessons").glob("[0-9][0-9]_*.py"):  # answers: instructor build only
        assert 'tags=["answers"]' not in path.read_text(), path.name


def test_planted_wrong_backward_and_torch_fail_alone(tmp_path: Path) -> None:
    tree = copy_tree(tmp_path / "planted")
    ew = tree / "minigrad/ops/elementwise.py"
    replace_body(ew, "Mul.backward", ["a, b = ctx.saved_tensors", "return g * a, g * a"])
    replace_body(ew, "Div.backward", ["import torch  # planted"] + body_lines(ew, "Div.backward"))
    # torch smuggled in through a helper added next to the graded function, under another name
    ew.write_text(ew.read_text() + "\n\ndef _helper(g):\n    import torch as tt\n    return g * tt.ones(1).item()\n")
    replace_body(ew, "Exp.backward", ["(z,) = ctx.saved_tensors", "return _helper(g) * z"])
    data = grade(tree, tmp_path, "--assignment", "a1")
    by = {t["task"]: t for t in data["tasks"]}
    assert set(by) == {t.id for t in TASKS.values() if t.id.startswith("a1.")}
    assert not by["a1.mul"]["passed"] and "Mul.backward: gradient w.r.t. a is wrong" in \
        by["a1.mul"]["message"], (SEED, by["a1.mul"])
    assert not by["a1.div"]["passed"] and \
        by["a1.div"]["message"].endswith("uses torch (forbidden in graded code)"), by["a1.div"]
    assert not by["a1.exp_log"]["passed"] and "code added at line" in by["a1.exp_log"]["message"] \
        and by["a1.exp_log"]["message"].endswith("uses torch (forbidden in graded code)"), by["a1.exp_log"]
    others = [t for k, t in by.items() if k not in ("a1.mul", "a1.div", "a1.exp_log")]
    assert all(t["passed"] for t in others), (SEED, [t for t in others if not t["passed"]])
    lost = sum(TASKS[k].points for k in ("a1.mul", "a1.div", "a1.exp_log"))
    assert data["total"] == data["max"] - lost


@pytest.mark.parametrize("args, says", [
    (["course.grade", "/no/such/tree"], "no such directory"),
    (["course.grade", ".", "--assignment", "a99"], "unknown"),
    (["course.grade", ".", "--task", "a1.nope"], "unknown"),
    (["course.grade", ".", "--json", "/no/such/dir/g.json"], "does not exist"),
    (["course.grade", ".", "--seed", "-3"], "non-negative"),
])
def test_bad_usage_is_an_error(args: list[str], says: str) -> None:
    proc = run(*args, timeout=120)
    assert proc.returncode != 0 and proc.stderr.startswith("error:") and says in proc.stderr


def test_student_refuses_a_non_empty_out(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("mine")
    proc = run("course.student", str(tmp_path), timeout=120)
    assert proc.returncode != 0 and "error:" in proc.stderr and "not empty" in proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["x"]


# ---- the blanking and the forbidden-code scan, unit by unit --------------------------------------
SRC = '''import math  # a comment that stays


class Op:
    """z = 2a; dz/da = 2."""

    @staticmethod
    def backward(ctx, g):
        """The gradient."""
        # a comment in the body goes with it
        return 2 * g  # so does this one


def helper(x):
    return x
'''


def test_blank_function_replaces_only_the_body() -> None:
    out = _blank.blank_function(SRC, _blank.parse_blank("f.py:Op.backward"), "t.x", "a hint", False)
    stub = "        raise NotImplementedError('t.x: a hint')\n"
    assert out == SRC.replace('        # a comment in the body goes with it\n'
                              '        return 2 * g  # so does this one\n', stub)
    hidden = _blank.blank_function(SRC, _blank.parse_blank("f.py:Op.backward"), "t.x", "a hint", True)
    assert "The gradient" not in hidden and "dz/da" not in hidden and "@staticmethod" in hidden
    assert _blank.is_stub(_blank.function_source(out, _blank.parse_blank("f.py:Op.backward"))[0])
    assert not _blank.is_stub(_blank.function_source(SRC, _blank.parse_blank("f.py:helper"))[0])


def test_a_blank_that_names_nothing_is_an_error_naming_it() -> None:
    with pytest.raises(_blank.BlankError, match="t.x blank f.py:Op.forward: no function 'Op.forward'"):
        _blank.blank_function(SRC, _blank.parse_blank("f.py:Op.forward"), "t.x", "h", False)
    with pytest.raises(_blank.BlankError, match="BEGIN SOLUTION r"):
        _blank.blank_region(SRC, "r", "t.x", "h")
    with pytest.raises(ValueError, match="expected"):
        _blank.parse_blank("f.py")


def test_regions_and_answer_cells() -> None:
    text = ("# %%\nx = 1\n    # BEGIN SOLUTION r\n    y = x + 1\n    # END SOLUTION r\n"
            '# %% [markdown] tags=["answers"]\n# the answer\n# %% [markdown]\n# prose\n')
    out = _blank.blank_region(text, "r", "t.x", "h")
    assert "    # YOUR CODE HERE\n    raise NotImplementedError('t.x: h')\n    # END" in out
    assert _blank.region_source(text, "r") == "    y = x + 1\n"
    assert _blank.strip_answer_cells(text) == text.replace('# %% [markdown] tags=["answers"]\n'
                                                           '# the answer\n', "")


@pytest.mark.parametrize("code, reason", [
    ("import torch\nreturn torch.ones(1)", "uses torch"),
    ("from scipy import special", "uses scipy"),
    ("import transformers.models", "uses transformers"),
    ("return __import__('torch')", "uses __import__"),
    ("return eval('g')", "uses eval"),
    ("import sys\nreturn sys.modules['x']", "uses sys.modules"),
    ("import importlib", "uses importlib"),
    ("from course import grade", "uses course"),
    ("return open('/ref/minigrad/x.py').read()", "reads the reference solution"),
])
def test_forbidden_code_is_named(code: str, reason: str) -> None:
    assert reason in forbidden_reason(code, ("/ref",))


def test_minigrad_code_is_allowed() -> None:
    assert forbidden_reason("xp = ctx.xp\nreturn g * xp.exp(a), None") is None


def test_grader_inside_a_student_build_grades_without_isolation(student_tree: Path) -> None:
    """No reference next to the grader: it says so once, and grades the tree as it is."""
    proc = subprocess.run([sys.executable, "-m", "course.grade", ".", "--task", "a1.mul", "--seed",
                           str(SEED)], cwd=student_tree, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("without isolation") == 1
    assert "not implemented yet (a1." in proc.stdout and "total: 0/" in proc.stdout


def test_layernorm_backward_check_draws_well_conditioned_rows() -> None:
    """Regression: seed 300970566 drew a normalized_shape=(2,) group of two nearly equal values, and
    the reference failed the float32 comparison with torch (dx ~ 1/σ amplifies both sides' rounding)."""
    proc = subprocess.run([sys.executable, "-m", "course.grade", ".", "--task", "a3.layernorm_backward",
                           "--seed", "300970566"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "total: 4/4" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]

"""The engine's layers import one way (docs/architecture.md): the core never imports upward.

Read from the source with ``ast`` (not by importing), so a lazy import inside a function counts too.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "minigrad"
# The core: ops, the graph engine, Tensor and the backends.
CORE = sorted([*(PKG / "ops").glob("*.py"), *(PKG / "backend").glob("*.py"),
               PKG / "autograd.py", PKG / "tensor.py"])
ABOVE_CORE = ("minigrad.nn", "minigrad.optim", "mini_bert")


def _imports(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports, at any depth (relative ones resolved)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names.add(mod)
            # ``from . import nn`` imports the module minigrad.nn.
            names.update(f"{mod}.{a.name}" for a in node.names)
    return names


def _upward(names: set[str], forbidden) -> list[str]:
    return sorted(n for n in names if any(n == f or n.startswith(f + ".") for f in forbidden))


def test_the_resolver_sees_relative_imports():
    """The checker itself: nn/functional.py does import the core (else the test could not fail)."""
    names = _imports(PKG / "nn" / "functional.py")
    assert "minigrad.tensor" in names and "minigrad.ops.nn" in names


@pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(PKG)))
def test_core_never_imports_nn_optim_or_mini_bert(path):
    assert _upward(_imports(path), ABOVE_CORE) == [], f"{path.relative_to(ROOT)} imports upward"


def test_minigrad_never_imports_mini_bert():
    bad = {str(p.relative_to(ROOT)): _upward(_imports(p), ("mini_bert",)) for p in PKG.rglob("*.py")}
    assert {k: v for k, v in bad.items() if v} == {}


def test_ops_import_only_the_engine_below_them():
    """ops/ may use autograd (Function) and the backends, and (lazily) tensor for ToCopy; nothing
    else of minigrad: no op reaches up into random state, nn or optim."""
    allowed = ("minigrad.autograd", "minigrad.backend", "minigrad.tensor", "minigrad.ops")
    for path in (PKG / "ops").glob("*.py"):
        ours = {n for n in _imports(path) if n.startswith("minigrad")}
        assert _upward(ours, allowed) == sorted(ours), f"{path.name}: {sorted(ours)}"

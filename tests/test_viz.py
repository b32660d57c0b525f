"""``minigrad.viz``: the DOT text has the graph torch builds for the same expression, and ``draw``
writes a real, non-blank PNG whose layout points every edge from left to right."""
from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest
import torch

import minigrad as mg
from minigrad import viz


def _parse_dot(dot: str) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """{node id: label} and [(src id, dst id)] from our DOT output."""
    found = re.findall(r'^\s*(n\d+) \[label="(.*?)"', dot, re.M)
    labels = {key: label.replace("\\n", "\n") for key, label in found}
    edges = re.findall(r"^\s*(n\d+) -> (n\d+);", dot, re.M)
    return labels, edges


def _expression(a, b, c):
    """The same expression for minigrad and torch: ops that both name alike (Mul, Add, ...); b * b
    feeds one op twice, which both graphs show as two edges."""
    return ((a * b + c).tanh() * 2.0 + (a / c).exp() - b * b).sum()


def _torch_edges(out: torch.Tensor, names: dict[int, str]) -> Counter:
    """(input, op) edges of torch's autograd graph, ops named without torch's trailing version digit
    and leaves (AccumulateGrad nodes) by the names we gave their tensors."""
    def name(fn):
        if type(fn).__name__ == "AccumulateGrad":
            return names[id(fn.variable)]
        return re.sub(r"\d+$", "", type(fn).__name__)

    edges, seen, stack = Counter(), set(), [out.grad_fn]
    while stack:
        fn = stack.pop()
        if fn in seen:
            continue
        seen.add(fn)
        for parent, _ in fn.next_functions:
            if parent is not None:
                edges[(name(parent), name(fn))] += 1
                stack.append(parent)
    return edges


def test_dot_has_the_same_ops_and_edges_as_torchs_graph():
    values = [np.array([[1.0, -2.0], [0.5, 3.0]], np.float32) * (i + 1) for i in range(3)]
    mine = [mg.tensor(v, requires_grad=True) for v in values]
    ref = [torch.tensor(v, requires_grad=True) for v in values]
    out = _expression(*mine)
    dot = viz.to_dot(out, names={id(t): n for t, n in zip(mine, "abc")})
    labels, edges = _parse_dot(dot)

    first_line = {k: v.split("\n")[0] for k, v in labels.items()}
    ours = Counter((first_line[s], first_line[d]) for s, d in edges)
    theirs = _torch_edges(_expression(*ref), {id(t): n for t, n in zip(ref, "abc")})
    assert ours == theirs
    assert dot.startswith("digraph") and dot.rstrip().endswith("}")


def test_labels_carry_output_shapes_and_parameter_names():
    mg.manual_seed(0)
    model = mg.nn.Sequential(mg.nn.Linear(3, 5), mg.nn.Tanh(), mg.nn.Linear(5, 2))
    x = mg.randn(4, 3)
    out = model(x).sum()
    labels, edges = _parse_dot(viz.to_dot(out, names={id(x): "x"},
                                          params=dict(model.named_parameters())))
    by_label = {v: k for k, v in labels.items()}
    for label in ("LinearBackward\n(4, 5)", "TanhBackward\n(4, 5)", "LinearBackward\n(4, 2)",
                  "SumBackward\n()", "x\n(4, 3)", "0.weight\n(5, 3)", "0.bias\n(5,)",
                  "2.weight\n(2, 5)", "2.bias\n(2,)"):
        assert label in by_label, (label, sorted(labels.values()))
    assert (by_label["0.weight\n(5, 3)"], by_label["LinearBackward\n(4, 5)"]) in edges
    assert (by_label["LinearBackward\n(4, 2)"], by_label["SumBackward\n()"]) in edges
    assert len(edges) == 3 + 1 + 3 + 1  # two Linears' three inputs each, Tanh's, Sum's


def test_scalar_leaves_show_their_value():
    a = mg.tensor(2.0, requires_grad=True)
    labels, _ = _parse_dot(viz.to_dot(a * 3.0, names={id(a): "a"}))
    assert "a = 2\n()" in labels.values()


def test_freed_graph_gives_a_clear_error():
    a = mg.tensor([1.0, 2.0], requires_grad=True)
    out = (a * a).sum()
    out.backward()
    with pytest.raises(RuntimeError, match="retain_graph"):
        viz.to_dot(out)
    kept = (a * a).sum()
    kept.backward(retain_graph=True)
    assert "MulBackward" in viz.to_dot(kept)


def test_layout_points_every_edge_left_to_right():
    mg.manual_seed(0)
    x = mg.randn(4, 8, requires_grad=True)
    lin = mg.nn.Linear(8, 8)
    out = ((x + lin(x).tanh()) * x).mean() + (x * x).sum()  # a residual and reused inputs
    nodes = viz._graph(out, None, None)
    pos, routes = viz._layout(nodes)
    assert set(routes) == {(s, d) for d, n in nodes.items() for s in n.inputs}
    for chain in routes.values():  # each route steps one column at a time, left to right
        assert [pos[k][0] for k in chain] == list(range(pos[chain[0]][0], pos[chain[-1]][0] + 1))
    slots = [(c, r) for c, r in pos.values()]
    assert len(slots) == len(set(slots)), "two nodes drawn on top of each other"


def test_draw_writes_a_readable_png(tmp_path):
    from matplotlib.image import imread

    mg.manual_seed(0)
    model = mg.nn.Sequential(mg.nn.Linear(2, 16), mg.nn.Tanh(), mg.nn.Linear(16, 2))
    x = mg.randn(8, 2)
    loss = mg.nn.functional.cross_entropy(model(x), mg.tensor([0, 1] * 4))
    path = tmp_path / "graph.png"
    viz.draw(loss, str(path), names={id(x): "x"}, params=dict(model.named_parameters()))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(str(path))
    assert image.shape[0] > 100 and image.shape[1] > 300
    assert len(np.unique(image.reshape(-1, image.shape[-1]), axis=0)) > 10  # boxes, text, arrows

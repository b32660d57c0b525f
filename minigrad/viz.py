"""Draw the graph behind a tensor: as Graphviz DOT text (``to_dot``) or as a PNG (``draw``).

    x = mg.tensor([1.0, 2.0], requires_grad=True)
    y = (x * x + x).sum()
    print(mg.viz.to_dot(y, names={id(x): "x"}))
    mg.viz.draw(y, "graph.png", names={id(x): "x"})

Two kinds of node: *ops* (the ``grad_fn`` contexts, e.g. ``MulBackward``, with their output shape)
and *leaves* (tensors made by the user: parameters, inputs, constants). Edges point the way data
flows in the forward pass: input → op → op → ... → output. Draw *before* ``backward()``: backward
frees the graph as it goes (unless ``retain_graph=True``).

``draw`` needs only matplotlib. Its layout is the first step of the classic Sugiyama method: each
op sits one column right of its latest input (longest-path layering, so every edge points right);
each leaf sits just left of the first op that reads it; within a column, nodes are ordered by the
mean height of their neighbours, which removes most edge crossings in graphs this small.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .autograd import Context
from .tensor import Tensor


@dataclass
class _Node:
    label: str
    kind: str  # "op", "output", "param" (needs a gradient) or "const"
    inputs: list[int] = field(default_factory=list)  # ids of the nodes feeding this one


def _shape_text(shape: tuple) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _graph(t: Tensor, names: dict | None, params: dict | None) -> dict[int, _Node]:
    """Walk from ``t`` back to the leaves: {node id: _Node}, the output's node first."""
    label_of = {id(p): n for n, p in (params or {}).items()}
    label_of.update(names or {})

    def leaf(x: Tensor) -> _Node:
        name = label_of.get(id(x))
        if x.numel() == 1:  # a scalar's value is worth showing (micrograd-style expression graphs)
            value = f"{x.item():.4g}"
            name = value if name is None else f"{name} = {value}"
        text = _shape_text(x.shape) if name is None else f"{name}\n{_shape_text(x.shape)}"
        return _Node(text, "param" if x.requires_grad else "const")

    if t.grad_fn is None:
        return {id(t): leaf(t)}
    nodes: dict[int, _Node] = {}
    stack = [(t.grad_fn, t.shape)]  # an op node is labelled with the shape of the tensor it made
    while stack:
        ctx, shape = stack.pop()
        if id(ctx) in nodes:
            continue
        if ctx.freed:
            raise RuntimeError(f"{ctx.name()}: this part of the graph was freed by backward(); draw "
                               "before calling backward(), or pass retain_graph=True to it")
        node = nodes[id(ctx)] = _Node(f"{ctx.name()}\n{_shape_text(shape)}", "op")
        for parent, in_shape in zip(ctx.parents, ctx.shapes):
            if parent is None:  # a Python number or a non-tensor option: not part of the graph
                continue
            if isinstance(parent, Context):
                node.inputs.append(id(parent))
                stack.append((parent, tuple(in_shape)))
            else:
                node.inputs.append(id(parent))
                nodes.setdefault(id(parent), leaf(parent))
    nodes[id(t.grad_fn)].kind = "output"
    return nodes


def to_dot(t: Tensor, names: dict[int, str] | None = None, params: dict | None = None) -> str:
    """Graphviz DOT source for the graph that produced ``t``.

    ``names`` maps ``id(tensor)`` to a label; ``params`` is e.g. ``dict(model.named_parameters())``.
    Render it with ``dot -Tpng`` or paste it into any online Graphviz viewer.
    """
    nodes = _graph(t, names, params)
    index = {key: i for i, key in enumerate(nodes)}  # short DOT ids: n0 is the output
    style = {"op": 'shape=box, style="rounded,filled", fillcolor="#fde0c5"',
             "output": 'shape=box, style="rounded,filled", fillcolor="#b9e4c9"',
             "param": 'shape=box, style=filled, fillcolor="#cfe2f3"',
             "const": 'shape=box, style="filled,dashed", fillcolor="#eeeeee"'}
    lines = ["digraph minigrad {", "  rankdir=LR;", '  node [fontname="monospace", fontsize=10];']
    for key, node in nodes.items():
        label = node.label.replace('"', '\\"').replace("\n", "\\n")
        lines.append(f'  n{index[key]} [label="{label}", {style[node.kind]}];')
    for key, node in nodes.items():
        lines += [f"  n{index[src]} -> n{index[key]};" for src in node.inputs]
    lines.append("}")
    return "\n".join(lines)


def _layout(nodes: dict[int, _Node]):
    """Place the graph on a grid: ({key: (column, row)}, {(src, dst): [keys along the edge]}).

    Longest-path columns; then every edge that spans several columns gets one *dummy* point per
    column it crosses, so that it is routed between the boxes instead of through them; then the
    nodes of each column (dummies included) are ordered by the mean row of their neighbours.
    """
    col: dict = {}
    for key in nodes:  # ops: one column right of their latest op input (iterative DFS)
        todo = [key] if nodes[key].inputs else []
        while todo:
            k = todo[-1]
            missing = [i for i in nodes[k].inputs if i not in col and nodes[i].inputs]
            if missing:
                todo.extend(missing)
                continue
            todo.pop()
            col[k] = 1 + max((col[i] for i in nodes[k].inputs if nodes[i].inputs), default=0)
    readers: dict[int, list[int]] = {k: [] for k in nodes}
    for key, node in nodes.items():
        for src in node.inputs:
            readers[src].append(key)
    for key, node in nodes.items():  # leaves: just before their first reader
        if not node.inputs:
            col[key] = min((col[r] for r in readers[key]), default=1) - 1

    before: dict = {k: [] for k in nodes}  # neighbours in the layout, dummies included
    after: dict = {k: [] for k in nodes}
    routes = {}
    for dst, node in nodes.items():
        for src in dict.fromkeys(node.inputs):  # x * x: one drawn edge is enough
            dummies = [("dummy", src, dst, c) for c in range(col[src] + 1, col[dst])]
            for d in dummies:
                col[d], before[d], after[d] = d[3], [], []
            chain = [src, *dummies, dst]
            for a, b in zip(chain, chain[1:]):
                before[b].append(a)
                after[a].append(b)
            routes[(src, dst)] = chain

    columns: dict[int, list] = {}
    for key in before:  # insertion order = discovery order from the output: a fair first guess
        columns.setdefault(col[key], []).append(key)
    row = {k: float(i) for c in columns.values() for i, k in enumerate(c)}
    for sweep in range(6):  # alternate left-to-right and right-to-left barycentre sweeps
        forward = sweep % 2 == 0
        for c in sorted(columns, reverse=not forward):
            def centre(k) -> float:
                near = before[k] if forward else after[k]
                return sum(row[n] for n in near) / len(near) if near else row[k]
            columns[c].sort(key=centre)
            for i, k in enumerate(columns[c]):
                row[k] = float(i)
    tallest = max(len(c) for c in columns.values())
    first = min(columns)
    pos = {k: (col[k] - first, row[k] + (tallest - len(columns[col[k]])) / 2) for k in before}
    return pos, routes


def draw(t: Tensor, path: str, names: dict[int, str] | None = None, params: dict | None = None,
         dpi: int = 120) -> None:
    """Render the graph behind ``t`` to a PNG at ``path`` with matplotlib (no Graphviz needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
    from matplotlib.path import Path

    nodes = _graph(t, names, params)
    pos, routes = _layout(nodes)
    # Sizes in inches: monospace text makes a label's width predictable from its length.
    char_w, line_h, pad = 0.085, 0.19, 0.12
    size = {k: (max(len(s) for s in n.label.split("\n")) * char_w + 2 * pad,
                len(n.label.split("\n")) * line_h + 2 * pad * 0.7) for k, n in nodes.items()}
    n_cols = 1 + max(c for c, _ in pos.values())
    col_w = [max((size[k][0] for k in nodes if pos[k][0] == c), default=0.3) for c in range(n_cols)]
    gap_x, row_h = 0.6, max(h for _, h in size.values()) + 0.3
    x_of = [gap_x / 2 + sum(col_w[:c]) + gap_x * c + col_w[c] / 2 for c in range(n_cols)]
    n_rows = 1 + max(r for _, r in pos.values())
    width, height = sum(col_w) + gap_x * n_cols, n_rows * row_h + 0.3
    centre = {k: (x_of[c], height - 0.15 - (r + 0.5) * row_h) for k, (c, r) in pos.items()}

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.axis("off")
    colours = {"op": "#fde0c5", "output": "#b9e4c9", "param": "#cfe2f3", "const": "#eeeeee"}
    for k, node in nodes.items():
        (x, y), (w, h) = centre[k], size[k]
        ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h,
                                    boxstyle="round,pad=0,rounding_size=0.06",
                                    facecolor=colours[node.kind], edgecolor="#444444",
                                    linestyle="--" if node.kind == "const" else "-", linewidth=1))
        ax.text(x, y, node.label, ha="center", va="center", family="monospace", fontsize=9,
                linespacing=1.3)
    for (src, dst), chain in routes.items():
        # From the right side of the source box, through the dummy points, to the target's left side.
        (x0, y0), (x1, y1) = centre[src], centre[dst]
        points = [(x0 + size[src][0] / 2, y0), *(centre[d] for d in chain[1:-1]),
                  (x1 - size[dst][0] / 2, y1)]
        ax.add_patch(FancyArrowPatch(path=Path(points), arrowstyle="-|>", mutation_scale=12,
                                     color="#555555", linewidth=1))
    fig.savefig(path, dpi=dpi)

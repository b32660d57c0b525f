"""``minigrad.profile()``: where does the time go? Per-op time, calls, FLOPs and bytes.

    with mg.profile() as prof:
        loss = model(x).sum()
        loss.backward()
    print(prof)              # a table, slowest op first
    prof.totals()            # forward / backward / all, summed
    prof.plot("prof.png")    # the same as a bar chart

While the block runs, the engine hands every ``Function.apply`` (forward) and every node of the
backward sweep to the profiler instead of calling the op directly (see ``autograd.run_node``). Outside
any block that costs one comparison per op. A profile sees only its own thread's ops, as grad mode is
per thread: a data-loading or serving thread running alongside is not billed to it.

What is counted, per op:
  * time: wall-clock around the op's own array work. On CUDA the kernels are asynchronous, so the
    profiler synchronises the device before and after each op (which slows the run a little; the
    unprofiled run never synchronises).
  * FLOPs: an estimate, which each op states on its class (``Function.flops``,
    ``flops_per_element``, ``grads_costing_flops``), so renaming an op keeps its count. A matmul
    [.., M, K] @ [K, N] does M·N·K multiply-adds = 2·M·N·K FLOPs (batch dims multiply M·N); Linear
    the same, as torch's flop counter counts it. An elementwise op or a reduction does ~1 FLOP per
    element of its largest operand; fused ops (softmax, GELU, LayerNorm, cross-entropy) a few per
    element; ops that only move data (reshape, indexing, ...) none. A backward does the forward's
    FLOPs once per input that needs a gradient (exact for matmul: dA = G Bᵀ and dB = Aᵀ G are each
    a matmul of the same size).
  * bytes: the ``nbytes`` of the arrays the op reads and writes (inputs + output; for a backward, the
    incoming gradient, the saved arrays and the gradients it returns). A lower bound on memory
    traffic, good enough to tell a memory-bound op (few FLOPs per byte) from a compute-bound one.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from . import autograd

# Lets two threads open and close their profiles at once without losing a count.
_lock = threading.Lock()


@dataclass
class OpStats:
    """Totals for one (op, phase) row, or for a sum of rows."""

    calls: int = 0
    seconds: float = 0.0
    flops: float = 0.0
    bytes: float = 0.0

    def add(self, seconds: float, flops: float, nbytes: float, calls: int = 1) -> None:
        self.calls += calls
        self.seconds += seconds
        self.flops += flops
        self.bytes += nbytes

    @property
    def gflops_per_s(self) -> float:
        return self.flops / self.seconds / 1e9 if self.seconds > 0 else 0.0


def _nbytes(arrays) -> int:
    """Sum of ``nbytes`` over the arrays among ``arrays`` (skipping None, shapes, Python numbers)."""
    return sum(int(getattr(a, "nbytes", 0) or 0) for a in arrays if hasattr(a, "shape"))


class Profile:
    """Collects per-op statistics while active; use through ``minigrad.profile()``."""

    def __init__(self):
        self.stats: dict[tuple[str, str], OpStats] = {}
        self.wall_seconds = 0.0
        self._previous = None
        self._started = 0.0

    # ---- the context manager: install self as the engine's hook ---------------------------------
    def __enter__(self) -> "Profile":
        state = autograd._state
        self._previous, state.profiler = getattr(state, "profiler", None), self
        with _lock:
            autograd._profiling += 1
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.wall_seconds += time.perf_counter() - self._started
        autograd._state.profiler = self._previous
        with _lock:
            autograd._profiling -= 1

    def _record(self, op: str, phase: str, seconds: float, flops: float, nbytes: float) -> None:
        row = self.stats.get((op, phase))
        if row is None:
            row = self.stats[(op, phase)] = OpStats()
        row.add(seconds, flops, nbytes)

    # ---- the two hooks the engine calls ----------------------------------------------------------
    def run_forward(self, fn, ctx, device, raw: list, kwargs: dict):
        """Run ``fn.forward`` timed; called by ``Function.apply`` in place of the plain call."""
        xp = ctx.xp
        xp.synchronize(device)  # finish earlier queued work so it is not billed to this op
        start = time.perf_counter()
        out = fn.forward(ctx, *raw, **kwargs)
        xp.synchronize(device)
        seconds = time.perf_counter() - start
        flops = fn.flops(raw, out)
        ctx._profiled_flops = flops  # the backward estimate starts from the forward's count
        self._record(fn.__name__, "forward", seconds, flops, _nbytes([*raw, out]))
        return out

    def run_backward(self, node, grad):
        """Run ``node``'s backward timed; called by the engine's backward loop for each node."""
        xp = node.xp
        device = node.device
        touched = _nbytes([grad, *node.saved])  # read them before backward may free anything
        xp.synchronize(device)
        start = time.perf_counter()
        grads = node.fn.backward(node, grad)
        xp.synchronize(device)
        seconds = time.perf_counter() - start
        returned = grads if isinstance(grads, tuple) else (grads,)
        # Linear's bias gradient is a cheap sum: only its first two gradients are matmuls.
        considered = returned[:node.fn.grads_costing_flops]
        needed = sum(1 for g, need in zip(considered, node.needs_input_grad) if need and g is not None)
        flops = node.__dict__.get("_profiled_flops", 0) * needed
        self._record(node.fn.__name__, "backward", seconds, flops, touched + _nbytes(returned))
        return grads

    # ---- reports ---------------------------------------------------------------------------------
    def totals(self) -> dict[str, OpStats]:
        """Summed statistics: {"forward": ..., "backward": ..., "all": ...}."""
        out = {"forward": OpStats(), "backward": OpStats(), "all": OpStats()}
        for (_, phase), s in self.stats.items():
            for key in (phase, "all"):
                out[key].add(s.seconds, s.flops, s.bytes, s.calls)
        return out

    def rows(self) -> list[tuple[str, str, OpStats]]:
        """(op, phase, stats) rows, the most time-consuming first."""
        return sorted(((op, phase, s) for (op, phase), s in self.stats.items()),
                      key=lambda r: r[2].seconds, reverse=True)

    def table(self, limit: int | None = None) -> str:
        """A text table: one row per (op, phase), sorted by time, then the totals."""
        total = self.totals()
        all_s = total["all"].seconds or 1.0
        head = (f"{'op':<20} {'phase':<9} {'calls':>6} {'time ms':>9} {'%':>6} {'GFLOP':>9} "
                f"{'GFLOP/s':>8} {'MB':>9}")
        lines = [head, "-" * len(head)]

        def line(name, phase, s):
            return (f"{name:<20} {phase:<9} {s.calls:>6} {s.seconds * 1e3:>9.3f} "
                    f"{100 * s.seconds / all_s:>6.1f} {s.flops / 1e9:>9.4f} {s.gflops_per_s:>8.2f} "
                    f"{s.bytes / 1e6:>9.2f}")

        lines += [line(op, phase, s) for op, phase, s in self.rows()[:limit]]
        lines.append("-" * len(head))
        lines += [line("total", phase, total[phase]) for phase in ("forward", "backward", "all")]
        if self.wall_seconds:
            outside = self.wall_seconds - total["all"].seconds
            lines.append(f"wall time of the block {self.wall_seconds * 1e3:.3f} ms, of which "
                         f"{outside * 1e3:.3f} ms outside ops (Python, optimizer, data)")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def plot(self, path: str, limit: int = 15) -> None:
        """Save a horizontal bar chart of time per op (forward and backward side by side)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        ops: list[str] = []
        for op, _, _ in self.rows():
            if op not in ops:
                ops.append(op)
        ops = ops[:limit][::-1]  # slowest at the top of the chart
        ms = {key: s.seconds * 1e3 for key, s in self.stats.items()}
        fig = Figure(figsize=(8, 0.4 * len(ops) + 1.5))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ys = range(len(ops))
        ax.barh([y + 0.2 for y in ys], [ms.get((op, "forward"), 0) for op in ops], 0.4,
                label="forward", color="#4c72b0")
        ax.barh([y - 0.2 for y in ys], [ms.get((op, "backward"), 0) for op in ops], 0.4,
                label="backward", color="#dd8452")
        ax.set_yticks(list(ys), ops)
        ax.set_xlabel("time (ms)")
        ax.set_title("minigrad profile: time per op")
        ax.legend(loc="lower right")
        fig.tight_layout()
        fig.savefig(path, dpi=110)


def profile() -> Profile:
    """A context manager that profiles every op run inside it (see the module docstring)."""
    return Profile()

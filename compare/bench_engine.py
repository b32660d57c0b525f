"""How fast is minigrad next to PyTorch eager? Two numbers, both as ratios measured in the same run.

    python -m compare.bench_engine [--device cpu|torch:cpu|cuda] [--repeats 7] [--profile]

1. Per-op overhead: a chain of ~50 tiny ops ([8, 8] float32 matmul/add/mul) forward and backward.
   The arithmetic is negligible, so this measures what the framework itself costs per op: Python
   dispatch, wrapping, graph recording, the backward loop. Goal: minigrad ≤ 1.5× torch.
2. An MLP training step: batch 256, three 1024→1024 Linear layers with exact GELU between them,
   cross-entropy, backward, AdamW. Here the matmuls dominate. Goal: minigrad ≤ 1.2× torch.

Each measurement is the median of ``--repeats`` timed runs after warm-up, with minigrad and torch
runs interleaved so that a load spike on a shared machine hits both alike. ``--device cpu`` runs
minigrad on numpy; ``torch:cpu`` and ``cuda`` run it on the torch backend. On CUDA every timed
region ends with a device synchronisation, so queued kernels are counted.

Threads: by default every framework uses its own default (OMP_NUM_THREADS if set, else one thread
per core; minigrad's numpy pool, numpy's BLAS and torch alike). ``--threads N`` pins all of them to
N through ``minigrad.set_num_threads`` (which also calls ``torch.set_num_threads``). The counts in
use are printed.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Callable

import numpy as np
import torch

import minigrad as mg
import minigrad.nn.functional as F

CHAIN_STEPS = 16  # 3 ops per step (matmul, add, mul) + a final sum = 49 ops forward
CHAIN_OPS = 3 * CHAIN_STEPS + 1


def _torch_device(device: str) -> str:
    """minigrad's device string as torch spells it: "cpu" and "torch:cpu" -> "cpu", "cuda:N" as is."""
    return device[len("torch:"):] if device.startswith("torch:") else device


def _sync(device: str) -> None:
    if "cuda" in device:
        torch.cuda.synchronize()


def _median_pair(run_a: Callable, run_b: Callable, repeats: int, warmup: int, device: str,
                 inner: int = 1) -> tuple[float, float]:
    """Median seconds per call of run_a and run_b, timed alternately (each timing = ``inner`` calls)."""
    for _ in range(warmup):
        run_a()
        run_b()
    times: tuple[list, list] = ([], [])
    for _ in range(repeats):
        for run, out in ((run_a, times[0]), (run_b, times[1])):
            _sync(device)
            start = time.perf_counter()
            for _ in range(inner):
                run()
            _sync(device)
            out.append((time.perf_counter() - start) / inner)
    return statistics.median(times[0]), statistics.median(times[1])


# ---- 1. per-op overhead ------------------------------------------------------------------------
def _chain(x, w, b):
    """y ← (y @ w + b) · 0.5, CHAIN_STEPS times, then a sum: the same code for both frameworks."""
    y = x
    for _ in range(CHAIN_STEPS):
        y = (y @ w + b) * 0.5
    return y.sum()


def bench_overhead(device: str, repeats: int) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((8, 8)).astype(np.float32) * s for s in (1.0, 0.3, 0.1)]
    mg_in = [mg.tensor(a, requires_grad=True, device=device) for a in arrays]
    th_in = [torch.tensor(a, requires_grad=True, device=_torch_device(device)) for a in arrays]

    def run_mg():
        _chain(*mg_in).backward()

    def run_torch():
        _chain(*th_in).backward()

    return _median_pair(run_mg, run_torch, repeats, warmup=20, device=device, inner=50)


def overhead_ratio(device: str = "cpu", repeats: int = 7) -> tuple[float, float]:
    """Microseconds per op of the small-tensor chain: (minigrad, torch). Used by compare.bench."""
    ours, theirs = bench_overhead(device, repeats)
    return ours / CHAIN_OPS * 1e6, theirs / CHAIN_OPS * 1e6


# ---- 2. MLP training step ----------------------------------------------------------------------
def bench_mlp(device: str, repeats: int, batch: int = 256, width: int = 1024,
              profile: bool = False) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    bound = 1 / np.sqrt(width)  # torch's default Linear init range, drawn once for both models
    weights = [(rng.uniform(-bound, bound, (width, width)).astype(np.float32),
                rng.uniform(-bound, bound, width).astype(np.float32)) for _ in range(3)]
    x_np = rng.standard_normal((batch, width)).astype(np.float32)
    y_np = rng.integers(0, width, batch)
    tdev = _torch_device(device)

    mg_layers = [mg.nn.Linear(width, width) for _ in range(3)]
    th_layers = [torch.nn.Linear(width, width, device=tdev) for _ in range(3)]
    with torch.no_grad():
        for (w, b), m, t in zip(weights, mg_layers, th_layers):
            m.weight._data[...], m.bias._data[...] = w, b
            t.weight.copy_(torch.from_numpy(w)), t.bias.copy_(torch.from_numpy(b))
    mg_model = mg.nn.Sequential(mg_layers[0], mg.nn.GELU(), mg_layers[1], mg.nn.GELU(), mg_layers[2])
    mg_model.to(device)
    th_model = torch.nn.Sequential(th_layers[0], torch.nn.GELU(), th_layers[1], torch.nn.GELU(),
                                   th_layers[2])
    mg_opt = mg.optim.AdamW(mg_model.parameters(), lr=1e-4)
    th_opt = torch.optim.AdamW(th_model.parameters(), lr=1e-4)
    mg_x, mg_y = mg.tensor(x_np, device=device), mg.tensor(y_np, device=device)
    th_x, th_y = torch.from_numpy(x_np).to(tdev), torch.from_numpy(y_np).to(tdev)

    def run_mg():
        loss = F.cross_entropy(mg_model(mg_x), mg_y)
        mg_opt.zero_grad()
        loss.backward()
        mg_opt.step()

    def run_torch():
        loss = torch.nn.functional.cross_entropy(th_model(th_x), th_y)
        th_opt.zero_grad()
        loss.backward()
        th_opt.step()

    result = _median_pair(run_mg, run_torch, repeats, warmup=2, device=device)
    if profile:
        with mg.profile() as prof:
            run_mg()
        print(prof)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu (numpy), torch:cpu or cuda")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per measurement (≥ 5)")
    parser.add_argument("--profile", action="store_true", help="also profile one minigrad MLP step")
    parser.add_argument("--threads", type=int, default=None, help="pin minigrad, numpy's BLAS and torch "
                        "to this many threads (default: each one's own default)")
    args = parser.parse_args(argv)
    if args.repeats < 5:
        parser.error("--repeats must be at least 5: a median of fewer runs is too noisy")
    if args.threads is not None:
        mg.set_num_threads(args.threads)
    mg.tensor(0.0, device=args.device)  # fail early, with minigrad's message, on a bad device
    backend = "numpy" if args.device == "cpu" else "torch"
    from compare.bench import thread_counts

    counts = ", ".join(f"{k} {v}" for k, v in thread_counts().items())
    print(f"minigrad ({backend} backend) on {args.device} vs torch {torch.__version__} eager on "
          f"{_torch_device(args.device)}; {os.cpu_count()} cores, threads: {counts}; median of "
          f"{args.repeats} repeats after warm-up")

    a, b = bench_overhead(args.device, args.repeats)
    print(f"per-op overhead, [8,8] float32 chain of {CHAIN_OPS} ops, forward+backward:\n"
          f"  minigrad {a * 1e3:8.3f} ms ({a / CHAIN_OPS * 1e6:5.1f} us/op)   "
          f"torch {b * 1e3:8.3f} ms ({b / CHAIN_OPS * 1e6:5.1f} us/op)   "
          f"ratio {a / b:5.2f}x  (goal <= 1.5x)")
    a, b = bench_mlp(args.device, args.repeats, profile=args.profile)
    print(f"MLP training step, batch 256, 3 x Linear 1024->1024 + GELU, cross-entropy, AdamW:\n"
          f"  minigrad {a * 1e3:8.2f} ms   torch {b * 1e3:8.2f} ms   ratio {a / b:5.2f}x  "
          f"(goal <= 1.2x)")


if __name__ == "__main__":
    main()

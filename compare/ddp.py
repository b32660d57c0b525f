"""Data-parallel scaling of fine-tuning: ``python -m compare.ddp [--nproc 2] [--device cpu]``.

all-MiniLM-L6-v2 fine-tuned on SST-2 (``/work/shared/data/sst2``; synthetic sentences if it is
absent) by ``mini_bert.finetune`` launched as a user launches it: one process (``python -m
mini_bert.finetune``) and N processes (``torchrun --nproc_per_node N -m mini_bert.finetune``), at
the same per-process ``--batch-size``, so N processes take N times the examples per step.

Time per optimizer step = (wall time of a long run − that of a short one) / (difference in steps):
the difference cancels what both runs do once (starting Python and torch, joining the process
group, loading the model, the final evaluation and checkpoint), leaving the steady-state step.

Threads: on CPU the cores are shared out, ``OMP_NUM_THREADS`` = cores for one process and
cores / N for each of N processes (minigrad, BLAS and torch all follow it), so both arms use the
same cores; the table prints the thread count per process. On a machine with 2 cores that compares
2 processes × 1 thread against 1 process × 2 threads: data parallelism cannot add compute there,
it can only trade intra-op threading (idle while Python runs) for a gradient all-reduce. With
``--device cuda`` each process drives one GPU (``cuda:LOCAL_RANK``).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SST2 = "/work/shared/data/sst2"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def synthetic_tsv(path: str, n: int = 2000) -> str:
    """Random sentences of common words, labelled by a word count (the data is not the point)."""
    words = "the a movie film was is great good bad awful not very fun boring and but i it".split()
    rng = np.random.default_rng(0)
    with open(path, "w", encoding="utf-8") as f:
        f.write("sentence\tlabel\n")
        for _ in range(n):
            s = list(rng.choice(words, rng.integers(4, 24)))
            f.write(" ".join(s) + f"\t{int(sum(w in ('good', 'great', 'fun') for w in s) > 1)}\n")
    return path


def run(nproc: int, nthreads: int, steps: int, a: argparse.Namespace, data: dict, tmp: str) -> float:
    """Wall-clock seconds of one fine-tuning run of ``steps`` optimizer steps with ``nproc`` processes
    of ``nthreads`` threads each."""
    out = tempfile.mkdtemp(dir=tmp)
    flags = ["--train", data["train"], "--dev", data["dev"], "--max-train-samples", "4000",
             "--max-dev-samples", "16", "--batch-size", str(a.batch_size), "--max-length", str(a.max_length),
             "--max-steps", str(steps), "--eval-every", str(steps), "--log-every", str(steps),
             "--device", a.device, "--output", out, "--no-progress", "--no-plot"]
    if a.model:
        flags += ["--model", a.model]
    launch = ([sys.executable, "-m", "mini_bert.finetune"] if nproc == 1 else
              [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               "--master_port", str(free_port()), "-m", "mini_bert.finetune"])
    env = {**os.environ, "OMP_NUM_THREADS": str(nthreads), "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    p = subprocess.run(launch + flags, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if p.returncode:
        sys.exit(f"error: {nproc} process(es), {steps} steps failed:\n{p.stderr[-2000:]}")
    assert json.loads(p.stdout)["step"] == steps
    return seconds


def arms(a: argparse.Namespace) -> list[tuple[int, int]]:
    """(processes, threads per process): on CPU, 1 process using every core, 1 process of one thread
    (the unit both others scale from), N processes sharing the cores; on GPUs, 1 and N."""
    if a.device.startswith("cuda"):
        return [(1, 1), (a.nproc, 1)]
    return [(1, a.cores), (1, 1), (a.nproc, max(1, a.cores // a.nproc))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m compare.ddp", description=__doc__.split("\n\n")[0])
    p.add_argument("--nproc", type=int, default=2, help="processes of the data-parallel arm")
    p.add_argument("--device", default="cpu", help="cpu (numpy), torch:cpu or cuda (one GPU per process)")
    p.add_argument("--model", default=None, help="checkpoint directory (default: all-MiniLM-L6-v2)")
    p.add_argument("--batch-size", type=int, default=16, help="per process")
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--steps", type=int, default=24, help="optimizer steps of the long run")
    p.add_argument("--short", type=int, default=4, help="optimizer steps of the short run")
    p.add_argument("--repeats", type=int, default=1, help="long/short pairs per arm, interleaved (median)")
    p.add_argument("--cores", type=int, default=os.cpu_count(), help="CPU cores to share out")
    p.add_argument("--output", default=None, help="also write the markdown report here")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        have_sst2 = os.path.isfile(os.path.join(SST2, "train.tsv"))
        data = ({"train": os.path.join(SST2, "train.tsv"), "dev": os.path.join(SST2, "dev.tsv")} if have_sst2
                else {"train": synthetic_tsv(os.path.join(tmp, "train.tsv")),
                      "dev": synthetic_tsv(os.path.join(tmp, "dev.tsv"), 64)})
        per_step = {arm: [] for arm in arms(a)}
        for _ in range(a.repeats):  # interleaved, so that a change in the machine's load hits every arm
            for n, t in per_step:
                long, short = run(n, t, a.steps, a, data, tmp), run(n, t, a.short, a, data, tmp)
                per_step[n, t].append((long - short) / (a.steps - a.short))
    rows = []
    base = None
    for (n, t), times in per_step.items():
        s = statistics.median(times)
        eps = n * a.batch_size / s
        base = base or eps
        rows.append(f"| {n} | {t} | {a.batch_size} | {n * a.batch_size} | {s:.3f} | {1 / s:.2f} | "
                    f"{eps:.1f} | {eps / base:.2f}x | {', '.join(f'{x:.2f}' for x in times)} |")
    report = "\n".join([
        f"# Data-parallel fine-tuning: 1 vs {a.nproc} processes ({dt.date.today()})", "",
        f"`python -m compare.ddp {' '.join(argv if argv is not None else sys.argv[1:])}`: all-MiniLM-L6-v2 on "
        f"{'SST-2' if have_sst2 else 'synthetic sentences'}, --device {a.device}, max length {a.max_length}, "
        f"steps {a.short}→{a.steps} (time per step from the difference), median of {a.repeats} interleaved "
        f"pair(s); {a.cores} CPU cores shared out as OMP_NUM_THREADS per process.", "",
        "| processes | threads/process | batch/process | global batch | s/step | steps/s | examples/s | "
        "examples/s vs the first row | each s/step measured |",
        "|---|---|---|---|---|---|---|---|---|", *rows, ""])
    print(report)
    if a.output:
        Path(a.output).write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""mini_bert vs HuggingFace transformers, same inputs, same machine, same run: ratios, not absolutes.

    python -m compare.bench [--backends cpu,torch:cpu] [--threads default,1] [--repeats 7]
                            [--shapes 32x128] [--model DIR] [--device cuda] [--save]

For each thread setting (``default``: every framework's own default, i.e. OMP_NUM_THREADS if set,
else one thread per core; ``N``: all pinned to N), one fresh process loads mini_bert on each
backend and HF with eager attention and with its default, ``sdpa``, and times them *interleaved*:
each repeat runs every model once, in a rotating order, so a load spike on a shared machine hits
all of them alike. The ratio mini_bert / HF is taken within each repeat; the table shows the
median of those ratios (at least 7 by default), and the median times beside them:
  forward     eval mode, no graph (minigrad.no_grad / torch.no_grad)
  train step  forward + backward + AdamW step, dropout on, BCE-with-logits on one logit
  GFLOP/s     matmul FLOPs of the forward (and 3x that for a train step) per second, next to the
              machine's sgemm rate measured in the same process (the better of numpy's and torch's)
  peak memory of a train step: the whole-process RSS above the post-load baseline (on CUDA, the
              allocator's peak), each model measured alone in a fresh process.
The thread counts each framework actually used are printed. On --device cuda it uses random
BERT-base-sized weights (the MiniLM checkpoint is too small to load a GPU).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
HF = ("hf-eager", "hf-sdpa")  # HF's attention implementations: the eager math, and its default


def forward_flops(cfg: dict, batch: int, seq: int) -> float:
    """Matmul FLOPs of one encoder forward (2 per multiply-add); elementwise work is not counted."""
    h, inter, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    tokens = batch * seq
    per_layer = 2 * tokens * h * (4 * h + 2 * inter) + 2 * 2 * batch * seq * seq * h
    return float(layers * per_layer)


def sgemm_gflops(device: str) -> float:
    """The machine's float32 matmul rate at the current thread count: the best of numpy's BLAS and
    torch on one large GEMM (best of 5 runs each)."""
    import torch

    dev = "cuda" if device.startswith("cuda") else "cpu"
    n = 4096 if dev == "cuda" else 2048
    ta, tb = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
    na, nb = ta.cpu().numpy(), tb.cpu().numpy()
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    best = float("inf")
    for fn in ((lambda: ta @ tb),) + (() if dev == "cuda" else ((lambda: na @ nb),)):
        fn()
        for _ in range(5):
            sync()
            start = time.perf_counter()
            fn()
            sync()
            best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


def make_inputs(vocab: int, batch: int, seq: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000 if vocab > 2000 else 1, vocab, size=(batch, seq)).astype(np.int64)
    mask = np.ones((batch, seq), dtype=np.int64)
    mask[batch // 2:, seq * 3 // 4:] = 0  # some padding, as in a real batch
    labels = rng.integers(0, 2, size=(batch, 1)).astype(np.float32)
    return ids, mask, labels


def random_base_checkpoint(out: Path) -> Path:
    """A BERT-base-shaped checkpoint with random weights, written by transformers itself."""
    from transformers import BertConfig, BertForSequenceClassification

    BertForSequenceClassification(BertConfig(num_labels=1)).save_pretrained(out)
    return out


# ---- inside a worker process ---------------------------------------------------------------------
def build(name: str, model_dir: str, device: str, batch: int, seq: int):
    """(forward, train_step, sync) for ``name``: "hf-eager", "hf-sdpa" or a minigrad device."""
    ids, mask, labels = make_inputs(json.loads((Path(model_dir) / "config.json").read_text())
                                    ["vocab_size"], batch, seq)
    if name in HF:
        import torch
        from transformers import BertForSequenceClassification

        torch.manual_seed(0)
        dev = "cuda" if device.startswith("cuda") else "cpu"
        sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
        model = BertForSequenceClassification.from_pretrained(
            model_dir, num_labels=1, problem_type="multi_label_classification",
            attn_implementation=name[len("hf-"):]).to(dev)
        x, m, y = (torch.from_numpy(a).to(dev) for a in (ids, mask, labels))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
        grad_off = torch.no_grad
    else:
        import minigrad as mg
        from mini_bert import BertForSequenceClassification

        mg.manual_seed(0)
        model = BertForSequenceClassification.from_pretrained(
            model_dir, device=name, num_labels=1, problem_type="multi_label_classification")
        x, m, y = (mg.tensor(a, device=name) for a in (ids, mask, labels))
        opt = mg.optim.AdamW(model.parameters(), lr=1e-5)
        grad_off = mg.no_grad

        def sync():
            mg.backend.resolve(name)[0].synchronize(name)

    def forward():
        model.eval()
        with grad_off():
            model(x, attention_mask=m).logits

    def train_step():
        model.train()
        opt.zero_grad(set_to_none=True)
        model(x, attention_mask=m, labels=y).loss.backward()
        opt.step()

    return forward, train_step, sync


def thread_counts() -> dict:
    """What each pool actually runs with in this process."""
    import torch

    import minigrad as mg

    counts = {"minigrad": mg.get_num_threads(), "torch": torch.get_num_threads()}
    try:
        from threadpoolctl import threadpool_info

        counts["numpy BLAS"] = max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")
    except (ImportError, ValueError):
        pass
    return counts


def time_interleaved(names: list[str], fns: list, syncs: list, repeats: int) -> dict[str, list[float]]:
    """Seconds per call of each fn, one call of each per repeat, in an order rotated every repeat."""
    for fn, sync in zip(fns, syncs):  # warm-up: first-call allocations, lazy imports, kernel choice
        fn()
        sync()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for k in range(len(names)):
            i = (k + r) % len(names)
            syncs[i]()
            start = time.perf_counter()
            fns[i]()
            syncs[i]()
            times[names[i]].append(time.perf_counter() - start)
    return times


def worker_times(backends: list[str], model_dir: str, device: str, batch: int, seq: int,
                 repeats: int) -> dict:
    names = backends + list(HF)
    built = [build(n, model_dir, device, batch, seq) for n in names]
    out = {"threads": thread_counts(), "sgemm": sgemm_gflops(device)}
    for key, which in (("forward", 0), ("train", 1)):
        out[key] = time_interleaved(names, [b[which] for b in built], [b[2] for b in built], repeats)
    return out


def worker_memory(name: str, model_dir: str, device: str, batch: int, seq: int) -> dict:
    """Train-step peak above the loaded baseline: process RSS (VmHWM, reset first), or on CUDA the
    torch allocator's peak."""
    forward, train_step, sync = build(name, model_dir, device, batch, seq)
    forward()
    sync()
    if device.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        train_step()
        train_step()
        sync()
        return {"peak_mb": (torch.cuda.max_memory_allocated() - base) / 2 ** 20}
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
    except OSError:
        pass
    base = _rss_peak_mb()
    train_step()
    train_step()
    return {"peak_mb": _rss_peak_mb() - base}


def _rss_peak_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def in_subprocess(task: str, args: list, threads: str) -> dict:
    """Run one worker task in a fresh process (its own thread pools, a clean memory baseline).
    ``threads``: "default" leaves the environment alone; a number pins every pool to it."""
    env = dict(os.environ)
    if threads != "default":
        env.update({k: threads for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})
    cmd = [sys.executable, "-m", "compare.bench", "--_worker", json.dumps([task, threads, *args])]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark worker {task} {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_worker(spec: str) -> dict:
    task, threads, *args = json.loads(spec)
    if threads != "default":
        import minigrad as mg

        mg.set_num_threads(int(threads))  # minigrad's pool, numpy's BLAS and torch, all to N
    return worker_times(*args) if task == "times" else worker_memory(*args)


# ---- the report --------------------------------------------------------------------------------
def _median_ratio(ours: list[float], theirs: list[float]) -> float:
    return float(np.median(np.asarray(ours) / np.asarray(theirs)))


def report_rows(backends: list[str], cfg: dict, b: int, t: int, times: dict, memory: dict | None) -> list[str]:
    rows = []
    flops = {"forward": forward_flops(cfg, b, t), "train": 3 * forward_flops(cfg, b, t)}
    for backend in backends:
        label = "numpy" if backend == "cpu" else backend
        for key, what in (("forward", "forward"), ("train", "train step")):
            ours = times[key][backend]
            cells = [f"{np.median(ours) * 1e3:.0f} ms"]
            for hf in HF:
                cells += [f"{np.median(times[key][hf]) * 1e3:.0f} ms",
                          f"**{_median_ratio(ours, times[key][hf]):.2f}**"]
            rows.append(f"| {what} | {label} | {b}x{t} | " + " | ".join(cells) + " |")
        for key, what in (("forward", "forward"), ("train", "train step")):
            rate = [flops[key] / np.median(times[key][n]) / 1e9 for n in (backend, *HF)]
            cells = [f"{rate[0]:.0f} ({rate[0] / times['sgemm'] * 100:.0f}% of peak)"]
            for r in rate[1:]:
                cells += [f"{r:.0f}", f"{rate[0] / r:.2f}"]
            rows.append(f"| {what} GFLOP/s (sgemm {times['sgemm']:.0f}) | {label} | {b}x{t} | "
                        + " | ".join(cells) + " |")
        if memory:
            cells = [f"{memory[backend]:.0f} MB"]
            for hf in HF:
                cells += [f"{memory[hf]:.0f} MB", f"**{memory[backend] / memory[hf]:.2f}**"]
            rows.append(f"| train-step peak memory | {label} | {b}x{t} | " + " | ".join(cells) + " |")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="mini_bert vs HF: forward, train step, memory")
    ap.add_argument("--model", default=None, help="checkpoint dir (default: the packaged MiniLM)")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda (then --backends defaults to cuda)")
    ap.add_argument("--backends", default=None, help="minigrad devices, comma-separated (default "
                    "cpu,torch:cpu: the numpy and the torch backend)")
    ap.add_argument("--threads", default=None, help="thread settings, comma-separated: 'default' and/or "
                    "numbers (default: default,1 on CPU, default on CUDA)")
    ap.add_argument("--shapes", default="32x128", help="comma-separated BxT (e.g. 32x128,8x512)")
    ap.add_argument("--repeats", type=int, default=7, help="interleaved repeats; the ratio is their median")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    ap.add_argument("--save", action="store_true", help="write compare/results/bench-<date>.md")
    ap.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._worker:
        print(json.dumps(run_worker(args._worker)))
        return 0

    cuda = args.device.startswith("cuda")
    backends = (args.backends or ("cuda" if cuda else "cpu,torch:cpu")).split(",")
    settings = (args.threads or ("default" if cuda else "default,1")).split(",")
    for s in settings:
        if s != "default" and not (s.isdigit() and int(s) > 0):
            ap.error(f"--threads: {s!r} is neither 'default' nor a positive integer")
    tmp = tempfile.TemporaryDirectory()
    if args.model:
        model_dir = args.model
    elif cuda:
        model_dir = str(random_base_checkpoint(Path(tmp.name) / "bert-base-random"))
    else:
        from mini_bert import default_model_dir

        model_dir = str(default_model_dir())
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    rows = [f"# mini_bert vs HF transformers ({args.device}), {dt.datetime.now():%Y-%m-%d %H:%M}", "",
            f"model: {Path(model_dir).name} ({cfg['num_hidden_layers']} layers, hidden {cfg['hidden_size']}), "
            f"float32; {os.cpu_count()} CPU cores; torch {__import__('torch').__version__}. Each ratio is "
            f"mini_bert / HF, the median of {args.repeats} ratios from interleaved runs (times: medians).",
            "HF eager computes the same attention math as mini_bert; sdpa is HF's default (a fused kernel)."]
    for threads in settings:
        for i, shape in enumerate(args.shapes.split(",")):
            b, t = (int(v) for v in shape.lower().split("x"))
            times = in_subprocess("times", [backends, model_dir, args.device, b, t, args.repeats], threads)
            memory = None
            if i == 0 and not args.no_memory:
                memory = {n: in_subprocess("memory", [n, model_dir, args.device, b, t], threads)["peak_mb"]
                          for n in backends + list(HF)}
            if i == 0:
                counts = ", ".join(f"{k} {v}" for k, v in times["threads"].items())
                rows += ["", f"## threads: {threads} ({counts})", "",
                         "| figure | backend | BxT | mini_bert | HF eager | ratio | HF sdpa | ratio |",
                         "|---|---|---|---|---|---|---|---|"]
            rows += report_rows(backends, cfg, b, t, times, memory)
    try:
        from compare.bench_engine import overhead_ratio

        ours_us, torch_us = overhead_ratio(backends[0])
        rows += ["", f"Per-op overhead on small tensors (8x8, compare.bench_engine, {backends[0]}): "
                 f"{ours_us:.1f} µs vs torch {torch_us:.1f} µs, ratio {ours_us / torch_us:.2f}."]
    except ImportError:
        pass
    report = "\n".join(rows)
    print(report)
    if args.save:
        tag = "-cuda" if cuda else ""
        out = ROOT / "compare" / "results" / f"bench-{dt.date.today()}{tag}.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report + "\n\nCommand: `python -m compare.bench " +
                       " ".join(a for a in (argv or sys.argv[1:]) if a != "--save") + "`\n")
        print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

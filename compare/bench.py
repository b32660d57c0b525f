"""mini_bert vs HuggingFace transformers, same inputs, same machine, same run: ratios, not absolutes.

    python -m compare.bench [--model DIR] [--device cpu|cuda] [--shapes 32x128,8x512] [--save]

For each batch shape it measures, as the median of --repeats runs after a warm-up:
  forward     eval mode, no graph (minigrad.no_grad / torch.no_grad)
  train step  forward + backward + AdamW step, dropout on, BCE-with-logits on one logit
and for the first shape the peak memory of a train step: the whole-process RSS above the
post-load baseline, each framework measured in a fresh process of its own. It also prints the
forward's achieved GFLOP/s next to the machine's measured sgemm rate, and (from
compare.bench_engine) the per-op overhead on small tensors. On --device cuda it uses random
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


def median_time(fn, repeats: int, sync=lambda: None) -> float:
    fn()  # warm-up: first-call allocations, lazy imports, kernel selection
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def forward_flops(cfg: dict, batch: int, seq: int) -> float:
    """Matmul FLOPs of one encoder forward (2 per multiply-add); elementwise work is not counted."""
    h, inter, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    tokens = batch * seq
    per_layer = 2 * tokens * h * (4 * h + 2 * inter) + 2 * 2 * batch * seq * seq * h
    return float(layers * per_layer)


def sgemm_gflops(device: str) -> float:
    """The machine's float32 matmul rate: one large GEMM through torch, the best of 5."""
    import torch

    dev = "cuda" if device.startswith("cuda") else "cpu"
    n = 4096 if dev == "cuda" else 2048
    a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    best = min(median_time(lambda: a @ b, 1, sync) for _ in range(5))
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


# ---- one framework, one process ----------------------------------------------------------------
def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
    except OSError:
        pass


def run_one(framework: str, model_dir: str, device: str, batch: int, seq: int, repeats: int,
            memory: bool) -> dict:
    ids, mask, labels = make_inputs(json.loads((Path(model_dir) / "config.json").read_text())
                                    ["vocab_size"], batch, seq)
    if framework == "hf":
        import torch
        from transformers import BertForSequenceClassification

        torch.manual_seed(0)
        dev = "cuda" if device.startswith("cuda") else "cpu"
        sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
        model = BertForSequenceClassification.from_pretrained(
            model_dir, num_labels=1, problem_type="multi_label_classification",
            attn_implementation="eager").to(dev)
        t_ids, t_mask = torch.from_numpy(ids).to(dev), torch.from_numpy(mask).to(dev)
        t_labels = torch.from_numpy(labels).to(dev)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)

        def forward():
            model.eval()
            with torch.no_grad():
                model(input_ids=t_ids, attention_mask=t_mask).logits

        def train_step():
            model.train()
            opt.zero_grad(set_to_none=True)
            model(input_ids=t_ids, attention_mask=t_mask, labels=t_labels).loss.backward()
            opt.step()
    else:
        import minigrad as mg
        from mini_bert import BertForSequenceClassification

        mg.manual_seed(0)
        model = BertForSequenceClassification.from_pretrained(
            model_dir, device=device, num_labels=1, problem_type="multi_label_classification")
        m_ids, m_mask = mg.tensor(ids, device=device), mg.tensor(mask, device=device)
        m_labels = mg.tensor(labels, device=device)
        opt = mg.optim.AdamW(model.parameters(), lr=1e-5)

        def sync():
            mg.backend.resolve(device)[0].synchronize(device)

        def forward():
            model.eval()
            with mg.no_grad():
                model(m_ids, attention_mask=m_mask).logits

        def train_step():
            model.train()
            opt.zero_grad(set_to_none=True)
            model(m_ids, attention_mask=m_mask, labels=m_labels).loss.backward()
            opt.step()

    if memory:  # one process, one measurement: train-step peak RSS above the loaded baseline
        forward()
        _reset_peak()
        base = _rss_mb()
        train_step()
        train_step()
        return {"peak_mb": _rss_mb() - base}
    return {"forward_s": median_time(forward, repeats, sync),
            "train_s": median_time(train_step, max(3, repeats // 2), sync)}


def in_subprocess(*args, threads: int | None = None) -> dict:
    """Run one measurement in a fresh process (clean memory baseline, its own thread pools)."""
    cmd = [sys.executable, "-m", "compare.bench", "--_worker", json.dumps(args)]
    env = dict(os.environ)
    if threads:  # the same pinning for numpy's OpenBLAS and torch's OpenMP pools
        env.update({k: str(threads) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                              "MKL_NUM_THREADS")})
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---- the report --------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="mini_bert vs HF: forward, train step, memory")
    ap.add_argument("--model", default=None, help="checkpoint dir (default: the packaged MiniLM)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--shapes", default=None, help="comma-separated BxT (default 32x128,8x512)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None,
                    help="pin BLAS/OpenMP threads in both frameworks (default: each one's own)")
    ap.add_argument("--save", action="store_true", help="write compare/results/bench-<date>.md")
    ap.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._worker:
        print(json.dumps(run_one(*json.loads(args._worker))))
        return 0

    cuda = args.device.startswith("cuda")
    tmp = tempfile.TemporaryDirectory()
    if args.model:
        model_dir = args.model
    elif cuda:
        model_dir = str(random_base_checkpoint(Path(tmp.name) / "bert-base-random"))
    else:
        from mini_bert import default_model_dir

        model_dir = str(default_model_dir())
    shapes = args.shapes or ("32x128" if cuda else "32x128,8x512")
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    if args.threads:
        __import__("torch").set_num_threads(args.threads)
    peak = sgemm_gflops(args.device)
    rows = [f"# mini_bert vs HF transformers ({args.device}), {dt.datetime.now():%Y-%m-%d %H:%M}",
            "", f"model: {Path(model_dir).name} ({cfg['num_hidden_layers']} layers, hidden "
            f"{cfg['hidden_size']}); medians of {args.repeats} runs after warm-up; "
            f"{os.cpu_count()} CPU cores, threads: {args.threads or 'default'}; "
            f"torch {__import__('torch').__version__}", "",
            "| figure | shape | mini_bert | HF | ratio |", "|---|---|---|---|---|"]
    for i, shape in enumerate(shapes.split(",")):
        b, t = (int(v) for v in shape.lower().split("x"))
        ours = in_subprocess("mini_bert", model_dir, args.device, b, t, args.repeats, False,
                             threads=args.threads)
        hf = in_subprocess("hf", model_dir, args.device, b, t, args.repeats, False,
                           threads=args.threads)
        for key, label in (("forward_s", "forward"), ("train_s", "train step")):
            rows.append(f"| {label} | {b}x{t} | {ours[key] * 1e3:.0f} ms | {hf[key] * 1e3:.0f} ms "
                        f"| {ours[key] / hf[key]:.2f} |")
        flops = forward_flops(cfg, b, t)
        rows.append(f"| forward GFLOP/s (sgemm peak {peak:.0f}) | {b}x{t} | "
                    f"{flops / ours['forward_s'] / 1e9:.0f} | {flops / hf['forward_s'] / 1e9:.0f} | "
                    f"{hf['forward_s'] / ours['forward_s']:.2f} |")
        if i == 0:
            mem_ours = in_subprocess("mini_bert", model_dir, args.device, b, t, 1, True,
                                     threads=args.threads)["peak_mb"]
            mem_hf = in_subprocess("hf", model_dir, args.device, b, t, 1, True,
                                   threads=args.threads)["peak_mb"]
            rows.append(f"| train-step peak RSS above baseline | {b}x{t} | {mem_ours:.0f} MB | "
                        f"{mem_hf:.0f} MB | {mem_ours / mem_hf:.2f} |")
    try:
        from compare.bench_engine import overhead_ratio

        ours_us, torch_us = overhead_ratio(args.device)
        rows.append(f"| per-op overhead, small tensors | 8x8 | {ours_us:.1f} µs | {torch_us:.1f} µs "
                    f"| {ours_us / torch_us:.2f} |")
    except ImportError:
        pass
    report = "\n".join(rows)
    print(report)
    if args.save:
        tag = ("-cuda" if cuda else "") + (f"-{args.threads}thread" if args.threads else "")
        out = ROOT / "compare" / "results" / f"bench-{dt.date.today()}{tag}.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report + "\n\nCommand: `python -m compare.bench " +
                       " ".join(a for a in (argv or sys.argv[1:]) if a != "--save") + "`\n")
        print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

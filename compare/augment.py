"""Does data augmentation help low-resource SST-2? With and without each augmentation, same steps.

    python -m compare.augment [--sizes 500,2000] [--seeds 0,1,2] [--methods none,eda,neighbors]
                              [--epochs 1] [--rate 0.1] [--copies 1] [--device cpu]

Every run is ``mini_bert.finetune.train`` (full fine-tuning of all-MiniLM-L6-v2, batch 32, max
length 64) on the first N SST-2 training phrases, evaluated once at the end on the full SST-2
dev set (872 sentences). For each N, every method trains for the same number of optimizer steps,
ceil(epochs·N/32): an augmented run sees the N originals and ``--copies`` augmented copies of
each in that budget, so a gain cannot come from simply training longer. The seed sets the head's
initialisation, the batch order, dropout and the augmentation draws; the N examples are the same
for every seed. Prints and writes (``--out``/results.md) the dev accuracy per seed and its mean ±
standard deviation (sample std, n - 1) per (N, method), with the difference to ``none``.
"""
from __future__ import annotations

import argparse
import json
import math
import os

import numpy as np

from mini_bert.testing import SST2_HINT, shared_sst2_dir

METHODS = ("none", "eda", "neighbors")


def ints(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s.strip()]


def table(rows: list[dict]) -> str:
    """One line per (N, method): per-seed accuracies, mean ± std, and the mean's change vs none."""
    lines = ["| N | method | steps | dev acc per seed | mean ± std | vs none |", "|---|---|---|---|---|---|"]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["n"], r["method"]), []).append(r)
    for (n, method), rs in groups.items():
        acc = np.array([r["accuracy"] for r in rs])
        base = groups.get((n, "none"))
        delta = "" if base is None or method == "none" else \
            f"{acc.mean() - np.mean([r['accuracy'] for r in base]):+.4f}"
        std = acc.std(ddof=1) if len(acc) > 1 else float("nan")
        lines.append(f"| {n} | {method} | {rs[0]['steps']} | {', '.join(f'{a:.4f}' for a in acc)} | "
                     f"{acc.mean():.4f} ± {std:.4f} | {delta} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m compare.augment", description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=ints, default=[500, 2000], help="training-set sizes N")
    p.add_argument("--seeds", type=ints, default=[0, 1, 2])
    p.add_argument("--methods", default="none,eda,neighbors", help=f"comma list of {METHODS}")
    p.add_argument("--epochs", type=float, default=1.0, help="steps = ceil(epochs·N/32), for every method")
    p.add_argument("--rate", type=float, default=0.1, help="--augment-rate")
    p.add_argument("--copies", type=int, default=1, help="--augment-copies")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--device", default="cpu", help="finetune's --device: cpu (numpy), torch:cpu, cuda")
    p.add_argument("--data", default=shared_sst2_dir(), help=f"folder with train.tsv and dev.tsv ({SST2_HINT})")
    p.add_argument("--out", default="runs/augment")
    args = p.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.data is None:
        p.error(f"SST-2 not found ({SST2_HINT}); pass --data")
    if any(m not in METHODS for m in methods):
        p.error(f"--methods: choose from {METHODS}, got {methods}")

    from mini_bert import finetune as FT

    rows = []
    for n in args.sizes:
        steps = math.ceil(args.epochs * n / 32)
        for seed in args.seeds:
            for method in methods:
                aug = {} if method == "none" else dict(augment=method, augment_rate=args.rate,
                                                       augment_copies=args.copies)
                summary = FT.train(FT.TrainConfig(
                    train=os.path.join(args.data, "train.tsv"), dev=os.path.join(args.data, "dev.tsv"),
                    max_train_samples=n, max_steps=steps, batch_size=32, max_length=64, lr=args.lr,
                    eval_every=10**9, log_every=10, seed=seed, progress=False, plot=False, device=args.device,
                    output=os.path.join(args.out, f"{n}-{method}-{seed}"), overwrite=True, **aug))
                rows.append(dict(n=n, method=method, seed=seed, steps=steps,
                                 accuracy=summary["final"]["accuracy"], seconds=round(summary["seconds"])))
                print(json.dumps(rows[-1]), flush=True)
    command = (f"python -m compare.augment --sizes {','.join(map(str, args.sizes))} --seeds "
               f"{','.join(map(str, args.seeds))} --methods {','.join(methods)} --epochs {args.epochs} "
               f"--rate {args.rate} --copies {args.copies} --lr {args.lr} --device {args.device}")
    text = f"{command}\n\n{table(rows)}\n"
    print(text)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.md"), "w", encoding="utf-8") as f:
        f.write(text)
    with open(os.path.join(args.out, "results.json"), "w", encoding="utf-8") as f:
        json.dump({"command": command, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

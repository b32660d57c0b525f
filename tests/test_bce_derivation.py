"""The source article's §4.2: the binary cross-entropy gradient, naive and fused.

For N examples with logits z, ŷ = σ(z) and labels y ∈ {0, 1}, the article writes
    L = −(1/N) Σ [y log ŷ + (1 − y) log(1 − ŷ)],
    ∂L/∂θ = −(1/N) Σ (y/ŷ − (1 − y)/(1 − ŷ)) ∂ŷ/∂θ.
With θ = z, ∂ŷ/∂z = ŷ(1 − ŷ) cancels the bracket's denominators: ∂L/∂z = (σ(z) − y)/N.

Checked here: the naive form (L composed from minigrad's sigmoid, log, mul, sub, mean, the
gradient found by autograd through each), the fused ``binary_cross_entropy_with_logits``, torch
(both forms), and the article's formula evaluated by hand all agree where they are finite; and
the naive form really does break where ŷ saturates in floating point, while the fused one does
not. Then the same through a tiny BERT's one-logit head, against HF.
"""
from __future__ import annotations

import numpy as np
import pytest
from hf_oracle import hf_model, random_batch, randomize, save_hf, tiny_config, torch

import mini_bert as mb
import minigrad as mg
from mini_bert import testing as G
from minigrad.nn import functional as F


def naive_bce(ns, z, y):
    """L on probabilities, composed from primitive ops (the same Tensor methods in both
    libraries, so ``ns`` is not needed; it is there to match ``fused_bce``)."""
    p = z.sigmoid()
    return -(y * p.log() + (1 - y) * (1 - p).log()).mean()


def fused_bce(ns, z, y):
    fn = torch.nn.functional if ns is torch else F
    return fn.binary_cross_entropy_with_logits(z, y)


def grad_of(ns, loss_fn, z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """(L, dL/dz) by the library's autograd, in z's dtype."""
    if ns is torch:
        zt = torch.tensor(z, requires_grad=True)
        loss = loss_fn(torch, zt, torch.tensor(y))
        loss.backward()
        return loss.item(), zt.grad.numpy()
    zm = mg.tensor(z, requires_grad=True)
    loss = loss_fn(mg, zm, mg.tensor(y))
    loss.backward()
    return loss.item(), zm.grad.numpy()


def sigmoid64(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, np.float64)
    return np.exp(-np.logaddexp(0.0, -z))  # 1 / (1 + e^-z) without overflow


def article_formula(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """−(1/N) (y/ŷ − (1 − y)/(1 − ŷ)) · ∂ŷ/∂z, with ∂ŷ/∂z = ŷ(1 − ŷ), written out in float64."""
    p = sigmoid64(z)
    return -(y / p - (1 - y) / (1 - p)) * (p * (1 - p)) / len(z)


# float32: every form is a handful of float32 operations (eps 1.2e-7) from the exact value,
# except that the naive form's 1 − ŷ loses log2(1/(1−ŷ)) bits: relative error up to
# eps·e^|z| = 6.5e-6 at |z| = 4, the largest logit used. 2e-5 covers that 3x over, and a wrong
# derivative (a missing factor, a sign) is O(1) wrong. float64: the same, with eps 2.2e-16.
TOL = {np.float32: dict(rtol=2e-5, atol=1e-9), np.float64: dict(rtol=1e-11, atol=1e-18)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_form_gives_sigmoid_minus_label_over_n(dtype):
    rng = np.random.default_rng(0)
    n = 16
    z = rng.uniform(-4, 4, n).astype(dtype)
    y = (np.arange(n) % 2).astype(dtype)  # both classes, each against logits of both signs
    truth = (sigmoid64(z) - y) / n         # the simplified result, in float64
    # The article's formula by hand agrees with the simplification (float64: only rounding).
    np.testing.assert_allclose(article_formula(z, y), truth, rtol=1e-12, atol=1e-18)
    losses = []
    for ns in (mg, torch):
        for form in (naive_bce, fused_bce):
            loss, g = grad_of(ns, form, z, y)
            assert g.dtype == dtype, (ns.__name__, form.__name__)
            np.testing.assert_allclose(g, truth, **TOL[dtype],
                                       err_msg=f"{ns.__name__} {form.__name__}")
            losses.append(loss)
    exact = np.mean(np.logaddexp(0.0, z.astype(np.float64)) - y * z)  # softplus(z) − y z
    np.testing.assert_allclose(losses, exact, rtol=TOL[dtype]["rtol"])


# Saturation. Near 1 a float has absolute resolution eps/2 (float32: 6e-8, float64: 1.1e-16), so
# σ(z) = 1 − e^-z rounds to exactly 1 once e^-z < eps/2: z > ~17 in float32, ~37 in float64.
# Then 1 − ŷ = 0 and log(1 − ŷ) = −inf: the loss is inf (y = 0) or 0·(−inf) = nan (y = 1), and
# the backward divides by 1 − ŷ = 0 and multiplies by σ'(z) = ŷ(1 − ŷ) = 0, giving nan. Near 0 a
# float keeps relative precision down to ~1e-38 (float32), so σ(−30) ≈ 9e-14 is fine; but σ(−100)
# ≈ 3.7e-44 is subnormal in float32, and 1/ŷ in the backward overflows to inf (y = 1); at −200
# σ underflows to 0 and log(0) = −inf. Each case: (dtype, z, y, does the naive form break?).
SATURATION = [
    (np.float32, 30.0, 0, True), (np.float32, 30.0, 1, True),
    (np.float32, 100.0, 0, True), (np.float32, 100.0, 1, True),
    (np.float32, -30.0, 0, False), (np.float32, -30.0, 1, False),  # ŷ ≈ 9e-14 is representable
    (np.float32, -100.0, 1, True), (np.float32, -200.0, 1, True),
    (np.float64, 30.0, 0, False), (np.float64, 30.0, 1, False),    # float64 postpones ...
    (np.float64, 100.0, 0, True), (np.float64, -800.0, 1, True),   # ... but does not prevent it
]


@pytest.mark.parametrize("dtype, z0, y0, naive_breaks", SATURATION)
def test_naive_form_breaks_at_saturation_fused_does_not(dtype, z0, y0, naive_breaks):
    # One saturated example among ordinary ones: its own gradient entry is what we inspect.
    z = np.array([z0, 0.5, -1.0, 2.0], dtype)
    y = np.array([y0, 1, 0, 1], dtype)
    truth = (sigmoid64(z) - y) / len(z)
    with np.errstate(all="ignore"):
        naive_loss, naive = grad_of(mg, naive_bce, z, y)
        _, torch_naive = grad_of(torch, naive_bce, z, y)
        fused_loss, fused = grad_of(mg, fused_bce, z, y)
    # The fused form is right everywhere: σ(z) − y with no division, its loss finite.
    assert np.isfinite(fused).all() and np.isfinite(fused_loss)
    np.testing.assert_allclose(fused, truth, rtol=TOL[dtype]["rtol"], atol=1e-7 / len(z))
    # The naive form, as the analysis above predicts, and exactly as torch's naive form does.
    wrong = not np.isfinite(naive[0]) or abs(naive[0] - truth[0]) > 0.01 * abs(truth[0]) + 1e-7
    assert wrong == naive_breaks, (naive[0], truth[0])
    # (At z = −100 the losses differ: torch's float32 sigmoid flushes the subnormal σ to 0, so its
    # loss is inf while ours is the correct 25.2; the gradients break either way.)
    assert np.array_equal(np.isfinite(naive), np.isfinite(torch_naive))
    if naive_breaks and dtype == np.float32 and z0 > 0:
        assert np.isnan(naive[0]) and not np.isfinite(naive_loss)  # ŷ = 1 exactly: 0/0 and inf·0
    if not naive_breaks:
        np.testing.assert_allclose(naive, truth, rtol=TOL[dtype]["rtol"], atol=1e-7 / len(z))


# ---- through a BERT's one-logit head --------------------------------------------------------------
@pytest.fixture(scope="module")
def one_logit_bert(tmp_path_factory):
    """A tiny random BERT with a one-logit BCE head (HF's multi_label_classification), dropout 0,
    saved by HF and loaded by us; a padded batch and labels [B, 1]."""
    config = tiny_config(num_labels=1, problem_type="multi_label_classification",
                         hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    hf = randomize(hf_model("BertForSequenceClassification", config), seed=5, std=0.1).train()
    directory = save_hf(hf, tmp_path_factory.mktemp("bce_head"))
    batch = random_batch(config.vocab_size, 2, batch=6, seed=5)
    labels = np.array([[1], [0], [1], [1], [0], [0]], np.float32)
    return hf, directory, batch, labels


def hf_step(hf, batch, labels, bias: float | None = None):
    """HF's loss (its BCEWithLogitsLoss) and backward; returns dL/dz (retained on the logits)."""
    if bias is not None:
        with torch.no_grad():
            hf.classifier.bias.fill_(bias)
    hf.zero_grad()
    out = hf(**{k: torch.tensor(v) for k, v in batch.items()}, labels=torch.tensor(labels))
    out.logits.retain_grad()
    out.loss.backward()
    return out.logits.detach().double().numpy(), out.logits.grad.double().numpy()


def ours_step(directory, batch, labels, naive: bool, bias: float | None = None):
    """Our model's gradients with the fused loss (the model's own) or the naive composite."""
    ours = mb.BertForSequenceClassification.from_pretrained(directory).train()
    if bias is not None:
        ours.classifier.bias._data[...] = bias
    ids, mask, types = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
    if naive:
        naive_bce(mg, ours(ids, mask, types).logits, mg.tensor(labels)).backward()
    else:
        ours(ids, mask, types, labels=labels).loss.backward()
    with mg.no_grad():
        pooled = ours.bert(ids, mask, types).pooler_output.numpy().astype(np.float64)
    return ours, pooled


def test_head_gradient_is_sigmoid_minus_label_vs_hf(one_logit_bert):
    hf, directory, batch, labels = one_logit_bert
    z, dz = hf_step(hf, batch, labels)
    # HF's gradient at the logits is the derivation's (σ(z) − y)/N (float32: a few ulps).
    np.testing.assert_allclose(dz, (sigmoid64(z) - labels) / len(z), rtol=1e-6, atol=1e-9)
    for naive in (False, True):
        ours, pooled = ours_step(directory, batch, labels, naive)
        # The head is z = pooled·wᵀ + b, so dL/dw = Σ_i dL/dz_i pooled_i and dL/db = Σ_i dL/dz_i:
        # with dL/dz from the formula, in float64.
        np.testing.assert_allclose(ours.classifier.weight.grad.numpy(), dz.T @ pooled,
                                   rtol=1e-5, atol=1e-8)
        np.testing.assert_allclose(ours.classifier.bias.grad.numpy(), dz.sum(0), rtol=1e-5, atol=1e-8)
        # And every parameter below the head, against HF, by mini_bert.testing's rule.
        bad = [r.name for r in G.compare_gradients(ours, hf) if not r.ok]
        assert not bad, (naive, bad)


def test_saturated_head_naive_nan_fused_matches_hf(one_logit_bert):
    """A head bias of +40 pushes every logit to σ(z) = 1 in float32 (see SATURATION above)."""
    hf, directory, batch, labels = one_logit_bert
    saved = hf.classifier.bias.detach().clone()
    try:
        z, dz = hf_step(hf, batch, labels, bias=40.0)
        assert (np.float32(sigmoid64(z)) == 1).all()  # saturated in float32
        fused, _ = ours_step(directory, batch, labels, naive=False, bias=40.0)
        # σ(z) − y = 1 − y exactly in float32, so dL/db = mean(1 − y), as HF has it.
        np.testing.assert_allclose(fused.classifier.bias.grad.numpy(), dz.sum(0), rtol=1e-6)
        np.testing.assert_allclose(dz.sum(0), (1 - labels).mean(0), rtol=1e-6)
        assert not [r.name for r in G.compare_gradients(fused, hf) if not r.ok]
        with np.errstate(all="ignore"):
            naive, _ = ours_step(directory, batch, labels, naive=True, bias=40.0)
        # The naive loss's nan reaches every parameter through the backward pass (all of each
        # gradient, except embedding rows of ids absent from the batch, which get nothing).
        grads = {n: p.grad.numpy() for n, p in naive.named_parameters()}
        assert all(np.isnan(g).any() for g in grads.values())
        assert np.isnan(grads["classifier.weight"]).all() and np.isnan(grads["classifier.bias"]).all()
    finally:
        with torch.no_grad():  # leave the module-scoped model as it was
            hf.classifier.bias.copy_(saved)

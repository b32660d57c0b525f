"""FGM and PGD (mini_bert.adversarial) against the same recipes written here in torch on HF's
BertForSequenceClassification (same weights, same batch, dropout off), plus the geometry:
the perturbation is ε g/‖g‖ (FGM) or stays in the ε-ball (PGD), and the embeddings come back
as the very same array (bit for bit).
"""
from __future__ import annotations

import numpy as np
import pytest
from hf_oracle import hf_model, max_abs, random_batch, randomize, save_hf, tiny_config, torch

import mini_bert as mb
import minigrad as mg

LABELS = np.array([0, 2, 1, 2])
# float64: the same math on both sides with ~1e-16 rounding; 1e-10 leaves ~1e6x headroom and is
# still far below the O(1e-3) effect of the perturbation on any gradient. float32: values and
# gradients O(1) through 2 layers, measured ~1e-6 apart; 2e-5 leaves margin.
TOL = {mg.float64: 1e-10, mg.float32: 2e-5}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    hf = randomize(hf_model("BertForSequenceClassification",
                            tiny_config(num_labels=3, hidden_dropout_prob=0.0,
                                        attention_probs_dropout_prob=0.0)))
    return save_hf(hf, tmp_path_factory.mktemp("adv"))


def pair(checkpoint: str, dtype):
    import transformers

    ours = mb.BertForSequenceClassification.from_pretrained(checkpoint).to(dtype=dtype)
    hf = transformers.BertForSequenceClassification.from_pretrained(
        checkpoint, attn_implementation="eager").eval()
    return ours, (hf.double() if dtype == mg.float64 else hf)


def batch_for(seed: int = 0) -> dict:
    return random_batch(97, 2, batch=4, seq=9, seed=seed)


# ---- the torch oracle: the usual FGM / PGD recipe for BERT fine-tuning ----------------------------
def torch_loss(hf, batch, scale: float = 1.0):
    return hf(**{k: torch.tensor(v) for k, v in batch.items()}, labels=torch.tensor(LABELS)).loss * scale


def torch_fgm(hf, batch, eps: float, scale: float = 1.0):
    emb = hf.bert.embeddings.word_embeddings.weight
    torch_loss(hf, batch, scale).backward()
    backup = emb.data.clone()
    emb.data.add_(eps * emb.grad / torch.norm(emb.grad))
    torch_loss(hf, batch, scale).backward()
    emb.data = backup


def torch_pgd(hf, batch, eps: float, alpha: float, steps: int):
    emb = hf.bert.embeddings.word_embeddings.weight
    params = [p for p in hf.parameters() if p.requires_grad]
    torch_loss(hf, batch).backward()
    clean = [p.grad.clone() for p in params]
    backup = emb.data.clone()
    for t in range(steps):
        emb.data.add_(alpha * emb.grad / torch.norm(emb.grad))
        r = emb.data - backup
        if torch.norm(r) > eps:
            r = eps * r / torch.norm(r)
        emb.data = backup + r
        if t < steps - 1:
            hf.zero_grad()
        else:
            for p, g in zip(params, clean):
                p.grad = g
        torch_loss(hf, batch).backward()
    emb.data = backup


def assert_grads_match(ours, hf, tol: float) -> None:
    theirs = dict(hf.named_parameters())
    for name, p in ours.named_parameters():
        ref = theirs[name].grad
        assert max_abs(p.grad, ref) <= tol * max(1.0, float(ref.abs().max())), name


def ours_loss(model, batch, scale: float = 1.0):
    return model(**batch, labels=LABELS).loss * scale


# ---- tests ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [mg.float64, mg.float32])
def test_fgm_gradient_matches_torch(checkpoint, dtype):
    ours, hf = pair(checkpoint, dtype)
    batch = batch_for()
    emb = ours.bert.embeddings.word_embeddings.weight
    original = emb.data
    kept = original.copy()
    mb.FGM(ours, eps=0.5).backward(ours_loss(ours, batch), lambda: ours_loss(ours, batch))
    assert emb.data is original and np.array_equal(emb.data, kept)  # restored bit for bit
    torch_fgm(hf, batch, eps=0.5)
    assert_grads_match(ours, hf, TOL[dtype])

    # The adversarial term is really there: the clean gradient alone is far from the sum.
    clean, _ = pair(checkpoint, dtype)
    ours_loss(clean, batch).backward()
    w = "bert.encoder.layer.0.attention.self.query.weight"
    assert max_abs(dict(clean.named_parameters())[w].grad,
                   dict(ours.named_parameters())[w].grad) > 1e3 * TOL[dtype]


@pytest.mark.parametrize("dtype", [mg.float64, mg.float32])
def test_pgd_gradient_matches_torch(checkpoint, dtype):
    ours, hf = pair(checkpoint, dtype)
    batch = batch_for(1)
    emb = ours.bert.embeddings.word_embeddings.weight
    original, kept = emb.data, emb.data.copy()
    # eps < 2·alpha: from the second step on, the projection is active.
    mb.PGD(ours, eps=0.5, alpha=0.3, steps=3).backward(ours_loss(ours, batch),
                                                        lambda: ours_loss(ours, batch))
    assert emb.data is original and np.array_equal(emb.data, kept)
    torch_pgd(hf, batch, eps=0.5, alpha=0.3, steps=3)
    assert_grads_match(ours, hf, TOL[dtype])


def test_fgm_perturbation_is_eps_along_the_gradient(checkpoint):
    ours, hf = pair(checkpoint, mg.float64)
    batch = batch_for(2)
    emb = ours.bert.embeddings.word_embeddings.weight
    original = emb.data.copy()
    fgm = mb.FGM(ours, eps=0.7)
    ours_loss(ours, batch).backward()
    fgm.attack()
    r = emb.numpy() - original
    torch_loss(hf, batch).backward()
    g = hf.bert.embeddings.word_embeddings.weight.grad.numpy()
    # float64: r = (E + c g) - E loses only the last bits of E (|E| ~ 0.2): ~1e-17 absolute.
    assert np.abs(r - 0.7 * g / np.linalg.norm(g)).max() < 1e-12
    assert abs(np.linalg.norm(r) - 0.7) < 1e-12
    assert not r[0].any()  # the [PAD] row (padding_idx) gets no gradient, hence no perturbation
    fgm.restore()
    assert np.array_equal(emb.data, original)


def test_pgd_stays_in_the_eps_ball(checkpoint):
    ours, _ = pair(checkpoint, mg.float64)
    emb = ours.bert.embeddings.word_embeddings.weight
    original = emb.data
    pgd = mb.PGD(ours, eps=0.2, alpha=0.5, steps=4)   # every step overshoots the ball
    batch = batch_for(3)
    norms = []
    for t in range(4):
        ours.zero_grad()
        ours_loss(ours, batch).backward()
        pgd.attack(first=t == 0)
        norms.append(np.linalg.norm(emb.data - original))
    assert np.allclose(norms, 0.2, rtol=0, atol=1e-12), norms  # projected onto the sphere
    pgd.restore()
    assert emb.data is original


def test_accumulated_micro_batches_each_see_their_own_gradient(checkpoint):
    """With gradient accumulation, each micro-batch's attack uses that micro-batch's gradient
    (not the running sum), and the grads add up: sum over micro-batches of clean + adversarial."""
    ours, hf = pair(checkpoint, mg.float64)
    fgm = mb.FGM(ours, eps=0.5)
    for seed in (4, 5):
        b = batch_for(seed)
        fgm.backward(ours_loss(ours, b, 0.5), lambda b=b: ours_loss(ours, b, 0.5))
    total = {}
    for seed in (4, 5):
        hf.zero_grad()
        torch_fgm(hf, batch_for(seed), eps=0.5, scale=0.5)
        for n, p in hf.named_parameters():
            total[n] = total.get(n, 0) + p.grad.clone()
    for n, p in hf.named_parameters():
        p.grad = total[n]
    assert_grads_match(ours, hf, TOL[mg.float64])


def test_frozen_embeddings_are_refused(checkpoint):
    ours, _ = pair(checkpoint, mg.float32)
    mb.apply_lora(ours)
    with pytest.raises(ValueError, match="word_embeddings.*frozen"):
        mb.FGM(ours)
    with pytest.raises(ValueError, match="no parameter"):
        mb.PGD(ours, emb_name="nonexistent")

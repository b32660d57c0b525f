"""Masked language modelling (mini_bert.mlm) against HF: the fill-mask pipeline on the same
checkpoint, and BertForMaskedLM's loss and every gradient on the same masked batch; the masking
statistics of BERT's 15% / 80-10-10 recipe on a large batch.

The checkpoint is a small random BertForMaskedLM made by transformers with the real MiniLM
vocabulary (30522 word pieces), so that the sentences are real text; all-MiniLM-L6-v2 itself
ships no MLM head.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from hf_oracle import hf_model, max_abs, randomize, tiny_config, torch, transformers

import mini_bert as mb
import minigrad as mg

SENTENCES = ["The capital of France is [MASK].", "I [MASK] this movie, it was [MASK] good!"]


@pytest.fixture(scope="module")
def mlm_dir(tmp_path_factory) -> str:
    try:
        vocab_dir = mb.default_model_dir()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    directory = tmp_path_factory.mktemp("mlm")
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(f"{vocab_dir}/{name}", directory)
    hf = randomize(hf_model("BertForMaskedLM", tiny_config(vocab_size=30522, hidden_dropout_prob=0.0,
                                                            attention_probs_dropout_prob=0.0)))
    hf.save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="module")
def tokenizer(mlm_dir):
    return mb.BertTokenizer.from_pretrained(mlm_dir)


@pytest.mark.parametrize("text", SENTENCES)
def test_fill_mask_equals_hf_pipeline(mlm_dir, tokenizer, text):
    model = mb.BertForMaskedLM.from_pretrained(mlm_dir)
    ours = mb.fill_mask(model, tokenizer, text, top_k=5)
    pipe = transformers.pipeline("fill-mask", model=mlm_dir, tokenizer=mlm_dir, device="cpu")
    theirs = pipe(text, top_k=5)
    if isinstance(theirs[0], dict):  # one mask: a flat list; several: one list per mask
        ours, theirs = [ours], [theirs]
    assert len(ours) == len(theirs) == text.count("[MASK]")
    for row_ours, row_theirs in zip(ours, theirs):
        assert [d["token"] for d in row_ours] == [d["token"] for d in row_theirs]
        assert [d["token_str"] for d in row_ours] == [d["token_str"] for d in row_theirs]
        assert [d["sequence"] for d in row_ours] == [d["sequence"] for d in row_theirs]
        # Probabilities of a 30522-way float32 softmax (largest ~1e-2): the logits agree to ~1e-6,
        # so the probabilities to ~1e-6 relative; 1e-4 relative leaves margin.
        np.testing.assert_allclose([d["score"] for d in row_ours],
                                   [d["score"] for d in row_theirs], rtol=1e-4)
        assert [d["score"] for d in row_ours] == sorted((d["score"] for d in row_ours), reverse=True)


def test_fill_mask_needs_a_mask(mlm_dir, tokenizer):
    with pytest.raises(ValueError, match=r"no \[MASK\]"):
        mb.fill_mask(mb.BertForMaskedLM.from_pretrained(mlm_dir), tokenizer, "no mask here")


def big_batch(tokenizer, n: int = 64, seed: int = 0):
    """n rows of [CLS] random words [SEP] [PAD]... of random lengths (ids of real word pieces)."""
    rng = np.random.default_rng(seed)
    special = set(tokenizer.all_special_ids)
    words = np.array([i for i in range(1000, len(tokenizer)) if i not in special])
    ids = np.full((n, 128), tokenizer.pad_token_id)
    mask = np.zeros_like(ids)
    for row, length in enumerate(rng.integers(20, 127, n)):
        ids[row, :length + 1] = [tokenizer.cls_token_id, *rng.choice(words, length - 1),
                                 tokenizer.sep_token_id]
        mask[row, :length + 1] = 1
    return ids, mask


def test_masking_statistics(tokenizer):
    ids, attention = big_batch(tokenizer)
    masked, labels = mb.mask_tokens(ids, tokenizer, attention, rng=np.random.default_rng(1))
    special = np.isin(ids, tokenizer.all_special_ids) | (attention == 0)
    picked = labels != -100
    assert not (picked & special).any(), "special tokens and padding are never picked"
    assert np.array_equal(labels[picked], ids[picked]) and (labels[~picked] == -100).all()
    assert np.array_equal(masked[~picked], ids[~picked]), "unpicked tokens are left alone"

    # Binomial counts: each bound is 5 standard deviations, so a correct sampler fails ~1e-6 of
    # the time, while a wrong rate (e.g. 10% instead of 15%, or 50/25/25) is far outside it.
    def within(count: int, n: int, p: float) -> bool:
        return abs(count - n * p) < 5 * np.sqrt(n * p * (1 - p))

    n_real, n_picked = int((~special).sum()), int(picked.sum())
    assert n_real > 3000
    assert within(n_picked, n_real, 0.15), n_picked / n_real
    is_mask = picked & (masked == tokenizer.mask_token_id)
    unchanged = picked & (masked == ids)
    assert within(int(is_mask.sum()), n_picked, 0.8)
    assert within(int(unchanged.sum()), n_picked, 0.1)  # (+ a random draw hitting itself: 1/V)
    assert within(int((picked & ~is_mask & ~unchanged).sum()), n_picked, 0.1)

    again, _ = mb.mask_tokens(ids, tokenizer, attention, rng=np.random.default_rng(1))
    other, _ = mb.mask_tokens(ids, tokenizer, attention, rng=np.random.default_rng(2))
    assert np.array_equal(again, masked) and not np.array_equal(other, masked)


@pytest.mark.parametrize("dtype", [mg.float64, mg.float32])
def test_loss_and_every_gradient_match_hf(mlm_dir, tokenizer, dtype):
    ids, attention = big_batch(tokenizer, n=4, seed=1)
    ids, attention = ids[:, :40], attention[:, :40]
    types = np.zeros_like(ids)
    ours = mb.BertForMaskedLM.from_pretrained(mlm_dir).to(dtype=dtype)
    loss, masked = mb.mlm_loss(ours, tokenizer, ids, attention, types, rng=3)
    loss.backward()
    hf = transformers.BertForMaskedLM.from_pretrained(mlm_dir, attn_implementation="eager").eval()
    if dtype == mg.float64:
        hf.double()
    out = hf(input_ids=torch.tensor(masked["input_ids"]), attention_mask=torch.tensor(attention),
             token_type_ids=torch.tensor(types), labels=torch.tensor(masked["labels"]))
    out.loss.backward()
    # float64: identical math, ~1e-16 rounding -> 1e-10. float32: a 30522-way log-softmax and
    # O(1) activations; measured ~1e-6 on the loss and gradients; 2e-5 leaves margin.
    tol = 1e-10 if dtype == mg.float64 else 2e-5
    assert abs(loss.item() - out.loss.item()) < tol
    theirs = dict(hf.named_parameters())
    names = [n for n, _ in ours.named_parameters()]
    assert sorted(names) == sorted(theirs), "the same parameters (tied ones listed once)"
    for name, p in ours.named_parameters():
        ref = theirs[name].grad
        assert max_abs(p.grad, ref) <= tol * max(1.0, float(ref.abs().max())), name


def test_mlm_loss_refuses_a_batch_with_nothing_to_predict(tokenizer):
    ids = np.array([[tokenizer.cls_token_id, tokenizer.sep_token_id]])
    cfg = mb.BertConfig.from_dict(tiny_config(vocab_size=len(tokenizer)).to_dict())
    with pytest.raises(ValueError, match="no token was picked"):
        mb.mlm_loss(mb.BertForMaskedLM(cfg), tokenizer, ids, rng=0)

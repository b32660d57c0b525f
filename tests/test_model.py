"""mini_bert.model against HF transformers, computed in the same test.

Two kinds of check on every model:
  * float64 (ours .to(float64) vs HF .double()): both compute the same math with ~1e-16 rounding,
    so any real difference (a wrong mask, eps, activation, residual) shows far above 1e-10.
  * float32, the precision we run in: bounded by what float32 itself can do, justified per test.
"""
from __future__ import annotations

import csv
import re

import numpy as np
import pytest
from hf_oracle import (as_numpy, hf_forward, hf_model, max_abs, random_batch, randomize, save_bin,
                       save_hf, tiny_config, torch, transformers)

import mini_bert as mb
import minigrad as mg
from mini_bert.testing import shared_sst2_dir, within_bound

SST2 = shared_sst2_dir()
FLOAT64_TOL = 1e-10  # measured ~1e-13 on MiniLM: 1000x headroom, still 1e5x below any real bug
# Random BERTs (values O(1) after each LayerNorm, 1-4 layers): measured float32 differences are
# ~1e-6 (a few ulps of O(1) numbers, grown over the layers); 1e-5 leaves margin without hiding bugs.
FLOAT32_TOL = 1e-5


def ours_forward(model, batch: dict, **kwargs):
    with mg.no_grad():
        return model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], **kwargs)


# ---- the real all-MiniLM-L6-v2 on a padded SST-2 batch -------------------------------------------
@pytest.fixture(scope="module")
def minilm_dir() -> str:
    try:
        return mb.default_model_dir()
    except FileNotFoundError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def sst2_batch(minilm_dir) -> dict:
    if SST2 is None:
        pytest.skip("SST-2 data not found (mini_bert.testing.shared_sst2_dir)")
    with open(SST2 / "dev.tsv", encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    sentences = [r[0] for r in rows[1:17]]
    tokenizer = mb.BertTokenizer.from_pretrained(minilm_dir)
    enc = tokenizer(sentences, padding=True, return_tensors="np")
    batch = {k: np.asarray(enc[k], np.int64) for k in ("input_ids", "attention_mask",
                                                         "token_type_ids")}
    assert batch["attention_mask"].min() == 0, "the batch should contain padding"
    return batch


@pytest.fixture(scope="module")
def minilm_runs(minilm_dir, sst2_batch) -> dict:
    """HF and ours, float32 and float64, all outputs, on the same batch."""
    hf = transformers.BertModel.from_pretrained(minilm_dir, attn_implementation="eager").eval()
    ours = mb.BertModel.from_pretrained(minilm_dir)
    runs, outputs = {}, dict(output_hidden_states=True, output_attentions=True)
    for name in ("32", "64"):
        if name == "64":
            hf.double()
            ours.to(dtype=mg.float64)
        runs["hf" + name] = hf_forward(hf, sst2_batch, **outputs)
        runs["ours" + name] = ours_forward(ours, sst2_batch, **outputs)
    return runs


def test_minilm_float64_matches_hf_exactly(minilm_runs):
    ours, hf = minilm_runs["ours64"], minilm_runs["hf64"]
    assert len(ours.hidden_states) == len(hf.hidden_states) == 7  # embeddings + 6 layers
    for i, (a, b) in enumerate(zip(ours.hidden_states, hf.hidden_states)):
        assert max_abs(a, b) < FLOAT64_TOL, f"hidden state {i}"
    for i, (a, b) in enumerate(zip(ours.attentions, hf.attentions)):
        assert max_abs(a, b) < FLOAT64_TOL, f"attention {i}"
    assert max_abs(ours.pooler_output, hf.pooler_output) < FLOAT64_TOL


def test_minilm_float32_matches_hf(minilm_runs, sst2_batch):
    ours, hf, exact = minilm_runs["ours32"], minilm_runs["hf32"], minilm_runs["hf64"]
    real = sst2_batch["attention_mask"].astype(bool)
    for i, (a, b, c) in enumerate(zip(ours.hidden_states, hf.hidden_states, exact.hidden_states)):
        a, b, c = as_numpy(a), as_numpy(b), as_numpy(c)
        # Real tokens: measured <= 5e-6 (values up to ~10, float32 ulp ~1e-6 there).
        assert np.abs(a - b)[real].max() < 1e-5, f"hidden state {i}, real tokens"
        # Padding positions are outputs nobody reads, and float32 is poorer there: HF's own
        # float32 result is ~1.4e-4 from the float64 one. Require ours to be no less accurate
        # than HF float32 (vs float64 truth), up to a factor 2 for the differing rounding order.
        ours_err, hf_err = np.abs(a - c).max(), np.abs(b - c).max()
        assert ours_err <= 2 * hf_err + 1e-6, f"hidden state {i}: {ours_err} vs HF's {hf_err}"
    assert max_abs(ours.pooler_output, hf.pooler_output) < 1e-5  # measured ~3e-7
    for i, (a, b) in enumerate(zip(ours.attentions, hf.attentions)):
        # Probabilities in [0, 1]; rows of real query tokens, as above.
        assert np.abs(as_numpy(a) - as_numpy(b)).transpose(0, 2, 1, 3)[real].max() < 1e-5, i


def test_minilm_classifier_logits_match_hf(minilm_dir, sst2_batch, tmp_path):
    """A classification head on MiniLM: HF initialises it, saves; we load the saved model."""
    torch.manual_seed(0)
    hf = transformers.BertForSequenceClassification.from_pretrained(
        minilm_dir, num_labels=3, attn_implementation="eager").eval()
    save_hf(hf, tmp_path)
    ours = mb.BertForSequenceClassification.from_pretrained(tmp_path)
    assert ours.config.num_labels == 3
    # logits are a 384 -> 3 projection of the pooled vector (|pooled| <= 1, error ~3e-7).
    assert max_abs(ours_forward(ours, sst2_batch).logits, hf_forward(hf, sst2_batch).logits) < 1e-5


def test_sentence_embeddings_match_hf_recipe(minilm_dir, minilm_runs, sst2_batch):
    """all-MiniLM-L6-v2's sentence vector: mean of the real tokens' vectors, L2-normalised
    (its modules.json: Transformer -> Pooling(mean) -> Normalize), the recipe written in torch."""
    ours = mb.l2_normalize(mb.mean_pooling(minilm_runs["ours32"].last_hidden_state,
                                           sst2_batch["attention_mask"]))
    h = minilm_runs["hf32"].last_hidden_state
    m = torch.tensor(sst2_batch["attention_mask"], dtype=h.dtype)[:, :, None]
    theirs = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1)
    cosine = (as_numpy(ours) * as_numpy(theirs)).sum(-1)
    assert cosine.min() >= 0.99999
    assert max_abs(ours, theirs) < 1e-6  # unit vectors of real-token averages (error ~5e-6 / 8)


def test_sentence_embeddings_match_sentence_transformers(minilm_dir, sst2_batch):
    st = pytest.importorskip("sentence_transformers")  # not installed here: needs scikit-learn
    model = st.SentenceTransformer(minilm_dir, device="cpu")
    tokenizer = mb.BertTokenizer.from_pretrained(minilm_dir)
    texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids in sst2_batch["input_ids"]]
    enc = tokenizer(texts, padding=True, return_tensors="np")
    with mg.no_grad():
        hidden = mb.BertModel.from_pretrained(minilm_dir)(enc["input_ids"], enc["attention_mask"])
    ours = as_numpy(mb.l2_normalize(mb.mean_pooling(hidden.last_hidden_state,
                                                    enc["attention_mask"])))
    theirs = model.encode(texts, normalize_embeddings=False)
    assert (ours * theirs).sum(-1).min() >= 0.99999


# ---- random BERTs of several shapes --------------------------------------------------------------
SHAPES = {
    "base-like": dict(),
    "wide-gelu_new": dict(hidden_size=48, num_attention_heads=3, num_hidden_layers=3,
                          vocab_size=211, type_vocab_size=3, hidden_act="gelu_new", num_labels=5),
    "relu-1type": dict(hidden_size=64, num_attention_heads=8, num_hidden_layers=1, vocab_size=50,
                       type_vocab_size=1, hidden_act="relu", intermediate_size=128),
    "deep-tanh-regression": dict(hidden_size=24, num_attention_heads=2, num_hidden_layers=4,
                                 vocab_size=130, hidden_act="gelu_pytorch_tanh",
                                 layer_norm_eps=1e-5, num_labels=1),
}


def legacy_bin(hf, directory) -> str:
    """A pytorch_model.bin as old TF-converted checkpoints were: LayerNorm gamma/beta and the
    saved position_ids buffer."""
    state = {}
    for k, v in hf.state_dict().items():
        for new, old in (("weight", "gamma"), ("bias", "beta")):
            k = k.replace(f"LayerNorm.{new}", f"LayerNorm.{old}")
        state[k] = v.clone()
    state["bert.embeddings.position_ids"] = torch.arange(hf.config.max_position_embeddings)[None]
    return save_bin(state, directory, hf.config)


@pytest.mark.parametrize("fmt", ["safetensors", "bin", "legacy-bin"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_random_bert_matches_hf(shape, fmt, tmp_path):
    config = tiny_config(**SHAPES[shape])
    hf = randomize(hf_model("BertForSequenceClassification", config), seed=len(shape))
    if fmt == "legacy-bin":
        legacy_bin(hf, tmp_path)
    else:
        save_hf(hf, tmp_path, safe=fmt == "safetensors")
    ours = mb.BertForSequenceClassification.from_pretrained(tmp_path)
    batch = random_batch(config.vocab_size, config.type_vocab_size, seed=len(shape))

    for dtype, tol in ((None, FLOAT32_TOL), (torch.float64, FLOAT64_TOL)):
        if dtype is not None:
            hf.double()
            ours.to(dtype=mg.float64)
        a = ours_forward(ours, batch, output_hidden_states=True, output_attentions=True)
        b = hf_forward(hf, batch, output_hidden_states=True, output_attentions=True)
        assert len(a.hidden_states) == config.num_hidden_layers + 1
        pairs = zip(a.hidden_states + a.attentions, b.hidden_states + b.attentions)
        for i, (x, y) in enumerate(pairs):
            assert max_abs(x, y) < tol, f"hidden state / attention {i}"
        assert max_abs(a.logits, b.logits) < tol


def test_three_dimensional_mask_matches_hf(tmp_path):
    """A [B, T, T] mask (query i may see key j); HF 5 takes it as a 4-D additive mask."""
    config = tiny_config()
    hf = randomize(hf_model("BertModel", config))
    save_hf(hf, tmp_path)
    batch = random_batch(config.vocab_size, 2, batch=2, seq=7, seed=3)
    rng = np.random.default_rng(3)
    mask3 = (rng.random((2, 7, 7)) < 0.6) | np.eye(7, dtype=bool)  # every query sees itself
    mask3 = mask3.astype(np.int64)
    keep = torch.tensor(mask3, dtype=torch.float32)[:, None]
    additive = (1.0 - keep) * torch.finfo(torch.float32).min
    with torch.no_grad():
        theirs = hf(torch.tensor(batch["input_ids"]), attention_mask=additive,
                    token_type_ids=torch.tensor(batch["token_type_ids"]))
    ours = ours_forward(mb.BertModel.from_pretrained(tmp_path), dict(batch, attention_mask=mask3))
    assert max_abs(ours.last_hidden_state, theirs.last_hidden_state) < FLOAT32_TOL


def test_masked_lm_logits_and_loss_match_hf(tmp_path):
    config = tiny_config(vocab_size=120)
    hf = randomize(hf_model("BertForMaskedLM", config), seed=5)
    save_hf(hf, tmp_path)  # HF 5 does not store the tied decoder weight: we must re-tie it
    ours = mb.BertForMaskedLM.from_pretrained(tmp_path)
    assert ours.cls.predictions.decoder.weight is ours.bert.embeddings.word_embeddings.weight
    batch = random_batch(config.vocab_size, 2, seed=5)
    labels = np.where(np.random.default_rng(5).random(batch["input_ids"].shape) < 0.3,
                      batch["input_ids"], -100)
    a = ours_forward(ours, batch, labels=labels)
    b = hf_forward(hf, dict(batch, labels=labels))
    # Logits here reach ~|10| (std-0.2 weights): float32 ulp there is ~1e-6, so scale the bound.
    scale = max(1.0, float(np.abs(as_numpy(b.logits)).max()))
    assert max_abs(a.logits, b.logits) < FLOAT32_TOL * scale
    assert abs(a.loss.item() - b.loss.item()) < FLOAT32_TOL * max(1.0, b.loss.item())


LOSS_CASES = {  # (num_labels, problem_type in config, labels maker)
    "regression-inferred": (1, None, lambda r: r.normal(size=3).astype(np.float32)),
    "regression-multi": (3, "regression", lambda r: r.normal(size=(3, 3)).astype(np.float32)),
    "single-label-inferred": (3, None, lambda r: r.integers(0, 3, size=3)),
    "single-label-explicit": (3, "single_label_classification", lambda r: r.integers(0, 3, size=3)),
    "multi-label-inferred": (3, None, lambda r: (r.random((3, 3)) < 0.5).astype(np.float32)),
    "multi-label-explicit": (2, "multi_label_classification",
                             lambda r: (r.random((3, 2)) < 0.5).astype(np.float32)),
}


@pytest.mark.parametrize("case", list(LOSS_CASES))
def test_classification_losses_match_hf(case, tmp_path):
    num_labels, problem_type, make_labels = LOSS_CASES[case]
    config = tiny_config(num_labels=num_labels, problem_type=problem_type)
    hf = randomize(hf_model("BertForSequenceClassification", config), seed=7)
    save_hf(hf, tmp_path)
    ours = mb.BertForSequenceClassification.from_pretrained(tmp_path)
    batch = random_batch(config.vocab_size, 2, seed=7)
    labels = make_labels(np.random.default_rng(7))
    a = ours_forward(ours, batch, labels=labels)
    b = hf_forward(hf, dict(batch, labels=labels))
    assert ours.resolve_problem_type(np.asarray(labels)) == hf.config.problem_type  # HF records it
    assert abs(a.loss.item() - b.loss.item()) < FLOAT32_TOL * max(1.0, b.loss.item())


@pytest.mark.parametrize("cls_name", ["BertForSequenceClassification", "BertForMaskedLM"])
def test_gradients_match_hf(cls_name, tmp_path):
    """One backward, every parameter's gradient (tied MLM decoder included) vs HF's.

    Dropout is 0 so both run the same function in training mode. float32 gradients of a loss
    summed over many paths: 1e-4 relative (in norm) is ~1000 float32 ulps, and far below the
    O(1) relative error of any wrong derivative. The key biases' true gradient is exactly 0
    (softmax ignores a constant added to a whole row of scores, and q·b_k is one), so both sides
    are rounding noise there: hence an absolute floor, 1e-7 of the largest gradient (the rule of
    mini_bert.testing.within_bound, shared with the MiniLM one-step table)."""
    config = tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    hf = randomize(hf_model(cls_name, config), seed=11, std=0.1).train()
    save_hf(hf, tmp_path)
    ours = getattr(mb, cls_name).from_pretrained(tmp_path).train()
    batch = random_batch(config.vocab_size, 2, seed=11)
    labels = batch["input_ids"] if cls_name == "BertForMaskedLM" else np.array([0, 1, 1])

    hf_inputs = {k: torch.tensor(v) for k, v in batch.items()}
    hf(**hf_inputs, labels=torch.tensor(labels)).loss.backward()
    ours(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
         labels=labels).loss.backward()
    theirs = dict(hf.named_parameters())
    mine = dict(ours.named_parameters())
    assert set(mine) == set(theirs)
    largest = max(float(theirs[name].grad.norm()) for name in mine)
    for name, p in mine.items():
        g, ref = p.grad.numpy().astype(np.float64), theirs[name].grad.double().numpy()
        assert within_bound(np.linalg.norm(g - ref), np.linalg.norm(ref), largest), name


# ---- structure and inputs ------------------------------------------------------------------------
@pytest.mark.parametrize("cls_name", ["BertModel", "BertForSequenceClassification",
                                      "BertForMaskedLM"])
def test_state_dict_keys_and_shapes_equal_hf(cls_name):
    config = tiny_config(num_labels=4)
    theirs = {k: tuple(v.shape) for k, v in hf_model(cls_name, config).state_dict().items()}
    ours = getattr(mb, cls_name)(mb.BertConfig.from_dict(config.to_dict()))
    assert {k: v.shape for k, v in ours.state_dict().items()} == theirs


def test_fresh_model_is_initialised_as_hf():
    """HF's scheme: N(0, initializer_range) weights, zero biases, LayerNorm 1/0, padding row 0."""
    ours = mb.BertForSequenceClassification(mb.BertConfig.from_dict(
        tiny_config(hidden_size=64, initializer_range=0.05).to_dict()))
    weight = ours.bert.encoder.layer[0].intermediate.dense.weight.numpy()
    assert abs(weight.std() - 0.05) < 0.005 and abs(weight.mean()) < 0.005
    assert not ours.classifier.bias.numpy().any()
    assert not ours.bert.embeddings.word_embeddings.weight.numpy()[0].any()
    assert (ours.bert.embeddings.LayerNorm.weight.numpy() == 1).all()


def test_inputs_as_lists_arrays_and_tensors_agree():
    ours = mb.BertModel(mb.BertConfig.from_dict(tiny_config().to_dict())).eval()
    ids, mask = [[5, 6, 7, 0], [8, 9, 10, 11]], [[1, 1, 1, 0], [1, 1, 1, 1]]
    outs = [ours(f(ids), f(mask)).last_hidden_state.numpy()
            for f in (list, np.array, mg.tensor)]
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])


def test_dropout_is_active_only_in_training():
    ours = mb.BertModel(mb.BertConfig.from_dict(tiny_config().to_dict()))
    ids = [[5, 6, 7, 8]]
    train = [ours.train()(ids).last_hidden_state.numpy() for _ in range(2)]
    evals = [ours.eval()(ids).last_hidden_state.numpy() for _ in range(2)]
    assert not np.array_equal(train[0], train[1])
    assert np.array_equal(evals[0], evals[1])


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(input_ids=[[1.5, 2.0]]), TypeError, "input_ids must hold integers"),
    (dict(input_ids=[1, 2, 3]), ValueError, "[batch, seq_len]"),
    (dict(input_ids=[[1, 2, 3]], attention_mask=[[1, 1]]), ValueError, "attention_mask has shape"),
    (dict(input_ids=[[1, 2, 3]], token_type_ids=[[0, 1]]), ValueError, "token_type_ids has shape"),
    (dict(input_ids=[[1] * 65]), ValueError, "max_position_embeddings=64"),
    (dict(input_ids=[[1, 97]]), IndexError, "out of range"),
])
def test_bad_inputs_raise_clear_errors(kwargs, error, words):
    ours = mb.BertModel(mb.BertConfig.from_dict(tiny_config().to_dict()))
    with pytest.raises(error, match=re.escape(words)):
        ours(**kwargs)

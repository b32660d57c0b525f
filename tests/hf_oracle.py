"""Helpers shared by test_model.py and test_checkpoint.py: make HF BERTs (the oracle), save them,
and feed the same batch to HF and to mini_bert.

Every HF model here uses attn_implementation="eager": the plain softmax(QKᵀ/√d + M)V path, which
can also return attention weights; fused kernels would only add their own rounding.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def tiny_config(**overrides) -> "transformers.BertConfig":
    """A small random BERT's config; ``overrides`` set any field."""
    fields = dict(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=37, max_position_embeddings=64, type_vocab_size=2,
                  attn_implementation="eager")
    fields.update(overrides)
    return transformers.BertConfig(**fields)


def hf_model(cls_name: str, config, seed: int = 0):
    """A freshly initialised ``transformers.<cls_name>`` (seeded), in eval mode."""
    torch.manual_seed(seed)
    return getattr(transformers, cls_name)(config).eval()


def save_hf(model, directory: str, safe: bool = True) -> str:
    """HF's save_pretrained (model.safetensors), or with ``safe=False`` the legacy
    pytorch_model.bin of HF's state_dict (transformers 5 no longer writes .bin itself)."""
    if safe:
        model.save_pretrained(directory)
    else:
        save_bin({k: v.clone() for k, v in model.state_dict().items()}, directory, model.config)
    return str(directory)


def save_bin(state: dict, directory: str, config) -> str:
    """A hand-made pytorch_model.bin (e.g. with renamed keys) next to the model's config."""
    os.makedirs(directory, exist_ok=True)
    config.save_pretrained(directory)
    torch.save(state, os.path.join(directory, "pytorch_model.bin"))
    return str(directory)


def random_batch(vocab: int, type_vocab: int, batch: int = 3, seq: int = 9, seed: int = 0) -> dict:
    """ids with [CLS]-like first token, random token types, and right padding of varying length
    (row 0 unpadded, so that every position is real somewhere)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, size=(batch, seq))
    lengths = np.array([seq] + list(rng.integers(2, seq, size=batch - 1)))
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)
    ids = np.where(mask == 1, ids, 0)
    types = rng.integers(0, type_vocab, size=(batch, seq)) * mask
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def hf_forward(model, batch: dict, **kwargs):
    with torch.no_grad():
        return model(**{k: torch.tensor(v) for k, v in batch.items()}, **kwargs)


def randomize(model, seed: int = 0, std: float = 0.2):
    """Overwrite every parameter with random values, LayerNorm scales around 1 and all biases
    non-zero, so that a weight loaded into the wrong place (or not at all) cannot go unseen.
    std=0.2 (HF's init is 0.02) makes attention peaked instead of near-uniform."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=p.dtype)
            p.copy_(1 + 0.1 * noise if name.endswith("LayerNorm.weight") else std * noise)
    return model


def saved_classifier(directory, num_labels: int = 3) -> str:
    """A ``randomize``d BertForSequenceClassification without dropout (so that both sides compute
    one deterministic function), saved where mini_bert can load it; returns the folder."""
    return save_hf(randomize(hf_model("BertForSequenceClassification",
                                      tiny_config(num_labels=num_labels, hidden_dropout_prob=0.0,
                                                  attention_probs_dropout_prob=0.0))), directory)


def as_numpy(x) -> np.ndarray:
    """A torch tensor, a minigrad Tensor or an array, as a float64 numpy array."""
    if isinstance(x, torch.Tensor):
        x = x.detach().numpy()
    elif hasattr(x, "numpy"):
        x = x.numpy()
    return np.asarray(x, dtype=np.float64)


def max_abs(ours, theirs) -> float:
    return float(np.max(np.abs(as_numpy(ours) - as_numpy(theirs))))

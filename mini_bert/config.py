"""``BertConfig``: the hyper-parameters of a BERT, read from and written to HF's ``config.json``.

The field names and defaults are those of ``transformers.BertConfig`` (bert-base-uncased's shape),
so a ``config.json`` written by either library is read by the other. Keys we do not use (``dtype``,
``transformers_version``, ...) are kept in ``extra`` and written back unchanged.

Options this model does not implement are refused up front with the field and the file named,
rather than silently computing something different from HF.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from .errors import MissingFileError, UserError

# hidden_act -> the GELU ``approximate`` flavour (or "relu"); see BertIntermediate in model.py.
ACTIVATIONS = {"gelu": "none", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "relu": "relu"}
PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")
CONFIG_NAME = "config.json"


class ConfigError(UserError, ValueError):
    """A config field holds a value this model cannot honour."""


@dataclasses.dataclass
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int | None = 0
    position_embedding_type: str = "absolute"
    classifier_dropout: float | None = None
    num_labels: int = 2
    id2label: dict[int, str] | None = None
    label2id: dict[str, int] | None = None
    problem_type: str | None = None
    architectures: list[str] | None = None
    tie_word_embeddings: bool = True
    is_decoder: bool = False
    add_cross_attention: bool = False
    model_type: str = "bert"
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    source: str = dataclasses.field(default="BertConfig", repr=False, compare=False)

    def __post_init__(self) -> None:
        self._sync_labels()
        self.validate()

    def _sync_labels(self) -> None:
        """HF derives num_labels from id2label when it is given, and label names when not."""
        if self.id2label:
            self.id2label = {int(k): str(v) for k, v in self.id2label.items()}
            self.num_labels = len(self.id2label)
        else:
            self.id2label = {i: f"LABEL_{i}" for i in range(self.num_labels)}
        if not self.label2id or len(self.label2id) != self.num_labels:
            self.label2id = {v: k for k, v in self.id2label.items()}
        self.label2id = {str(k): int(v) for k, v in self.label2id.items()}

    def _refuse(self, field: str, why: str) -> None:
        raise ConfigError(f"{self.source}: {field}={getattr(self, field)!r} {why}")

    def validate(self) -> None:
        """Raise ConfigError (naming the field and the file) for anything we cannot run."""
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size",
                     "num_labels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                self._refuse(name, "must be a positive integer")
        if self.hidden_size % self.num_attention_heads:
            self._refuse("hidden_size", f"is not a multiple of num_attention_heads="
                                        f"{self.num_attention_heads}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value < 1.0:
                self._refuse(name, "must be a probability in [0, 1)")
        if self.hidden_act not in ACTIVATIONS:
            self._refuse("hidden_act", f"is not supported; use one of {sorted(ACTIVATIONS)}")
        if self.position_embedding_type != "absolute":
            self._refuse("position_embedding_type", "is not supported; only 'absolute' is")
        if self.is_decoder or self.add_cross_attention:
            field = "is_decoder" if self.is_decoder else "add_cross_attention"
            self._refuse(field, "is not supported: this is an encoder-only BERT")
        if self.problem_type is not None and self.problem_type not in PROBLEM_TYPES:
            self._refuse("problem_type", f"is not one of {PROBLEM_TYPES}")
        if self.model_type not in (None, "bert"):
            self._refuse("model_type", "is not supported; only 'bert' checkpoints are")
        if not self.layer_norm_eps > 0:
            self._refuse("layer_norm_eps", "must be positive")

    # ---- construction ----------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "BertConfig") -> "BertConfig":
        """Known keys become fields, the rest go to ``extra`` (kept for the round trip)."""
        known = {f.name for f in dataclasses.fields(cls)} - {"extra", "source"}
        fields = {k: v for k, v in values.items() if k in known}
        extra = {k: v for k, v in values.items() if k not in known}
        if fields.get("model_type") is None:  # very old configs have no model_type at all
            fields.pop("model_type", None)
        return cls(**fields, extra=extra, source=source)

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> "BertConfig":
        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as f:
                values = json.load(f)
        except (FileNotFoundError, NotADirectoryError):
            raise MissingFileError(f"{path}: no such config file") from None
        except OSError as e:
            raise ConfigError(f"{path}: cannot read the config ({e.strerror})") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not a valid JSON config ({e})") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a JSON object, got {type(values).__name__}")
        return cls.from_dict(values, source=path)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, **overrides: Any) -> "BertConfig":
        """Read ``directory/config.json``; keyword arguments override its fields (as in HF)."""
        config = cls.from_json_file(os.path.join(os.fspath(directory), CONFIG_NAME))
        return config.update(**overrides) if overrides else config

    def update(self, **overrides: Any) -> "BertConfig":
        """Set fields (``num_labels=3`` also renames the labels) and re-validate, in place."""
        known = {f.name for f in dataclasses.fields(self)} - {"extra", "source"}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"{self.source}: unknown BertConfig field(s) {unknown}")
        relabel = overrides.get("num_labels", self.num_labels) != self.num_labels
        if relabel and "id2label" not in overrides:
            self.id2label = self.label2id = None  # the old label names no longer fit
        for k, v in overrides.items():
            setattr(self, k, v)
        self.source = f"{self.source} (with overrides {sorted(overrides)})"
        self._sync_labels()
        self.validate()
        return self

    # ---- serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """HF's layout: flat, ``extra`` keys merged back in, id2label keys as strings (JSON)."""
        out = dict(self.extra)
        for f in dataclasses.fields(self):
            if f.name not in ("extra", "source"):
                out[f.name] = getattr(self, f.name)
        out["id2label"] = {str(k): v for k, v in self.id2label.items()}
        return dict(sorted(out.items()))

    def to_json_file(self, path: str | os.PathLike) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2, ensure_ascii=False)
            f.write("\n")

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        os.makedirs(directory, exist_ok=True)
        self.to_json_file(os.path.join(os.fspath(directory), CONFIG_NAME))

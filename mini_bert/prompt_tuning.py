"""Prompt tuning: freeze the whole BERT and learn only a few "virtual token" vectors in front of
every input (Lester et al., 2021), plus the task head; exactly as the ``peft`` package's
``PromptTuningConfig(task_type="SEQ_CLS")`` does it on a ``BertForSequenceClassification``.

For ids x₁..x_T (``[CLS]`` first) and a trainable prompt P ∈ ℝ^{N×H}, the encoder's input is

    e = [P₁, ..., P_N, W_word[x₁], ..., W_word[x_T]]          (N + T rows)

and everything after it is the unchanged model: position embeddings 0..N+T-1 are added (the
prompt takes positions 0..N-1, so ``[CLS]`` sits at position N), token type 0 for the prompt,
the attention mask gets N ones in front, and the pooler reads row 0 -- which is now the first
virtual token, not ``[CLS]`` (peft's SEQ_CLS prompt tuning does the same; the prompt learns to
carry what the classifier needs).

The gradient. e = cat(broadcast(P), words), so ∂L/∂P_j = Σ_b ∂L/∂e_{b,j}: each virtual token
gets the sum over the batch of the gradient at its input row, and W_word (frozen) gets none.
That is the whole backward pass of the method: a broadcast's gradient is a sum.

Costs: N·H trainable scalars (20 × 384 = 7,680 for MiniLM) plus the head, and every sequence is
N tokens longer, so attention costs grow with (N + T)².
"""
from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np

import minigrad as mg
from minigrad import nn

from .model import as_int_array

INITS = ("random", "text")


class PromptTuningModel(nn.Module):
    """A sequence classifier with N trainable virtual tokens in front of its input (see the
    module docstring). ``base_model`` is the wrapped model, ``prompt_embeddings`` [N, H] the
    prompt: both names are those of peft's saved files (``prompt_embeddings``,
    ``base_model.classifier.weight``), so ``state_dict`` keys need no renaming to be saved."""

    def __init__(self, base_model: nn.Module, prompt: np.ndarray, config: dict):
        super().__init__()
        self.base_model = base_model
        self.prompt_embeddings = nn.Parameter(mg.tensor(prompt, dtype=base_model.dtype, device=base_model.device))
        object.__setattr__(self, "prompt_config", config)  # what adapter_config.json says

    @property
    def num_virtual_tokens(self) -> int:
        return self.prompt_embeddings.shape[0]

    @property
    def config(self):
        return self.base_model.config

    @property
    def device(self) -> str:
        return self.base_model.device

    @property
    def dtype(self):
        return self.base_model.dtype

    def forward(self, input_ids: Any = None, attention_mask: Any = None, token_type_ids: Any = None,
                labels: Any = None, output_hidden_states: bool = False, output_attentions: bool = False,
                inputs_embeds: mg.Tensor | None = None):
        """The base model's output for [prompt; the inputs' word embeddings]. Hidden states and
        attentions include the N prompt positions, as peft's do."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            ids = as_int_array(input_ids, "input_ids")
            if ids.ndim != 2:
                raise ValueError(f"input_ids must be [batch, seq_len], got shape {ids.shape}")
            inputs_embeds = self.base_model.bert.embeddings.word_embeddings(ids)
        b, n = inputs_embeds.shape[0], self.num_virtual_tokens
        prompt = self.prompt_embeddings.unsqueeze(0).expand(b, n, self.prompt_embeddings.shape[1])
        x = mg.cat([prompt, inputs_embeds], dim=1)
        if attention_mask is not None:
            mask = as_int_array(attention_mask, "attention_mask")
            if mask.ndim != 2:  # a [B, T, T] mask has no defined rows for the prompt
                raise ValueError(f"prompt tuning needs a [batch, seq_len] attention_mask, got shape {mask.shape}")
            attention_mask = np.concatenate([np.ones((b, n), np.int64), mask], axis=1)
        if token_type_ids is not None:
            types = as_int_array(token_type_ids, "token_type_ids")
            token_type_ids = np.concatenate([np.zeros((b, n), np.int64), types], axis=1)
        return self.base_model(None, attention_mask, token_type_ids, labels, output_hidden_states,
                               output_attentions, inputs_embeds=x)


def _text_init(model: nn.Module, n: int, init_text: str | None, tokenizer) -> np.ndarray:
    """peft's TEXT init: the word embeddings of ``tokenizer(init_text)["input_ids"]`` (special
    tokens included), cut to n or repeated until n rows."""
    if not init_text or tokenizer is None:
        raise ValueError('init="text" needs init_text (a non-empty string) and the tokenizer')
    ids = list(tokenizer(init_text)["input_ids"])
    ids = (ids * math.ceil(n / len(ids)))[:n]
    return np.array(model.bert.embeddings.word_embeddings.weight.numpy()[ids], np.float32)


def apply_prompt_tuning(model: nn.Module, num_virtual_tokens: int = 20, init: str = "random",
                        init_text: str | None = None, tokenizer=None,
                        tokenizer_name_or_path: str | None = None) -> PromptTuningModel:
    """Wrap a ``BertForSequenceClassification`` in a PromptTuningModel and freeze every weight
    except the prompt and the task head (peft's ``modules_to_save``). Returns the wrapper.

    ``init="random"``: N(0, 1) entries, as torch's ``nn.Embedding`` that peft uses (drawn from
    minigrad's seeded generator). ``init="text"``: the embeddings of ``init_text``'s tokens.
    ``tokenizer_name_or_path`` is recorded for peft, which refuses a TEXT config without one.
    """
    from .peft import _head_modules, lora_layers

    if isinstance(num_virtual_tokens, bool) or not isinstance(num_virtual_tokens, int) or num_virtual_tokens < 1:
        raise ValueError(f"num_virtual_tokens must be a positive integer, got {num_virtual_tokens!r}")
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if isinstance(model, PromptTuningModel) or "bert" not in model._modules:
        raise ValueError(f"prompt tuning wraps a BERT with a task head (a BertFor... model), got "
                         f"{type(model).__name__}")
    if lora_layers(model):
        raise ValueError(f"{type(model).__name__} has LoRA layers: use LoRA or prompt tuning, not both")
    hidden = model.config.hidden_size
    if init == "text":
        prompt = _text_init(model, num_virtual_tokens, init_text, tokenizer)
    else:
        prompt = np.zeros((num_virtual_tokens, hidden), np.float32)
    head = _head_modules(model)
    config = dict(
        peft_type="PROMPT_TUNING", task_type="SEQ_CLS" if "classifier" in head else None,
        num_virtual_tokens=num_virtual_tokens, token_dim=hidden, num_transformer_submodules=1,
        num_attention_heads=model.config.num_attention_heads, num_layers=model.config.num_hidden_layers,
        prompt_tuning_init=init.upper(), prompt_tuning_init_text=init_text if init == "text" else None,
        tokenizer_name_or_path=tokenizer_name_or_path, tokenizer_kwargs=None, modules_to_save=head or None)
    wrapped = PromptTuningModel(model, prompt, config)
    if init == "random":
        nn.init.normal_(wrapped.prompt_embeddings, 0.0, 1.0)
    _freeze(wrapped, head)
    return wrapped


def _freeze(model: PromptTuningModel, head: list[str]) -> None:
    for name, p in model.base_model.named_parameters():
        trainable = name.split(".", 1)[0] in head
        p.requires_grad_(trainable)
        if not trainable:
            p.grad = None
    model.prompt_embeddings.requires_grad_(True)


def _adapter_keys(model: PromptTuningModel) -> list[str]:
    """State-dict keys that make up the adapter: the prompt and the head."""
    head = model.prompt_config["modules_to_save"] or []
    return [k for k in model.state_dict()
            if k == "prompt_embeddings" or k.removeprefix("base_model.").split(".", 1)[0] in head]


def save_prompt_adapter(model: PromptTuningModel, directory: str,
                        base_model_name_or_path: str | None = None) -> str:
    """Write the prompt and the head (``adapter_model.safetensors``, peft's key names:
    ``prompt_embeddings``, ``base_model.classifier.weight``, ...) and ``adapter_config.json``."""
    from safetensors.numpy import save_file

    from .peft import ADAPTER_CONFIG, ADAPTER_WEIGHTS

    if not isinstance(model, PromptTuningModel):
        raise ValueError(f"{type(model).__name__} has no prompt: call apply_prompt_tuning first")
    state = model.state_dict()
    tensors = {k: np.ascontiguousarray(state[k].numpy()) for k in _adapter_keys(model)}
    config = dict(model.prompt_config, base_model_name_or_path=base_model_name_or_path, inference_mode=True)
    config["tokenizer_name_or_path"] = config["tokenizer_name_or_path"] or base_model_name_or_path
    if config["prompt_tuning_init"] == "TEXT" and config["tokenizer_name_or_path"] is None:
        # peft refuses a TEXT config without a tokenizer path, even when (as on loading) it never
        # initialises anything; the init of a trained prompt no longer matters.
        config.update(prompt_tuning_init="RANDOM", prompt_tuning_init_text=None)
    os.makedirs(directory, exist_ok=True)
    save_file(tensors, os.path.join(directory, ADAPTER_WEIGHTS), metadata={"format": "pt"})
    with open(os.path.join(directory, ADAPTER_CONFIG), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    return directory


def load_prompt_adapter(model: nn.Module, directory: str, config: dict | None = None) -> PromptTuningModel:
    """Wrap ``model`` with the prompt and head saved in ``directory`` (by us or by peft).
    ``config``: the already-read ``adapter_config.json``, if the caller has it."""
    from minigrad.nn.state_dict import StateDictFit

    from .checkpoint import CheckpointError, read_weights
    from .peft import ADAPTER_CONFIG, ADAPTER_WEIGHTS

    config_path = os.path.join(directory, ADAPTER_CONFIG)
    if config is None:
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
    try:
        n, dim = int(config["num_virtual_tokens"]), int(config["token_dim"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{config_path}: not a valid prompt-tuning config ({e!r})") from None
    if dim != model.config.hidden_size:
        raise CheckpointError(f"{config_path}: token_dim {dim} != the model's hidden_size "
                              f"{model.config.hidden_size}")
    wrapped = apply_prompt_tuning(model, n)
    wrapped.prompt_config.update({k: config.get(k) for k in (
        "prompt_tuning_init", "prompt_tuning_init_text", "tokenizer_name_or_path")})
    weights_path = os.path.join(directory, ADAPTER_WEIGHTS)
    weights = read_weights(weights_path)
    own = {k: t.shape for k, t in wrapped.state_dict().items() if k in _adapter_keys(wrapped)}
    StateDictFit.of(own, {k: v.shape for k, v in weights.items()}).check(
        weights_path, type(model).__name__, CheckpointError)
    wrapped.load_state_dict(weights, strict=False)
    return wrapped

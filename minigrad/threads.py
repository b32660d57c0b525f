"""``minigrad.set_num_threads`` / ``get_num_threads``: how many cores minigrad computes on, as torch's.

The default is ``OMP_NUM_THREADS`` when set, else the physical cores this process may use (torch's
default). Setting it sizes three pools at once: minigrad's own (``backend/parallel.py``, which runs
ops' formulas on blocks), numpy's BLAS (through threadpoolctl, when installed), and torch's
intra-op pool (when the torch backend is in use).
"""
from __future__ import annotations

import sys
import warnings

from .backend import parallel

_chosen: int | None = None  # what set_num_threads was last given (None: the defaults stand)


def get_num_threads() -> int:
    """The number of threads minigrad's numpy kernels (and BLAS, and torch's backend) use."""
    return parallel.num_threads()


def set_num_threads(n: int) -> None:
    """Use ``n`` threads from now on, in minigrad's pool, numpy's BLAS and torch (torch.set_num_threads)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads expects a positive integer, got {n!r}")
    global _chosen
    _chosen = n
    parallel.set_num_threads(n)
    _pin_blas(n)
    pin_torch()


def _pin_blas(n: int) -> None:
    libs = parallel.blas_libraries()
    if not libs:
        warnings.warn("threadpoolctl is not installed: set_num_threads sizes minigrad's own pool and "
                      "torch's, but cannot pin numpy's BLAS (pip install threadpoolctl, or set "
                      "OMP_NUM_THREADS before Python starts)", RuntimeWarning, stacklevel=3)
    for lib in libs:
        lib.set_num_threads(n)


def pin_torch() -> None:
    """torch's intra-op threads = ours, once torch is imported (the torch backend calls this when
    it is first loaded); left alone while nobody has called set_num_threads, as torch's own default
    already follows OMP_NUM_THREADS."""
    torch = sys.modules.get("torch")
    if torch is not None and _chosen is not None and torch.get_num_threads() != _chosen:
        torch.set_num_threads(_chosen)

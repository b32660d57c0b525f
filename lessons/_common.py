"""Shared set-up for the lessons: import path, figure output folder, float comparisons.

Every lesson starts with ``import _common``. That works whether the lesson runs from the repo root
(``python lessons/01_computation_graph.py``), from inside ``lessons/``, or as a notebook, because
Python puts the script's own folder on ``sys.path``.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import matplotlib
import numpy as np

LESSONS = Path(__file__).resolve().parent
ROOT = LESSONS.parent
OUT = LESSONS / "out"

# minigrad lives at the repo root; without an editable install, put the root on the import path.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Lessons save figures instead of opening windows (a notebook front end still shows them inline).
if "ipykernel" not in sys.modules and not os.environ.get("MPLBACKEND"):
    matplotlib.use("Agg")


def out_path(name: str) -> Path:
    """``lessons/out/<name>``, creating the folder on first use (it is git-ignored)."""
    OUT.mkdir(exist_ok=True)
    return OUT / name


def savefig(fig, name: str) -> Path:
    """Save a matplotlib figure to ``lessons/out/<name>``, close it and return the path."""
    import matplotlib.pyplot as plt

    path = out_path(name)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    print(f"saved {path.relative_to(ROOT)}")
    return path


def max_rel_err(a, b) -> float:
    """max |a - b| / max |b|: one number that says how many digits two arrays share.

    Scaled by the largest entry of the reference, not elementwise, so entries that are nearly zero
    (where any rounding looks huge relative to themselves) do not dominate.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(float(np.abs(b).max()), 1e-300)
    return float(np.abs(a - b).max()) / scale

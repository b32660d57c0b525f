"""Shared set-up for the lessons: import path, figure output folder, float comparisons.

Every lesson starts with ``import _common``. That works whether the lesson runs from the repo root
(``python lessons/01_computation_graph.py``), from inside ``lessons/``, or as a notebook, because
Python puts the script's own folder on ``sys.path``.

Figures are saved under ``lessons/out/`` (git-ignored). Run as a script, a lesson only saves them; in
Jupyter or VS Code's interactive window (IPython), ``savefig`` also displays each one under its cell.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import matplotlib
import numpy as np

LESSONS = Path(__file__).resolve().parent
ROOT = LESSONS.parent
# The course has an English and a Simplified Chinese edition built from the same lesson files
# (course/i18n.py); the site runs a lesson once per edition with LESSON_LANG set.
LANG = os.environ.get("LESSON_LANG", "en")
# Each edition's figures in their own folder (lessons/out/zh/ for Chinese), so the two editions of a
# lesson can run at once without overwriting each other's images.
OUT = LESSONS / "out" if LANG == "en" else LESSONS / "out" / LANG

# minigrad lives at the repo root; without an editable install, put the root on the import path.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# A script saves figures instead of opening windows; a notebook kernel keeps its own inline backend.
if "ipykernel" not in sys.modules and not os.environ.get("MPLBACKEND"):
    matplotlib.use("Agg")

# Every path out_path has handed out, in order: the course site (course/notebook.py) reads it after
# each cell to put the figures that cell wrote under it.
REQUESTED: list[Path] = []


def out_path(name: str) -> Path:
    """``lessons/out/<name>``, creating the folder on first use (it is git-ignored)."""
    OUT.mkdir(exist_ok=True)
    REQUESTED.append(OUT / name)
    return OUT / name


def _ipython_shell():
    """The running IPython shell (Jupyter, VS Code), or None in a plain ``python`` run."""
    ipython = sys.modules.get("IPython")
    return ipython.get_ipython() if ipython is not None else None


def savefig(fig, name: str) -> Path:
    """Save a matplotlib figure to ``lessons/out/<name>``, close it, show it inline under IPython,
    and return the path.

    Closing keeps a long lesson from holding dozens of figures open; it also stops a notebook's
    inline backend from drawing the figure itself, which is why ``saved`` displays it explicitly.
    """
    import matplotlib.pyplot as plt

    path = out_path(name)
    # Written beside it, then renamed into place: a reader (the course site copying figures while
    # another run of the same lesson saves them, as CI's two workers do) gets the old image or the
    # new one, never half of one.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fig.savefig(tmp, dpi=110, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    os.replace(tmp, path)
    plt.close(fig)
    return saved(path)


def saved(path: Path) -> Path:
    """Announce an image written to ``path`` (by ``savefig`` or by a library's own plot function):
    print where it went and, under IPython, display it under the cell."""
    if _ipython_shell() is not None:
        from IPython.display import Image, display

        display(Image(filename=str(path)))
    print(f"saved {Path(path).relative_to(ROOT)}")
    return Path(path)


# Fonts for Chinese figure text, best first: Debian's fonts-noto-cjk, then other common CJK fonts.
CJK_FONTS = ("Noto Sans CJK SC", "Source Han Sans SC", "Noto Sans SC", "WenQuanYi Zen Hei", "WenQuanYi Micro Hei")


def cjk_font() -> str | None:
    """The name of an installed CJK font matplotlib can use, or None.

    matplotlib caches its font list, so a font installed after the cache was built is not in it:
    the system's CJK font files are added to the font manager before giving up.
    """
    from matplotlib import font_manager

    def known() -> str | None:
        names = {f.name for f in font_manager.fontManager.ttflist}
        return next((n for n in CJK_FONTS if n in names), None)

    if known() is None:
        for path in font_manager.findSystemFonts():
            if "CJK" in Path(path).name or "wqy" in Path(path).name.lower():
                font_manager.fontManager.addfont(path)
    return known()


def _use_cjk_font() -> None:
    """Chinese edition: figure text keeps matplotlib's DejaVu Sans (so Latin, digits and symbols
    such as ᵀ or ∂ look as in English) and falls back glyph by glyph to a CJK font for Chinese; the
    generic "sans-serif" (which a lesson may name after another family) becomes the CJK font.
    Without one, Chinese labels would print as empty boxes: warn once, naming the package, and
    carry on."""
    name = cjk_font()
    if name is None:
        print("warning: no CJK font found; Chinese figure labels will show as boxes. "
              "Install one: apt-get install -y fonts-noto-cjk", file=sys.stderr)
        return
    matplotlib.rcParams["font.family"] = ["DejaVu Sans", name]
    matplotlib.rcParams["font.sans-serif"] = [name, *matplotlib.rcParams["font.sans-serif"]]


if LANG == "zh":
    _use_cjk_font()


def tr(en: str, zh: str) -> str:
    """The text for the edition being run: a figure title, an axis label, a legend entry.

    Code is shared by both editions, so a label that a reader sees is written once in each language
    here, next to each other, rather than in two copies of the cell.
    """
    return zh if LANG == "zh" else en


def max_rel_err(a, b) -> float:
    """max |a - b| / max |b|: one number that says how many digits two arrays share.

    Scaled by the largest entry of the reference, not elementwise, so entries that are nearly zero
    (where any rounding looks huge relative to themselves) do not dominate.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(float(np.abs(b).max()), 1e-300)
    return float(np.abs(a - b).max()) / scale

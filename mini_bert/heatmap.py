"""Token heatmaps for ``mini_bert.explain``: a self-contained HTML page, or a PNG via matplotlib.

Colour: a token's score s over the text's largest |s|, red for s > 0 (pushes the target logit up),
blue for s < 0 (pushes it down), opacity |s| / max|s|. Scores are scaled per text, so colours
compare tokens within a text, not across texts. Every token, label and text is HTML-escaped: a
token is user input (``<script>`` is three tokens, each of which must show as text).
"""
from __future__ import annotations

import html
import os
from typing import Sequence

import numpy as np

from .explain import Explanation

POSITIVE, NEGATIVE = (220, 38, 38), (37, 99, 235)   # red, blue
METHOD_NAMES = {"saliency": "gradient × input", "integrated_gradients": "integrated gradients",
                "attention_rollout": "attention rollout"}


def intensities(scores: np.ndarray) -> np.ndarray:
    """s / max|s| in [−1, 1] (all zeros if every score is 0)."""
    scale = float(np.max(np.abs(scores))) if len(scores) else 0.0
    return np.asarray(scores, dtype=np.float64) / scale if scale > 0 else np.zeros(len(scores))


def summary(e: Explanation) -> str:
    """One line: the decision, the method, and for IG the completeness check."""
    line = (f"predicted {e.label} (p = {e.probability:.3f}); {METHOD_NAMES[e.method]} of logit "
            f"{e.target} = {e.logit:.4f}")
    if e.gap is not None:
        line += (f"; f(baseline) = {e.baseline_logit:.4f}, Σ scores = {float(np.sum(e.scores)):.4f}, "
                 f"completeness gap {e.gap:.2e} ({e.steps} steps)")
    return line


def html_fragment(e: Explanation, heading: str | None = None) -> str:
    """A <section> with the escaped heading, the summary line and one coloured <span> per token
    (its score in the tooltip)."""
    spans = []
    for token, s, v in zip(e.tokens, e.scores, intensities(e.scores)):
        r, g, b = POSITIVE if v >= 0 else NEGATIVE
        spans.append(f'<span class="tok" style="background: rgba({r},{g},{b},{abs(v):.3f})" '
                     f'title="{html.escape(f"{s:+.4g}")}">{html.escape(token)}</span>')
    head = f"<h2>{html.escape(heading)}</h2>\n" if heading else ""
    return (f"<section>\n{head}<p class=\"meta\">{html.escape(summary(e))}</p>\n"
            f"<p class=\"tokens\">{' '.join(spans)}</p>\n</section>\n")


def html_page(title: str, body: str) -> str:
    """A complete page with inline CSS: no script, no external file."""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; max-width: 60em; margin: 2em auto; line-height: 2.2; }}
.tok {{ padding: 0.15em 0.3em; border-radius: 0.25em; font-family: monospace; }}
.meta {{ color: #444; line-height: 1.4; }}
.legend span {{ padding: 0.1em 0.4em; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="legend"><span style="background: rgba({",".join(map(str, POSITIVE))},0.6)">raises the logit</span>
<span style="background: rgba({",".join(map(str, NEGATIVE))},0.6)">lowers it</span></p>
{body}</body></html>
"""


def write_html(path: str, e: Explanation, heading: str | None = None) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(html_page(heading or "token attributions", html_fragment(e, heading)))


def write_png(path: str, e: Explanation, heading: str | None = None, width: int = 80) -> None:
    """The tokens as coloured boxes in a monospace font, wrapped at ``width`` characters a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines, col = [[]], 0
    for token, v in zip(e.tokens, intensities(e.scores)):
        if col and col + len(token) > width:
            lines.append([])
            col = 0
        lines[-1].append((col, token, v))
        col += len(token) + 1
    fig = plt.figure(figsize=(0.1 * width + 0.5, 0.45 * len(lines) + 1.0))
    fig.text(0.01, 1 - 0.35 / fig.get_figheight(), heading or "", fontsize=11, va="top")
    fig.text(0.01, 1 - 0.7 / fig.get_figheight(), summary(e), fontsize=8, va="top", color="#444")
    for row, items in enumerate(lines):
        y = 1 - (1.25 + 0.45 * row) / fig.get_figheight()
        for col, token, v in items:
            rgb = np.array(POSITIVE if v >= 0 else NEGATIVE) / 255
            fig.text(0.01 + col / (width + 2), y, token, family="monospace", fontsize=10, va="top",
                     bbox=dict(facecolor=(*rgb, abs(v)), edgecolor="none", pad=1.5))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_index(directory: str, entries: Sequence[tuple[str, str, Explanation]]) -> str:
    """``directory/index.html``: for each (file name, text, explanation), the text, the summary
    and a link to (or, for a PNG, the picture of) its heatmap. Returns the index's path."""
    rows = []
    for name, text, e in entries:
        target = html.escape(name, quote=True)
        view = f'<img src="{target}" alt="heatmap">' if name.endswith(".png") else \
            html_fragment(e)
        rows.append(f'<section><h2><a href="{target}">{html.escape(text)}</a></h2>\n{view}</section>\n')
    path = os.path.join(directory, "index.html")
    with open(path, "w", encoding="utf-8") as f:
        f.write(html_page(f"token attributions: {len(entries)} texts", "".join(rows)))
    return path

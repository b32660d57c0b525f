"""HTML pieces for the course site: markdown with math, highlighted code, and the page shell.

Math is typeset at build time: ``$...$`` and ``$$...$$`` in markdown become MathML (latex2mathml),
which Chromium, Firefox and Safari render natively, so the pages need no script and no network and
work from ``file://``. Code is highlighted by pygments into static HTML with a bundled stylesheet.
"""
from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path

from latex2mathml.converter import convert as latex_to_mathml
from markdown_it import MarkdownIt
from mdit_py_plugins.dollarmath import dollarmath_plugin
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import PythonLexer

from . import i18n

ASSETS = Path(__file__).resolve().parent / "site_assets"
_FORMATTER = HtmlFormatter(cssclass="highlight")


class RenderError(ValueError):
    """Markdown or math that cannot be rendered; the caller adds the file and cell."""


def _math(latex: str, options: dict) -> str:
    try:
        return latex_to_mathml(latex.strip(), display="block" if options.get("display_mode") else "inline")
    except Exception as e:  # noqa: BLE001 - latex2mathml raises many types; all mean "bad LaTeX"
        raise RenderError(f"cannot typeset the formula ${latex}$: {type(e).__name__}: {e}") from None


def _markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": True, "typographer": False}).enable("table")
    # Pandoc's rules: no space just inside the dollars, no digit right after the closing one, so
    # "costs $5 or $10" stays text.
    dollarmath_plugin(md, allow_space=False, allow_digits=False, double_inline=True, renderer=_math)
    return md


_MD = _markdown()


def markdown(text: str) -> str:
    """Markdown (CommonMark + tables + dollar math) to HTML."""
    return _MD.render(text)


def code(source: str) -> str:
    """Python source to highlighted HTML (a ``<div class="highlight"><pre>``)."""
    return highlight(source, PythonLexer(), _FORMATTER)


def output(text: str) -> str:
    """A cell's printed output, as preformatted text."""
    return f'<pre class="output">{html.escape(text.rstrip())}</pre>'


def stylesheet() -> str:
    """The site's CSS: the bundled layout plus pygments' colours for the highlighted code."""
    return (ASSETS / "style.css").read_text(encoding="utf-8") + "\n" + _FORMATTER.get_style_defs(".highlight")


def slug(text: str) -> str:
    """An HTML id from a heading: lower case, words joined by '-'."""
    return re.sub(r"[^\w]+", "-", text.lower()).strip("-") or "section"


@dataclass(frozen=True)
class Edition:
    """Which language a site is in, and the sibling edition built next to it (``OUT/<other>/``),
    if any, that every page links to (the language switch)."""
    lang: str = "en"
    other: str | None = None

    def t(self, key: str, **values: object) -> str:
        """A piece of page chrome in this edition's language (``course/zh/messages.toml`` [site])."""
        return i18n.message(f"site.{key}", self.lang, **values)

    def label(self, number: int, title: str) -> str:
        return self.t("lesson_label", number=number, title=title)

    def nav_extra(self, rel: str) -> str:
        """Links every page's navigation carries: the glossary (zh) and the other language."""
        up = "../" * rel.count("/")
        extra = link(up + "glossary.html", self.t("glossary"), cls="glossary") if self.lang == "zh" else ""
        if self.other:
            extra += link(f"{up}../{self.other}/{rel}", i18n.message("site.language_name", self.other),
                          cls="lang-switch", lang=_HTML_LANG[self.other])
        return extra


_HTML_LANG = {"en": "en", "zh": "zh-CN"}


def page(title: str, body: str, *, rel: str, edition: Edition = Edition(), banner: str = "", nav: str = "") -> str:
    """A whole HTML page at ``rel`` (its path from the site root, which sets the relative links)."""
    up = "../" * rel.count("/")
    banner_html = f'<div class="banner">{banner}</div>' if banner else ""
    nav += edition.nav_extra(rel)
    return f"""<!DOCTYPE html>
<html lang="{_HTML_LANG[edition.lang]}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<link rel="stylesheet" href="{up}assets/style.css">
</head>
<body>
{banner_html}
<nav class="top">{nav}</nav>
<main>
{body}
</main>
<nav class="bottom">{nav}</nav>
</body>
</html>
"""


def link(href: str, text: str, cls: str = "", title: str = "", lang: str = "") -> str:
    attrs = (f' class="{cls}"' if cls else "") + (f' title="{html.escape(title, quote=True)}"' if title else "") \
        + (f' lang="{lang}"' if lang else "")
    return f'<a href="{html.escape(href, quote=True)}"{attrs}>{html.escape(text)}</a>'

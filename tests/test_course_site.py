"""The course site (``python -m course.site``), built once and opened page by page in a real browser.

The executed build is shared by every test here: the English and Chinese editions side by side
(``build_editions``: all the lessons run once, plus a second run of those whose figures have Chinese
labels, in one pool; ~2-3 min on 2 cores); the instructor edition reuses the English execution.
Each page is opened from ``file://`` in headless Chromium (Debian's ``chromium`` driven by
Playwright), which checks what a reader would see: no console errors, every image decoded, no math
left as raw ``$...$``, and every internal link landing on a file (and anchor) that exists. A
screenshot of each page goes to ``<site>/_screenshots/``. The zh pages also switch to their English
twin and back, and must draw Chinese text with real glyphs (not tofu).

Set COURSE_SITE_OUT=DIR to build into DIR (and keep it, screenshots included) instead of a temp dir.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from course import i18n, site
from course import notebook as nb

ROOT = Path(__file__).resolve().parent.parent
LESSONS = sorted((ROOT / "lessons").glob("[0-9][0-9]_*.py"))
CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium") or "") if p and os.path.exists(p)), None)
# Inline math is a pair of dollars on one line around a non-blank; display math is "$$".
RAW_MATH = re.compile(r"\$\$|\$[^\s$][^$\n]*?\$")


@pytest.fixture(scope="module")
def site_dir(tmp_path_factory) -> Path:
    return Path(os.environ["COURSE_SITE_OUT"]) if os.environ.get("COURSE_SITE_OUT") else \
        tmp_path_factory.mktemp("site")


@pytest.fixture(scope="module")
def built(site_dir: Path) -> dict[str, site.BuildReport]:
    """The default (executed) English and Chinese editions, built together into ``site/en`` and
    ``site/zh``, and the instructor edition, which reuses the English execution."""
    editions = site.build_editions(site_dir / "site")
    default, zh = editions["en"], editions["zh"]
    rerun = [n for n in default.runs if zh.runs[n] is not default.runs[n]]
    en_s = sum(r.seconds for runs in default.runs.values() for r in runs if r)
    zh_s = sum(r.seconds for n in rerun for r in zh.runs[n] if r)
    print(f"\nsite build en + zh: lessons {default.execute_seconds:.1f} s wall, pages en {default.seconds:.1f} s, "
          f"zh {zh.seconds:.1f} s; {len(rerun)}/{len(default.runs)} lessons run again for zh (they call "
          f"_common.tr): cell time en {en_s:.0f} s + zh {zh_s:.0f} s")
    instructor = site.build(site_dir / "instructor", instructor=True, runs=default.runs)
    return {"default": default, "zh": zh, "instructor": instructor}


@pytest.fixture(scope="module")
def student(site_dir: Path, tmp_path_factory) -> site.BuildReport:
    """The site of a fresh student build (``python -m course.student``): not executed."""
    tree = tmp_path_factory.mktemp("student") / "tree"
    proc = subprocess.run([sys.executable, "-m", "course.student", str(tree)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"course.student failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return site.build(site_dir / "student", tree)


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("no chromium binary (Debian: apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def _page_id(report: site.BuildReport, page: Path) -> str:
    return page.relative_to(report.out).with_suffix("").as_posix().replace("/", "__")


def _link_problems(page: Path, hrefs: list[str]) -> list[str]:
    """Internal hrefs (no scheme, or file://) whose file, or #anchor in it, does not exist."""
    bad = []
    for href in hrefs:
        parts = urlsplit(href)
        if parts.scheme not in ("", "file"):
            continue
        target = Path(unquote(parts.path)) if parts.scheme == "file" else \
            (page.parent / unquote(parts.path)).resolve() if parts.path else page
        if not target.is_file():
            bad.append(f"{href}: no file {target}")
        elif parts.fragment and target.suffix == ".html":
            text = target.read_text(encoding="utf-8")
            if not re.search(rf'\b(id|name)="{re.escape(parts.fragment)}"', text):
                bad.append(f"{href}: no id {parts.fragment!r} in {target.name}")
    return bad


def _open_every_page(browser, report: site.BuildReport, screenshots: bool) -> None:
    problems: list[str] = []
    shots = report.out / "_screenshots"
    shots.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: errors.append(f"failed to load {r.url}"))
    for path in sorted(report.pages):
        errors.clear()
        page.goto(path.as_uri(), wait_until="load")
        where = path.relative_to(report.out).as_posix()
        broken = page.evaluate("[...document.images].filter(i => !i.complete || i.naturalWidth === 0)"
                               ".map(i => i.getAttribute('src'))")
        text = page.evaluate("document.body.innerText")
        hrefs = page.evaluate("[...document.querySelectorAll('a[href], link[href]')]"
                              ".map(a => a.getAttribute('href'))"
                              ".concat([...document.images].map(i => i.getAttribute('src')))")
        styled = page.evaluate("getComputedStyle(document.querySelector('main')).maxWidth")
        math_widths = page.evaluate("[...document.querySelectorAll('math')]"
                                    ".map(m => m.getBoundingClientRect().width)")
        problems += [f"{where}: {e}" for e in errors]
        problems += [f"{where}: image did not load: {src}" for src in broken]
        problems += [f"{where}: raw math in the text: {m.group(0)[:60]!r}" for m in RAW_MATH.finditer(text)]
        problems += [f"{where}: broken link {b}" for b in _link_problems(path, hrefs)]
        if styled == "none":
            problems.append(f"{where}: the stylesheet did not apply (main has no max-width)")
        if any(w <= 0 for w in math_widths):
            problems.append(f"{where}: a <math> element has zero width (MathML not rendered)")
        if screenshots:
            page.screenshot(path=str(shots / f"{_page_id(report, path)}.png"), full_page=True)
    page.close()
    assert not problems, "\n".join(problems)


def test_every_page_in_chromium(built, browser) -> None:
    report = built["default"]
    assert len(report.pages) >= len(LESSONS) + 1
    _open_every_page(browser, report, screenshots=True)
    assert {p.stem for p in (report.out / "_screenshots").glob("*.png")} >= {"index", "lessons__01_computation_graph"}


def test_zh_edition_in_chromium(built, browser) -> None:
    report = built["zh"]
    assert {p.relative_to(report.out).as_posix() for p in report.pages} >= \
        {p.relative_to(built["default"].out).as_posix() for p in built["default"].pages} | {"glossary.html"}
    _open_every_page(browser, report, screenshots=True)
    shots = report.out / "_screenshots"
    print(f"\nzh screenshots: {shots / 'index.png'}, {shots / 'lessons__03_bce_derivation.png'}")


def test_language_switch_goes_both_ways(built, browser) -> None:
    """Every page of each edition links to the same page of the other; following it and back
    returns to the page it started from."""
    en, zh = built["default"], built["zh"]
    for report, other in ((en, zh), (zh, en)):
        for path in report.pages:
            rel = path.relative_to(report.out)
            text = path.read_text(encoding="utf-8")
            href = re.search(r'<a href="([^"]+)" class="lang-switch"', text)
            assert href, f"{rel}: no language switch"
            assert (path.parent / href.group(1)).resolve() == (other.out / rel).resolve(), rel
    page = browser.new_page()
    start = en.out / "lessons" / "03_bce_derivation.html"
    page.goto(start.as_uri())
    page.click("nav.top a.lang-switch")
    assert page.url == (zh.out / "lessons" / "03_bce_derivation.html").as_uri()
    assert page.evaluate("document.documentElement.lang") == "zh-CN"
    assert "二元交叉熵" in page.evaluate("document.body.innerText")
    page.click("nav.top a.lang-switch")
    assert page.url == start.as_uri()
    page.close()


# Draw one character on a canvas in the page's own font and return its pixels. A font without the
# glyph draws the same tofu box for every character, so two characters must differ.
_GLYPH_PIXELS = """ch => {
  const c = document.createElement('canvas'); c.width = c.height = 64;
  const ctx = c.getContext('2d');
  ctx.font = '48px ' + getComputedStyle(document.querySelector('main p')).fontFamily;
  ctx.fillText(ch, 4, 52);
  return Array.from(ctx.getImageData(0, 0, 64, 64).data.filter((_, i) => i % 4 === 3));
}"""


def test_zh_pages_and_figures_show_real_cjk_glyphs(built, browser) -> None:
    zh = built["zh"]
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.goto((zh.out / "lessons" / "07_tokenizer.html").as_uri())
    ti, du = page.evaluate(_GLYPH_PIXELS, "梯"), page.evaluate(_GLYPH_PIXELS, "度")
    assert any(ti) and ti != du, "Chinese characters render as identical boxes (tofu): no CJK font"
    figure = page.locator('img[src="figures/07_token_offsets.png"]')
    shot = zh.out / "_screenshots" / "zh_figure_07_token_offsets.png"
    figure.screenshot(path=str(shot))
    page.close()
    print(f"\nzh figure screenshot: {shot}")
    # The zh run drew its own figure (Chinese title), not a copy of the English one.
    en_png = (built["default"].out / "lessons" / "figures" / "07_token_offsets.png").read_bytes()
    assert (zh.out / "lessons" / "figures" / "07_token_offsets.png").read_bytes() != en_png


def test_zh_notebooks_carry_the_translation(built) -> None:
    for lesson in LESSONS:
        cells = i18n.load(lesson, "zh")
        notebook = json.loads((built["zh"].out / "notebooks" / f"{lesson.stem}.ipynb").read_text(encoding="utf-8"))
        expected = [c.source for c in cells if "answers" not in c.tags]
        assert ["".join(c["source"]) for c in notebook["cells"]] == expected, lesson.name


def test_instructor_edition_in_chromium(built, browser) -> None:
    _open_every_page(browser, built["instructor"], screenshots=False)


def test_student_edition_in_chromium(student, browser) -> None:
    _open_every_page(browser, student, screenshots=True)


def _answer_boxes(report: site.BuildReport, lesson: Path) -> int:
    html = (report.out / "lessons" / f"{lesson.stem}.html").read_text(encoding="utf-8")
    return html.count('<details class="answers"')


@pytest.mark.parametrize("lesson", LESSONS, ids=[p.stem for p in LESSONS])
def test_answers_only_in_instructor_edition(built, lesson: Path) -> None:
    n_answers = sum("answers" in c.tags for c in nb.parse(lesson))
    assert _answer_boxes(built["instructor"], lesson) == n_answers
    assert _answer_boxes(built["default"], lesson) == 0
    page = (built["instructor"].out / "lessons" / f"{lesson.stem}.html").read_text(encoding="utf-8")
    assert "Instructor edition" in page


@pytest.mark.parametrize("lesson", LESSONS, ids=[p.stem for p in LESSONS])
def test_notebook_per_lesson(built, lesson: Path) -> None:
    cells = nb.parse(lesson)
    for edition, keep_answers in (("default", False), ("instructor", True)):
        path = built[edition].out / "notebooks" / f"{lesson.stem}.ipynb"
        notebook = json.loads(path.read_text(encoding="utf-8"))
        assert notebook["nbformat"] == 4 and notebook["nbformat_minor"] >= 4
        expected = [c for c in cells if keep_answers or "answers" not in c.tags]
        assert [c["cell_type"] for c in notebook["cells"]] == [c.kind for c in expected]
        assert ["".join(c["source"]) for c in notebook["cells"]] == [c.source for c in expected]
    outputs = [o for c in notebook["cells"] if c["cell_type"] == "code" for o in c["outputs"]]
    assert outputs, f"{lesson.name}: the executed notebook carries no outputs"


def test_figures_sit_under_the_cell_that_saved_them(built) -> None:
    """Lessons' figures are found, and lesson 1's graph drawing sits between the cell that draws it
    and the next code cell (not, say, at the end of the page)."""
    report = built["default"]
    figures = [f for runs in report.runs.values() for r in runs if r for f in r.figures]
    assert len(figures) >= len(LESSONS) // 2, "most lessons draw a figure; the site found too few"
    html = (report.out / "lessons" / "01_computation_graph.html").read_text(encoding="utf-8")
    code = html.index('<span class="s2">"01_neuron_graph.png"</span>')     # the cell that draws it
    figure = html.index('src="figures/01_neuron_graph.png"')
    assert code < figure < html.index('<div class="highlight">', code), "the graph is not under its cell"


def test_student_edition_shows_blanks_and_no_output(student) -> None:
    pages = [p.read_text(encoding="utf-8") for p in student.pages if "/lessons/" in p.as_posix()]
    assert all("Student edition" in p for p in pages)
    assert not any('class="output"' in p or "<img" in p or 'class="answers"' in p for p in pages)
    assert any("NotImplementedError" in p for p in pages), "no lesson shows an exercise blank"


def _fake_tree(tmp_path: Path, second_cell: str) -> Path:
    lessons = tmp_path / "lessons"
    lessons.mkdir(parents=True)
    (lessons / "01_fine.py").write_text("# %% [markdown]\n# # Lesson 1 — Fine\n# $x^2$ is fine.\n\n"
                                        "# %%\nprint('hello')\n", encoding="utf-8")
    (lessons / "02_broken.py").write_text("# %% [markdown]\n# # Lesson 2 — Broken\n\n# %%\nx = 1\n\n"
                                          f"# %%\n{second_cell}\n", encoding="utf-8")
    return tmp_path


def test_a_failing_lesson_fails_the_build_naming_it(tmp_path) -> None:
    tree = _fake_tree(tmp_path / "tree", "y = x + 1\nassert y == 3, 'y should be 3'")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / site.MARKER).write_text("", encoding="utf-8")
    (tmp_path / "out" / "index.html").write_text("the last good build", encoding="utf-8")
    with pytest.raises(site.BuildError) as info:
        site.build(tmp_path / "out", tree, execute=True, jobs=1)
    message = str(info.value)
    assert "02_broken.py, cell 3 (line 9)" in message  # the assert, the 9th line of the file
    assert "AssertionError: y should be 3" in message
    assert "01_fine.py" not in message
    assert (tmp_path / "out" / "index.html").read_text(encoding="utf-8") == "the last good build", \
        "a failed build must leave the last good site alone"


def test_fake_tree_builds_and_typesets_math(tmp_path) -> None:
    tree = _fake_tree(tmp_path / "tree", "print(x + 1)")
    report = site.build(tmp_path / "out", tree, execute=True, jobs=1)
    page = (report.out / "lessons" / "01_fine.html").read_text(encoding="utf-8")
    assert "<math" in page and "$x^2$" not in page
    assert '<pre class="output">hello</pre>' in page
    assert '<pre class="output">2</pre>' in (report.out / "lessons" / "02_broken.html").read_text(encoding="utf-8")


def test_savefig_displays_the_figure_under_ipython(monkeypatch) -> None:
    """In Jupyter or VS Code (an IPython shell is running) a lesson's figure shows under its cell;
    in a plain run it is only saved. IPython is stood in for by a module recording display()."""
    import types

    from matplotlib.figure import Figure

    monkeypatch.syspath_prepend(str(ROOT / "lessons"))
    import _common

    shown: list = []
    ipython = types.ModuleType("IPython")
    ipython.version_info = (9, 0)                       # matplotlib's canvases read it
    display = types.ModuleType("IPython.display")
    display.Image = lambda filename: ("image", filename)
    display.display = shown.append
    monkeypatch.setitem(sys.modules, "IPython.display", display)
    name = "_test_inline_figure.png"
    try:
        monkeypatch.setitem(sys.modules, "IPython", ipython)
        ipython.get_ipython = lambda: None              # IPython imported, but no shell: a plain run
        _common.savefig(Figure(), name)
        assert shown == []
        ipython.get_ipython = lambda: object()          # a running shell
        path = _common.savefig(Figure(), name)
        assert shown == [("image", str(path))] and path.stat().st_size > 0
    finally:
        (_common.OUT / name).unlink(missing_ok=True)


def test_build_refuses_to_replace_a_folder_that_is_not_a_site(tmp_path) -> None:
    tree = _fake_tree(tmp_path / "tree", "print(x + 1)")
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(site.BuildError, match="is not a course site"):
        site.build(tmp_path / "precious", tree, execute=False)
    assert (tmp_path / "precious" / "notes.txt").read_text(encoding="utf-8") == "keep me"
    site.build(tmp_path / "fresh", tree, execute=False)
    site.build(tmp_path / "fresh", tree, execute=False)  # a previous build is replaced


def test_a_missing_translation_fails_the_build_naming_it(tmp_path) -> None:
    tree = _fake_tree(tmp_path / "tree", "print(x + 1)")
    (tree / "lessons" / "zh").mkdir()
    (tree / "lessons" / "zh" / "01_fine.md").write_text("<!-- cell 0 -->\n# 第1课——好\n", encoding="utf-8")
    with pytest.raises(site.BuildError, match="02_broken.py: no zh translation"):
        site.build_editions(tmp_path / "out", tree)
    assert not (tmp_path / "out").exists()

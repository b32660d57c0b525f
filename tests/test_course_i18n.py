"""The Chinese course (course/i18n.py, lessons/zh/, course/zh/): translations in step with the English
cells, the glossary's terms used and its wrong variants avoided, every message and hint translated,
and a CJK font that really has the glyphs the zh figures draw.

The drift checks run on a small lesson written here, stamped, then edited one side at a time: each
edit must be reported naming the lesson, the cell and the side that changed.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from course import assignments, i18n
from course import notebook as nb

ROOT = Path(__file__).resolve().parent.parent
LESSONS = sorted((ROOT / "lessons").glob("[0-9][0-9]_*.py"))
ZH = ROOT / "course" / "zh"
# Text in a zh block that is not prose: code spans and math, which stay as in English.
NOT_PROSE = re.compile(r"`[^`]*`|\$\$.*?\$\$|\$[^$\n]*\$", re.S)

LESSON = """# %% [markdown]
# # Lesson 1 — Tiny
# A gradient.

# %%
x = 1

# %% [markdown] tags=["questions"]
# Why?

# %%
print(x)
"""
TRANSLATION = "<!-- cell 0 -->\n# 第1课——小\n一个梯度。\n\n<!-- cell 2 -->\n为什么？\n"


def test_every_lesson_has_a_translation_in_step() -> None:
    """python -m course.i18n check: one zh file per lesson, every marker stamped, no drift."""
    problems = i18n.check_all(ROOT / "lessons")
    assert not problems, "\n".join(problems)


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[Path, Path]:
    lesson = tmp_path / "lessons" / "01_tiny.py"
    (tmp_path / "lessons" / "zh").mkdir(parents=True)
    lesson.write_text(LESSON, encoding="utf-8")
    zh = i18n.translation_path(lesson)
    zh.write_text(TRANSLATION, encoding="utf-8")
    return lesson, zh


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_check_names_the_side_that_drifted(tiny) -> None:
    lesson, zh = tiny
    assert all("unstamped" in p for p in i18n.check_file(zh)) and len(i18n.check_file(zh)) == 2
    assert i18n.stamp(zh) == 2 and i18n.check_file(zh) == []
    _edit(lesson, "# Why?", "# Why not?")                                  # English alone
    [problem] = i18n.check_file(zh)
    assert "01_tiny.py cell 2" in problem and "English cell changed" in problem
    _edit(zh, "为什么？", "为什么不？")                                     # then the translation too
    [problem] = i18n.check_file(zh)
    assert "both" in problem
    i18n.stamp(zh)
    _edit(zh, "一个梯度。", "两个梯度。")                                   # the translation alone
    [problem] = i18n.check_file(zh)
    assert "01_tiny.py cell 0" in problem and "translation changed" in problem


@pytest.mark.parametrize("translation, expected", [
    ("<!-- cell 0 -->\n标题\n", "cell 2 (markdown, line 8 of 01_tiny.py) has no block"),
    (TRANSLATION + "<!-- cell 1 -->\nx\n", "cell 1 is a code cell"),
    (TRANSLATION + "<!-- cell 9 -->\nx\n", "has only 4 cells"),
    ("<!-- cell 2 -->\n为什么？\n<!-- cell 0 -->\n标题\n", "out of order"),
    ("前言\n" + TRANSLATION, "text before the first"),
    (TRANSLATION.replace("<!-- cell 2 -->", "<!-- cell two -->"), "malformed marker"),
])
def test_check_rejects_a_malformed_translation(tiny, translation: str, expected: str) -> None:
    lesson, zh = tiny
    zh.write_text(translation, encoding="utf-8")
    problems = i18n.check_file(zh)
    assert any(expected in p for p in problems), problems
    with pytest.raises(i18n.I18nError):
        i18n.stamp(zh)


def test_translate_replaces_prose_only_and_script_runs(tiny, tmp_path) -> None:
    lesson, zh = tiny
    en, cells = nb.parse(lesson), i18n.load(lesson, "zh")
    assert [c.source for c in cells if c.kind == "code"] == [c.source for c in en if c.kind == "code"]
    assert [c.source for c in cells if c.kind == "markdown"] == ["# 第1课——小\n一个梯度。", "为什么？"]
    assert [c.tags for c in cells] == [c.tags for c in en]
    script = lesson.parent / "01_tiny_zh.py"
    script.write_text(i18n.script(lesson, "zh"), encoding="utf-8")
    assert [c.source for c in nb.parse(script)][1:] == [c.source for c in cells]
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout == "1\n", proc.stderr


def _zh_texts() -> list[tuple[str, str]]:
    """(where, text) of every piece of the zh course a reader sees: lesson blocks, the syllabus,
    the catalog, hints and messages (their zh side). Blockquotes are citations (the article's own
    words, verbatim), so they are left out."""
    out = []
    for path in sorted((ROOT / "lessons" / "zh").glob("*.md")) + [ZH / "syllabus.md"]:
        if path.exists():
            out += [(f"{path.relative_to(ROOT)}:{i}", line) for i, line in
                    enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if not line.startswith(">")]
    for name in ("catalog", "hints", "messages"):
        out += [(f"course/zh/{name}.toml: {key}", text) for key, text in _strings(i18n.load_table(name), "")]
    return out


def _strings(table: object, key: str):
    """Every zh-side string of a parsed TOML table (the en side of a message is skipped)."""
    if isinstance(table, dict):
        for k, v in table.items():
            if k != "en":
                yield from _strings(v, f"{key}.{k}" if key else k)
    elif isinstance(table, list):
        for v in table:
            yield from _strings(v, key)
    elif isinstance(table, str):
        yield key, table


def test_no_avoided_variant_of_a_glossary_term() -> None:
    bad = [f"{where}: {wrong!r} (the glossary says {term['zh']})"
           for where, text in _zh_texts() for term in i18n.glossary()
           for wrong in term.get("avoid", []) if wrong in text]
    assert not bad, "\n".join(bad)


def test_glossary_terms_of_the_english_cell_appear_in_its_translation() -> None:
    """A block whose English cell uses a glossary term (outside code and math) must use the term's
    Chinese (or the kept English name the glossary allows)."""
    missing = []
    for zh in sorted((ROOT / "lessons" / "zh").glob("*.md")):
        cells = nb.parse(i18n.lesson_path(zh))
        for block in i18n.parse_blocks(zh):
            if block.cell >= len(cells):
                continue                      # reported by the in-step test
            english = NOT_PROSE.sub(" ", cells[block.cell].source)
            for term in i18n.glossary():
                if any(re.search(rf"\b{re.escape(e)}\b", english, re.I) for e in term["en"]) and \
                        not re.search(term.get("match", re.escape(term["zh"])), block.text):
                    missing.append(f"{zh.name}:{block.line} cell {block.cell}: {term['en'][0]!r} -> {term['zh']}")
    assert not missing, "\n".join(missing)


def test_every_message_has_both_languages_with_the_same_fields() -> None:
    problems = []
    for section, entries in i18n.load_table("messages").items():
        for name, entry in entries.items():
            if set(entry) != set(i18n.LANGS):
                problems.append(f"[{section}] {name}: languages {sorted(entry)}")
            elif i18n.fields(entry["en"]) != i18n.fields(entry["zh"]):
                problems.append(f"[{section}] {name}: fields {i18n.fields(entry['en'])} vs {i18n.fields(entry['zh'])}")
    assert not problems, "\n".join(problems)


def test_every_catalog_lesson_has_zh_goals_and_readings() -> None:
    import tomllib

    catalog = tomllib.loads((ROOT / "course" / "catalog.toml").read_text(encoding="utf-8"))["lesson"]
    zh = {e["number"]: e for e in i18n.load_table("catalog")["lesson"]}
    wrong = [f"lesson {e['number']}: {field} ({len(e.get(field, []))} in English, "
             f"{len(zh.get(e['number'], {}).get(field, []))} in course/zh/catalog.toml)"
             for e in catalog for field in ("goals", "readings")
             if len(e.get(field, [])) != len(zh.get(e["number"], {}).get(field, []))]
    assert not wrong, "\n".join(wrong)


def test_every_assignment_and_task_text_is_translated() -> None:
    hints = i18n.load_table("hints")
    missing = [f"{a.id}: {field}" for a in assignments.load_all() for field in ("title", "intro")
               if not hints.get(a.id, {}).get(field)]
    for a in assignments.load_all():
        for t in a.tasks:
            missing += [f"{t.id}: {field}" for field, english in (("title", t.title), ("hint", t.hint))
                        if english and not hints.get(t.id, {}).get(field)]
    unknown = set(hints) - {a.id for a in assignments.load_all()} - {t.id for a in assignments.load_all()
                                                                      for t in a.tasks}
    assert not missing and not unknown, f"untranslated: {missing}; not a task or assignment: {sorted(unknown)}"


def test_the_zh_figure_font_has_real_glyphs() -> None:
    """The font the zh lessons draw with maps Chinese characters to glyphs (index 0 is .notdef, the
    tofu box), and two different characters render to different bitmaps."""
    sys.path.insert(0, str(ROOT / "lessons"))
    try:
        import _common
    finally:
        sys.path.remove(str(ROOT / "lessons"))
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    name = _common.cjk_font()
    assert name is not None, "no CJK font: apt-get install -y fonts-noto-cjk"
    font = FT2Font(font_manager.findfont(font_manager.FontProperties(family=name), fallback_to_default=False))
    label = "梯度下降，计算图"                       # characters the zh figure labels use
    assert all(font.get_char_index(ord(c)) != 0 for c in label)

    def bitmap(char: str) -> np.ndarray:
        font.set_size(32, 72)
        font.set_text(char)
        font.draw_glyphs_to_bitmap()
        return np.asarray(font.get_image())

    ti, du = bitmap("梯"), bitmap("度")
    assert ti.any() and (ti.shape != du.shape or not np.array_equal(ti, du))


def test_zh_figure_labels_have_every_glyph() -> None:
    """A zh lesson's figure text mixes Chinese, Latin and math symbols; with _common's zh font set-up
    matplotlib finds a glyph for each (a missing one is a "Glyph ... missing" warning, an error here)."""
    code = ("import _common, matplotlib.pyplot as plt\n"
            "fig, ax = plt.subplots()\n"
            "ax.set_title('softmax的雅可比矩阵diag(s) − s sᵀ，∂L/∂z（目标）')\n"
            "ax.text(0.5, 0.5, 'x（常量）', family=['monospace', 'sans-serif'])\n"
            "fig.canvas.draw()\n")
    proc = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", code], cwd=ROOT / "lessons",
                          env={**os.environ, "LESSON_LANG": "zh", "MPLBACKEND": "Agg"},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_missing_cjk_font_warns_once_naming_the_package(monkeypatch, capsys) -> None:
    sys.path.insert(0, str(ROOT / "lessons"))
    try:
        import _common
    finally:
        sys.path.remove(str(ROOT / "lessons"))
    import matplotlib

    monkeypatch.setattr(_common, "cjk_font", lambda: None)
    monkeypatch.setitem(matplotlib.rcParams, "font.sans-serif", ["DejaVu Sans"])
    monkeypatch.setitem(matplotlib.rcParams, "font.family", ["sans-serif"])
    _common._use_cjk_font()
    assert "apt-get install -y fonts-noto-cjk" in capsys.readouterr().err
    assert matplotlib.rcParams["font.sans-serif"] == ["DejaVu Sans"]        # fell back, unchanged
    assert matplotlib.rcParams["font.family"] == ["sans-serif"]


def test_student_copy_drops_the_answers_translation(tmp_path) -> None:
    """course.student drops the answer cells from a lesson; the zh file must lose their blocks and
    stay in step with the cells that remain (renumbered), so the student site builds in Chinese."""
    from course import _blank

    lesson = tmp_path / "lessons" / "01_tiny.py"
    (tmp_path / "lessons" / "zh").mkdir(parents=True)
    lesson.write_text(LESSON.replace("# %%\nprint(x)", '# %% [markdown] tags=["answers"]\n# Because.\n\n'
                                     "# %%\nprint(x)"), encoding="utf-8")
    zh = i18n.translation_path(lesson)
    zh.write_text(TRANSLATION + "\n<!-- cell 3 -->\n因为。\n", encoding="utf-8")
    i18n.stamp(zh)
    student = tmp_path / "student" / "lessons" / "01_tiny.py"
    (student.parent / "zh").mkdir(parents=True)
    student.write_text(_blank.strip_answer_cells(lesson.read_text(encoding="utf-8")), encoding="utf-8")
    i18n.translation_path(student).write_text(i18n.without_answers(lesson, zh), encoding="utf-8")
    assert i18n.check_file(i18n.translation_path(student)) == []
    cells = i18n.load(student, "zh")
    assert len(cells) == 4 and "因为" not in "".join(c.source for c in cells)


def test_grader_speaks_chinese_and_keeps_english_json_keys(tmp_path) -> None:
    """A student build graded with --lang zh: the unwritten task says so in Chinese with its zh
    hint, the table and total are in Chinese, and the JSON report keeps its English keys."""
    tree = tmp_path / "student"
    proc = subprocess.run([sys.executable, "-m", "course.student", str(tree)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = tmp_path / "grade.json"
    proc = subprocess.run([sys.executable, "-m", "course.grade", str(tree), "--task", "a1.mul", "--lang", "zh",
                           "--json", str(report)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    hint = i18n.load_table("hints")["a1.mul"]["hint"]
    assert f"尚未实现（a1.mul：{hint}）" in proc.stdout and "未通过" in proc.stdout, proc.stdout
    assert "总分：0/" in proc.stdout and "total" not in proc.stdout
    import json

    data = json.loads(report.read_text(encoding="utf-8"))
    assert set(data) == {"total", "max", "seed", "tasks"}
    assert set(data["tasks"][0]) == {"assignment", "task", "points", "max", "passed", "message"}

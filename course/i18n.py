"""The course in other languages: a lesson's translated prose, kept in step with its English cells.

A translation of ``lessons/NN_topic.py`` lives in ``lessons/<lang>/NN_topic.md`` (today: ``zh``) and
holds only prose. It is a sequence of blocks, one per markdown cell of the lesson, in order; each
block starts with a marker line naming the cell's 0-based index among ALL the lesson's cells
(``course.notebook.parse``), and the lines up to the next marker are that cell's markdown::

    <!-- cell 0 en:1a2b3c4d zh:5e6f7a8b -->
    # 第 1 课 — 计算图
    ...

Code, asserts and numbers are never copied: the translated lesson is the English one with each
markdown cell's source replaced by its block (``translate``). Figure labels that a reader sees are
written in both languages in the code itself (``lessons/_common.tr``).

Keeping the two in step: ``stamp`` writes into each marker the hashes (8 hex of sha256) of the
English cell as parsed and of the block as written. ``check`` then fails when one side changed and
the other did not: English edited but the translation not (translate it, then re-stamp), or the
translation edited alone (review it against the English, then re-stamp). A missing block, a block
for a code cell or a cell that does not exist, and an unstamped marker are errors too.

Command line::

    python -m course.i18n stamp lessons/zh/NN_topic.md ...     # fill or refresh the hashes
    python -m course.i18n check [lessons/zh/NN_topic.md ...]   # all lessons if none named
    python -m course.i18n script lessons/NN_topic.py --lang zh > NN_topic_zh.py
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import re
import string
import sys
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

from . import notebook as nb

ROOT = Path(__file__).resolve().parent.parent
LANGS = ("en", "zh")            # en is the source; every other language is a translation of it
TEXT = ROOT / "course" / "zh"   # the zh course's tables: messages, glossary, hints, catalog, syllabus
_MARKER = re.compile(r"^<!--\s*cell\s+(?P<k>\d+)(?:\s+en:(?P<en>[0-9a-f]{8})\s+zh:(?P<zh>[0-9a-f]{8}))?\s*-->\s*$")
_LOOSE_MARKER = re.compile(r"^<!--\s*cell\b")     # looks like a marker: a malformed one is an error


class I18nError(Exception):
    """A translation file is malformed or out of step with its lesson; the message names both."""


@dataclass(frozen=True)
class Block:
    """One translated cell: ``cell`` indexes the lesson's cells; ``text`` is stripped markdown."""
    cell: int
    text: str
    line: int                       # 1-based line of the marker in the translation file
    en_hash: str | None = None      # as stamped; None while unstamped
    zh_hash: str | None = None


def digest(text: str) -> str:
    """The 8-hex stamp of a cell's text: enough to notice an edit, short enough to read."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


def translation_path(lesson: Path, lang: str = "zh") -> Path:
    """``lessons/NN_topic.py`` -> ``lessons/<lang>/NN_topic.md``."""
    lesson = Path(lesson)
    return lesson.parent / lang / f"{lesson.stem}.md"


def lesson_path(translation: Path) -> Path:
    """``lessons/<lang>/NN_topic.md`` -> ``lessons/NN_topic.py``."""
    translation = Path(translation)
    return translation.parent.parent / f"{translation.stem}.py"


def parse_blocks(path: Path) -> list[Block]:
    """The blocks of a translation file. Text before the first marker, or a line that starts like a
    marker but is not one, is an error naming the line."""
    path = Path(path)
    blocks: list[Block] = []
    head: re.Match | None = None
    head_line, body = 0, []
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, text in enumerate(lines + ["<!-- cell 0 -->"], start=1):   # a sentinel closes the last block
        m = _MARKER.match(text)
        if m is None:
            if _LOOSE_MARKER.match(text):
                raise I18nError(f"{path}:{i}: malformed marker {text.strip()!r} "
                                "(expected '<!-- cell K -->' or '<!-- cell K en:xxxxxxxx zh:xxxxxxxx -->')")
            if head is None and text.strip():
                raise I18nError(f"{path}:{i}: text before the first '<!-- cell K -->' marker")
            body.append(text)
            continue
        if head is not None:
            blocks.append(Block(int(head["k"]), "\n".join(body).strip(), head_line, head["en"], head["zh"]))
        head, head_line, body = m, i, []
    return blocks


def _pair(lesson: Path, path: Path) -> tuple[list[nb.Cell], list[Block], list[str]]:
    """The lesson's cells, the translation's blocks, and the structural problems between them
    (each message names the translation file, the line and the cell)."""
    cells, blocks = nb.parse(lesson), parse_blocks(path)
    problems: list[str] = []
    seen: dict[int, int] = {}
    last = -1
    for b in blocks:
        where = f"{path}:{b.line}: cell {b.cell}"
        if b.cell >= len(cells):
            problems.append(f"{where}: {lesson.name} has only {len(cells)} cells (0..{len(cells) - 1})")
        elif cells[b.cell].kind != "markdown":
            problems.append(f"{where} is a code cell (line {cells[b.cell].line} of {lesson.name}); "
                            "only markdown cells are translated")
        if b.cell in seen:
            problems.append(f"{where}: a second block for this cell (the first is at line {seen[b.cell]})")
        elif b.cell < last:
            problems.append(f"{where}: out of order (after a block for cell {last})")
        seen.setdefault(b.cell, b.line)
        last = max(last, b.cell)
        if not b.text:
            problems.append(f"{where}: the block is empty")
    for k, cell in enumerate(cells):
        if cell.kind == "markdown" and k not in seen:
            problems.append(f"{path}: cell {k} (markdown, line {cell.line} of {lesson.name}) has no block")
    return cells, blocks, problems


def check_file(path: Path, lesson: Path | None = None) -> list[str]:
    """Every way ``path`` is out of step with its lesson, as messages naming lesson, cell and side."""
    path = Path(path)
    lesson = lesson_path(path) if lesson is None else Path(lesson)
    if not lesson.exists():
        return [f"{path}: no lesson {lesson} to translate"]
    try:
        cells, blocks, problems = _pair(lesson, path)
    except (I18nError, nb.LessonError) as e:
        return [str(e)]
    for b in blocks:
        if b.cell >= len(cells) or cells[b.cell].kind != "markdown":
            continue                                      # already reported by _pair
        where = f"{path}:{b.line}: {lesson.name} cell {b.cell}"
        if b.en_hash is None:
            problems.append(f"{where}: unstamped marker (run python -m course.i18n stamp {path})")
            continue
        en_changed = digest(cells[b.cell].source) != b.en_hash
        zh_changed = digest(b.text) != b.zh_hash
        if en_changed and not zh_changed:
            problems.append(f"{where}: the English cell changed since the translation was stamped, the "
                            "translation did not: update the translation, then re-stamp")
        elif zh_changed and not en_changed:
            problems.append(f"{where}: the translation changed but the English cell did not: review it "
                            "against the English, then re-stamp")
        elif en_changed and zh_changed:
            problems.append(f"{where}: both the English cell and the translation changed since the stamp: "
                            "check that they say the same, then re-stamp")
    return problems


def check_all(lessons_dir: Path = ROOT / "lessons", lang: str = "zh") -> list[str]:
    """``check_file`` for every lesson; a lesson without a translation, or a translation without a
    lesson, is a problem too."""
    lessons_dir = Path(lessons_dir)
    problems = []
    lessons = sorted(lessons_dir.glob("[0-9][0-9]_*.py"))
    for lesson in lessons:
        path = translation_path(lesson, lang)
        if path.exists():
            problems += check_file(path, lesson)
        else:
            problems.append(f"{lesson}: no translation {path}")
    names = {translation_path(p, lang).name for p in lessons}
    problems += [f"{p}: no lesson {lesson_path(p).name} for this translation"
                 for p in sorted((lessons_dir / lang).glob("*.md")) if p.name not in names]
    return problems


def stamp(path: Path) -> int:
    """Rewrite every marker of ``path`` with the current hashes of both sides; returns how many
    markers changed. Refuses (I18nError) while the blocks do not match the lesson's cells."""
    path = Path(path)
    lesson = lesson_path(path)
    cells, blocks, problems = _pair(lesson, path)
    if problems:
        raise I18nError("not stamped, fix these first:\n" + "\n".join(problems))
    by_line = {b.line: b for b in blocks}
    lines = path.read_text(encoding="utf-8").splitlines()
    changed = 0
    for b in by_line.values():
        new = f"<!-- cell {b.cell} en:{digest(cells[b.cell].source)} zh:{digest(b.text)} -->"
        changed += lines[b.line - 1] != new
        lines[b.line - 1] = new
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return changed


def translate(cells: list[nb.Cell], path: Path) -> list[nb.Cell]:
    """``cells`` (a lesson as parsed) with every markdown cell's source replaced by its block in the
    translation file ``path``. Raises I18nError when a markdown cell has no block or a block does
    not belong to a markdown cell; stale hashes are ``check``'s business, not an error here."""
    path = Path(path)
    by_cell = {b.cell: b for b in parse_blocks(path)}
    problems = [f"{path}:{b.line}: cell {b.cell} is not a markdown cell of the lesson"
                for b in by_cell.values() if b.cell >= len(cells) or cells[b.cell].kind != "markdown"]
    problems += [f"{path}: cell {k} (line {c.line} of the lesson) has no block"
                 for k, c in enumerate(cells) if c.kind == "markdown" and k not in by_cell]
    if problems:
        raise I18nError("\n".join(problems))
    return [replace(c, source=by_cell[k].text) if c.kind == "markdown" else c for k, c in enumerate(cells)]


def without_answers(lesson: Path, path: Path) -> str:
    """The translation ``path`` for the student copy of ``lesson`` (``course.student`` drops the
    instructor's answer cells): the answers' blocks go too, and the other markers are renumbered to
    the cells that remain. Stamps are kept: neither side of a kept cell changed."""
    kept = [i for i, c in enumerate(nb.parse(lesson)) if "answers" not in c.tags]
    new_index = {old: new for new, old in enumerate(kept)}
    return "\n".join(f"<!-- cell {new_index[b.cell]}{f' en:{b.en_hash} zh:{b.zh_hash}' if b.en_hash else ''} -->\n"
                     f"{b.text}\n" for b in parse_blocks(path) if b.cell in new_index)


def load(lesson: Path, lang: str) -> list[nb.Cell]:
    """The cells of ``lesson`` in ``lang`` (English: as written)."""
    if lang not in LANGS:
        raise I18nError(f"unknown language {lang!r} (expected one of {', '.join(LANGS)})")
    cells = nb.parse(lesson)
    if lang == "en":
        return cells
    path = translation_path(lesson, lang)
    if not path.exists():
        raise I18nError(f"{lesson}: no {lang} translation ({path})")
    return translate(cells, path)


def to_percent(cells: list[nb.Cell]) -> str:
    """A percent-format lesson (the inverse of ``course.notebook.parse``)."""
    out = []
    for cell in cells:
        meta = f" tags={json.dumps(list(cell.tags), ensure_ascii=False)}" if cell.tags else ""
        if cell.kind == "markdown":
            out.append(f"# %% [markdown]{meta}\n"
                       + "\n".join(f"# {ln}" if ln else "#" for ln in cell.source.splitlines()))
        else:
            out.append(f"# %%{meta}\n{cell.source}")
    return "\n\n".join(out) + "\n"


def script(lesson: Path, lang: str) -> str:
    """The lesson as a runnable percent-format script in ``lang``: its prose translated, and a first
    cell that sets ``LESSON_LANG`` so ``_common.tr`` picks the figure labels of that language."""
    cells = load(lesson, lang)
    if lang != "en":
        setup = nb.Cell("code", f'import os\n\nos.environ.setdefault("LESSON_LANG", "{lang}")', 0)
        cells = [setup, *cells]
    return to_percent(cells)


# --- messages and tables ----------------------------------------------------------------------

@functools.cache
def load_table(name: str) -> dict:
    """``course/zh/<name>.toml``, parsed (an error names the file and the TOML problem)."""
    path = TEXT / f"{name}.toml"
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise I18nError(f"{path}: {e}") from None


def fields(text: str) -> set[str]:
    """The ``{name}`` fields a message fills in."""
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def message(key: str, lang: str, **values: object) -> str:
    """The message ``section.name`` of ``course/zh/messages.toml`` in ``lang``, its fields filled."""
    section, _, name = key.partition(".")
    entry = load_table("messages").get(section, {}).get(name)
    if entry is None or lang not in entry:
        raise I18nError(f"{TEXT / 'messages.toml'}: no [{section}] {name}.{lang}")
    return entry[lang].format(**values)


def glossary() -> list[dict]:
    """The glossary's terms: each {en, zh, avoid?, note?} (``course/zh/glossary.toml``)."""
    return load_table("glossary")["term"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m course.i18n", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("stamp", help="fill or refresh the en:/zh: hashes in translation files")
    s.add_argument("files", nargs="+", type=Path)
    c = sub.add_parser("check", help="fail when a translation is out of step with its lesson")
    c.add_argument("files", nargs="*", type=Path, help="translation files (default: every lesson)")
    c.add_argument("--lang", default="zh", choices=LANGS[1:])
    w = sub.add_parser("script", help="print a lesson as a percent-format script in another language")
    w.add_argument("lesson", type=Path)
    w.add_argument("--lang", default="zh", choices=LANGS)
    args = p.parse_args(argv)
    try:
        if args.cmd == "stamp":
            for f in args.files:
                print(f"{f}: {stamp(f)} marker(s) updated")
            return 0
        if args.cmd == "check":
            problems = [q for f in args.files for q in check_file(f)] if args.files else check_all(lang=args.lang)
            print("\n".join(problems) if problems else "translations in step with their lessons",
                  file=sys.stderr if problems else sys.stdout)
            return 1 if problems else 0
        sys.stdout.write(script(args.lesson, args.lang))
        return 0
    except (I18nError, nb.LessonError, OSError) as e:
        print(f"course.i18n: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

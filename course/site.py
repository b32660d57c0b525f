"""``python -m course.site OUT``: the course as static web pages, executed, offline.

Every lesson runs (one subprocess per lesson, two at once), and its page shows each cell's code,
printed output and figures, its goals, prerequisites and study time (``course/catalog.toml``), its
"Check your understanding" questions, and links to the previous and next lesson. The index page has
the course map, the syllabus (``course/syllabus.md``) and one page per assignment. Every lesson is
also exported as a notebook, ``OUT/notebooks/NN_topic.ipynb``. Math is typeset to MathML at build
time and nothing is fetched from the network, so the site works from ``file://``.

Editions:

- default: the reference course, executed, without the answers to the questions;
- ``--instructor``: the same with the answers (and a banner saying so);
- ``--root TREE``: the course of another tree, e.g. ``python -m course.student`` output: lessons
  are shown with their blanks and are *not* executed (a blank raises), no answers.

A lesson that fails stops the build with the lesson, cell, line and error named.
"""
from __future__ import annotations

import argparse
import html
import os
import shutil
import sys
import tempfile
import time
import re
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from . import _site_pages as P
from . import _site_render as R
from . import i18n
from . import notebook as nb

ROOT = Path(__file__).resolve().parent.parent
Runs = dict[str, list[nb.CellRun | None]]       # lesson file name -> one entry per cell


class BuildError(Exception):
    """The site cannot be built; the message says which file and why."""


@dataclass
class BuildReport:
    out: Path
    pages: list[Path] = field(default_factory=list)
    runs: Runs = field(default_factory=dict)
    seconds: float = 0.0
    execute_seconds: float = 0.0


def load_lessons(root: Path, lang: str = "en") -> tuple[list[P.LessonInfo], list[dict]]:
    """The lessons found in ``root/lessons`` described by ``root/course/catalog.toml``, and the
    catalog's assignment tables. A lesson file the catalog does not list (or a tree without a
    catalog) gets its title from its first heading and no goals. In a translated edition, the
    titles, goals and readings come from ``course/zh/catalog.toml`` where it has them."""
    files = sorted(p.name for p in (root / "lessons").glob("[0-9][0-9]_*.py"))
    if not files:
        raise BuildError(f"no lessons (lessons/NN_topic.py) under {root}")
    catalog_path = root / "course" / "catalog.toml"
    catalog: dict = {}
    if catalog_path.exists():
        try:
            catalog = tomllib.loads(catalog_path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise BuildError(f"{catalog_path}: {e}") from None
    listed = {entry.get("file"): entry for entry in catalog.get("lesson", [])}
    translated = {e["number"]: e for e in i18n.load_table("catalog").get("lesson", [])} if lang != "en" else {}
    infos = []
    for name in files:
        entry = listed.get(name)
        if entry is None:
            infos.append(P.LessonInfo(int(name[:2]), name, _first_heading(root / "lessons" / name, lang)))
            continue
        if lang != "en":
            entry = {**entry, "title": _first_heading(root / "lessons" / name, lang),
                     **{k: v for k, v in translated.get(entry.get("number"), {}).items() if k in ("goals", "readings")}}
        try:
            infos.append(P.LessonInfo(**entry))
        except TypeError as e:
            raise BuildError(f"{catalog_path}: the [[lesson]] table for {name}: {e}") from None
    return infos, catalog.get("assignment", [])


def _first_heading(path: Path, lang: str = "en") -> str:
    """The lesson's title from its first heading ("# Lesson 3 — Title", "# 第3课——标题")."""
    try:
        cells = i18n.load(path, lang)
    except (nb.LessonError, i18n.I18nError) as e:
        raise BuildError(str(e)) from None
    for cell in cells:
        for line in cell.source.splitlines() if cell.kind == "markdown" else []:
            if line.startswith("# "):
                return re.split("——|—", line[2:], maxsplit=1)[-1].strip()
    return path.stem


def reads_lang(path: Path) -> bool:
    """Whether a lesson's code depends on the edition (calls ``_common.tr``): only those run once
    per language; the others' output is the same in every edition and runs once."""
    return any(c.kind == "code" and _TR.search(c.source) for c in nb.parse(path))


_TR = re.compile(r"\btr\(")


def execute_lessons(lessons_dir: Path, files: list[str], jobs: int = 2,
                    langs: tuple[str, ...] = ("en",)) -> dict[str, Runs]:
    """Run every lesson for each edition in ``langs``, ``jobs`` at a time, all in one pool (the two
    editions' runs interleave). With English among them, a lesson that does not read LESSON_LANG
    runs once and its English run serves every edition. Raises BuildError naming every lesson that
    failed."""
    todo = [(lang, name) for lang in langs for name in files
            if lang == "en" or "en" not in langs or reads_lang(lessons_dir / name)]
    runs: dict[str, Runs] = {lang: {} for lang in langs}
    errors: list[str] = []
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {(lang, name): pool.submit(nb.execute, lessons_dir / name, Path(tmp) / f"{lang}-{name}.json",
                                             lang=lang)
                   for lang, name in todo}
        for (lang, name), future in futures.items():
            try:
                runs[lang][name] = future.result()
            except nb.LessonError as e:
                errors.append(f"[{lang}] {e}")
    if errors:
        raise BuildError("lessons failed, so the site was not built:\n\n" + "\n\n".join(errors))
    for lang in langs if "en" in langs else ():
        for name in files:
            runs[lang].setdefault(name, runs["en"][name])
    return runs


def lesson_page(info: P.LessonInfo, cells: list[nb.Cell], runs: list[nb.CellRun | None] | None,
                by_number: dict[int, P.LessonInfo], neighbours: tuple[P.LessonInfo | None, ...], *,
                instructor: bool, banner: str, figures: dict[str, str], ed: R.Edition = R.Edition()) -> str:
    """One lesson: its cells (answers only for the instructor), with a box of goals, prerequisites,
    study time and readings after the opening cell."""
    parts: list[str] = []
    for i, cell in enumerate(cells):
        try:
            if cell.kind == "code":
                parts.append(R.code(cell.source))
                run = runs[i] if runs else None
                if run and run.output.strip():
                    parts.append(R.output(run.output))
                for fig in run.figures if run else []:
                    parts.append(f'<figure><img src="{html.escape(figures[fig])}" alt="{html.escape(Path(fig).name)}">'
                                 f"<figcaption>{html.escape(Path(fig).name)}</figcaption></figure>")
            elif "answers" in cell.tags:
                if instructor:
                    parts.append(f'<details class="answers" open><summary>{ed.t("answers")}</summary>'
                                 f"{R.markdown(cell.source)}</details>")
            elif "questions" in cell.tags:
                parts.append(f'<section class="questions">{R.markdown(cell.source)}</section>')
            else:
                text = R.markdown(cell.source)
                if i == 0:   # the lesson's facts go right under its title, before the prose
                    box = _meta_box(info, by_number, ed)
                    head, sep, rest = text.partition("</h1>")
                    text = head + sep + box + rest if sep else box + text
                parts.append(f'<div class="md">{text}</div>')
        except R.RenderError as e:
            source = f"lessons/{info.file}" if ed.lang == "en" else \
                f"lessons/{ed.lang}/{info.file.removesuffix('.py')}.md"
            raise BuildError(f"{source}, cell {i + 1} (line {cell.line}): {e}") from None
    prev, nxt = neighbours
    nav = "".join([R.link("../index.html", ed.t("course_index")), '<span class="spacer"></span>',
                   R.link(prev.page.removeprefix("lessons/"), ed.t("previous", number=prev.number), title=prev.title)
                   if prev else "",
                   R.link(nxt.page.removeprefix("lessons/"), ed.t("next", number=nxt.number), title=nxt.title)
                   if nxt else ""])
    return R.page(ed.label(info.number, info.title), "\n".join(parts), rel=info.page, edition=ed,
                  banner=banner, nav=nav)


def _meta_box(info: P.LessonInfo, by_number: dict[int, P.LessonInfo], ed: R.Edition) -> str:
    goals = "".join(f"<li>{html.escape(g)}</li>" for g in info.goals)
    readings = "".join(f"<li>{html.escape(r)}</li>" for r in info.readings)
    prereq = ed.t("list_separator").join(
        R.link(by_number[n].page.removeprefix("lessons/"), ed.label(n, by_number[n].title))
        if n in by_number else ed.t("lesson", number=n) for n in info.prerequisites) or ed.t("none")
    facts = " · ".join(x for x in [ed.t("week", week=info.week) if info.week else "",
                                   ed.t("study_time", minutes=info.study_minutes) if info.study_minutes else ""]
                       if x)
    notebook = R.link(f"../notebooks/{info.file.removesuffix('.py')}.ipynb", ed.t("notebook_link"))
    return ('<div class="meta">' + (f"<h2>{ed.t('goals')}</h2><ul>{goals}</ul>" if goals else "")
            + f"<h2>{ed.t('prerequisites')}</h2><p>{prereq}</p>"
            + (f"<h2>{ed.t('readings')}</h2><ul>{readings}</ul>" if readings else "")
            + f'<p class="facts">{facts}{" · " if facts else ""}{ed.t("download", notebook=notebook)}</p></div>')


MARKER = ".course-site"   # in every built site: the only kind of non-empty folder build() will replace


def _clear(out: Path) -> None:
    """Remove a previous build at ``out``; refuse a non-empty folder that is not one (``OUT`` = the
    repository or a home folder by mistake must not be wiped)."""
    if out.exists():
        if not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).exists()):
            raise BuildError(f"{out} exists and is not a course site built here (no {MARKER} file); "
                             "choose an empty or new folder")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("built by python -m course.site; the next build replaces this folder\n",
                              encoding="utf-8")


def build(out: Path, root: Path = ROOT, *, instructor: bool = False, execute: bool | None = None,
          runs: Runs | None = None, jobs: int = 2, lang: str = "en", other: str | None = None) -> BuildReport:
    """Build the site into ``out`` in ``lang``. ``execute`` defaults to True for this repository
    and False for another tree (a student build, whose blanks raise). ``runs`` reuses an earlier
    build's execution (the instructor and default editions of one tree run the same code). ``other``
    names the sibling edition at ``out/../<other>`` that every page links to."""
    t0 = time.perf_counter()
    root, out = Path(root).resolve(), Path(out)
    ed = R.Edition(lang, other)
    student = root != ROOT
    execute = (not student) if execute is None else execute
    instructor = instructor and not student
    banner = (ed.t("banner_student" if execute else "banner_student_not_run") if student
              else ed.t("banner_instructor") if instructor else "")
    lessons, assignment_catalog = load_lessons(root, lang)
    parsed = {}
    for info in lessons:
        try:
            parsed[info.file] = i18n.load(root / "lessons" / info.file, lang)
        except (nb.LessonError, i18n.I18nError) as e:
            raise BuildError(str(e)) from None
    report = BuildReport(out)
    if execute and runs is None:
        runs = execute_lessons(root / "lessons", [i.file for i in lessons], jobs, (lang,))[lang]
        report.execute_seconds = time.perf_counter() - t0
    report.runs = runs or {}

    _clear(out)
    for sub in ("assets", "lessons/figures", "notebooks", "assignments"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    (out / "assets" / "style.css").write_text(R.stylesheet(), encoding="utf-8")

    def write(rel: str, text: str) -> None:
        (out / rel).write_text(text, encoding="utf-8")
        report.pages.append(out / rel)

    by_number = {i.number: i for i in lessons}
    for k, info in enumerate(lessons):
        cells = [c for c in parsed[info.file] if instructor or "answers" not in c.tags]
        lesson_runs = report.runs.get(info.file)
        if lesson_runs is not None:
            keep = [j for j, c in enumerate(parsed[info.file]) if instructor or "answers" not in c.tags]
            lesson_runs = [lesson_runs[j] for j in keep]
        figures = {}
        for run in lesson_runs or []:
            for fig in run.figures if run else []:
                shutil.copy2(fig, out / "lessons" / "figures" / Path(fig).name)
                figures[fig] = f"figures/{Path(fig).name}"
        neighbours = (lessons[k - 1] if k else None, lessons[k + 1] if k + 1 < len(lessons) else None)
        write(info.page, lesson_page(info, cells, lesson_runs, by_number, neighbours,
                                     instructor=instructor, banner=banner, figures=figures, ed=ed))
        nb.write_ipynb(cells, out / "notebooks" / f"{info.file.removesuffix('.py')}.ipynb", lesson_runs)

    assignments = P.load_assignments(assignment_catalog)
    for a in assignments:
        if a.assignment is not None:
            write(a.page, P.assignment_page(a, by_number, banner=banner, ed=ed))
        else:
            print(f"warning: assignment module {a.module} not built ({a.error})", file=sys.stderr)
    # In every edition, so the language switch of the zh glossary lands on a page; linked from the
    # zh navigation.
    write("glossary.html", P.glossary_page(ed, banner=banner))
    syllabus = root / "course" / ("syllabus.md" if lang == "en" else f"{lang}/syllabus.md")
    note = ed.t("built_run" if execute else "built_not_run", when=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()))
    write("index.html", P.index_page(lessons, assignments,
                                     syllabus.read_text(encoding="utf-8") if syllabus.exists() else "",
                                     banner=banner, build_note=note, ed=ed))
    report.seconds = time.perf_counter() - t0
    return report


def build_editions(out: Path, root: Path = ROOT, *, langs: tuple[str, ...] = i18n.LANGS, instructor: bool = False,
                   jobs: int = 2) -> dict[str, BuildReport]:
    """Every edition in ``langs`` into ``out/<lang>/``, each page linking to the same page of the
    other edition, and ``out/index.html`` choosing between them. The lessons of all editions run
    in one pool (``execute_lessons``); a student tree is not executed."""
    t0 = time.perf_counter()
    root, out = Path(root).resolve(), Path(out)
    # Every edition's lessons load first: a missing or malformed translation fails now, not after
    # minutes of running lessons.
    lessons = [load_lessons(root, lang)[0] for lang in langs][0]
    runs = execute_lessons(root / "lessons", [i.file for i in lessons], jobs, langs) if root == ROOT else {}
    executed = time.perf_counter() - t0
    _clear(out)
    reports = {}
    for lang in langs:
        other = next((x for x in langs if x != lang), None)
        reports[lang] = build(out / lang, root, instructor=instructor, runs=runs.get(lang), jobs=jobs,
                              lang=lang, other=other)
        reports[lang].execute_seconds = executed
    choices = "".join(f"<li>{R.link(f'{lang}/index.html', i18n.message('site.course_index', lang))} "
                      f"({i18n.message('site.language_name', lang)})</li>" for lang in langs)
    (out / "index.html").write_text(R.page("Course · 课程", f"<ul>{choices}</ul>", rel="index.html"),
                                    encoding="utf-8")
    return reports


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m course.site", description=__doc__.split("\n")[0])
    p.add_argument("out", nargs="?", default="site", type=Path, help="output folder (default: site/)")
    p.add_argument("--root", type=Path, default=ROOT,
                   help="build the course of this tree (a student build: not executed, no answers)")
    p.add_argument("--instructor", action="store_true", help="show the answers to the questions")
    p.add_argument("--lang", default="en", choices=[*i18n.LANGS, "all"],
                   help="the edition's language (default en); all: every edition into OUT/<lang>/, "
                        "their lessons run together")
    p.add_argument("--jobs", type=int, default=2, help="lessons executed at once (default 2)")
    args = p.parse_args(argv)
    if not (args.root / "lessons").is_dir():
        p.error(f"--root {args.root}: no lessons/ folder there")
    # One BLAS thread per lesson: two lessons at once on two cores, not four threads fighting.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        if args.lang == "all":
            reports = build_editions(args.out, args.root, instructor=args.instructor, jobs=args.jobs)
        else:
            reports = {args.lang: build(args.out, args.root, instructor=args.instructor, jobs=args.jobs,
                                        lang=args.lang)}
    except (BuildError, i18n.I18nError) as e:
        print(f"course.site: {e}", file=sys.stderr)
        return 1
    for lang, report in reports.items():
        print(f"[{lang}] built {len(report.pages)} pages into {report.out}/ in {report.seconds:.1f} s"
              + (f" (lessons executed in {report.execute_seconds:.1f} s)" if report.execute_seconds else "")
              + f"; open {report.out / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

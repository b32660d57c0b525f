"""The course site's index page (course map and syllabus) and one page per assignment."""
from __future__ import annotations

import html
import importlib
import inspect
import re
from dataclasses import dataclass, field

from . import _site_render as R
from . import i18n
from .assignments import module_names
from .framework import Assignment


@dataclass(frozen=True)
class LessonInfo:
    """One lesson as the catalog (course/catalog.toml) describes it."""
    number: int
    file: str
    title: str
    goals: list[str] = field(default_factory=list)
    prerequisites: list[int] = field(default_factory=list)
    study_minutes: int | None = None
    week: int | None = None
    readings: list[str] = field(default_factory=list)

    @property
    def page(self) -> str:
        """The lesson page's path, relative to the site root."""
        return f"lessons/{self.file.removesuffix('.py')}.html"


@dataclass(frozen=True)
class AssignmentInfo:
    module: str                     # "a1_engine"
    assignment: Assignment | None   # None when the module failed to import
    error: str = ""
    week: int | None = None         # released; due one week later (course/syllabus.md)
    lessons: list[int] = field(default_factory=list)
    doc: str = ""                   # the module docstring: the assignment's introduction

    @property
    def id(self) -> str:
        return self.assignment.id if self.assignment else self.module.split("_")[0]

    @property
    def page(self) -> str:
        return f"assignments/{self.id}.html"


def load_assignments(catalog: list[dict]) -> list[AssignmentInfo]:
    """Every assignment module, each imported on its own: one that does not import (someone is
    still writing it) is listed with its error instead of stopping the build."""
    meta = {a["id"]: a for a in catalog}
    out = []
    for name in module_names():
        try:
            module = importlib.import_module(f"course.assignments.{name}")
            a = module.ASSIGNMENT
            if not isinstance(a, Assignment):
                raise TypeError("ASSIGNMENT is not a course.framework.Assignment")
        except Exception as e:  # noqa: BLE001 - any failure to import means "not available yet"
            out.append(AssignmentInfo(name, None, f"{type(e).__name__}: {e}"))
            continue
        m = meta.get(a.id, {})
        out.append(AssignmentInfo(name, a, week=m.get("week"), lessons=list(m.get("lessons", [])),
                                  doc=_intro(inspect.getdoc(module) or "")))
    return out


def _intro(doc: str) -> str:
    """The module docstring without its first line when that only restates the title."""
    first, _, rest = doc.partition("\n\n")
    return rest if first.startswith("Assignment") else doc


def task_text(task_id: str, field: str, english: str, lang: str) -> str:
    """A task's (or assignment's) title or hint in ``lang``: course/zh/hints.toml for zh."""
    if lang == "en":
        return english
    return i18n.load_table("hints").get(task_id, {}).get(field, english)


def _lesson_links(numbers: list[int], lessons: dict[int, LessonInfo], up: str, ed: R.Edition) -> str:
    parts = [R.link(up + lessons[n].page, ed.label(n, lessons[n].title)) if n in lessons else ed.t("lesson", number=n)
             for n in numbers]
    return ed.t("list_separator").join(parts) or ed.t("none")


def index_page(lessons: list[LessonInfo], assignments: list[AssignmentInfo], syllabus_md: str,
               *, banner: str, build_note: str, ed: R.Edition = R.Edition()) -> str:
    """The course map (every lesson with its goals and time), the assignments, and the syllabus."""
    by_number = {info.number: info for info in lessons}
    total = sum(info.study_minutes or 0 for info in lessons)
    items = []
    for info in lessons:
        facts = [ed.t("map_week", week=info.week) if info.week else "",
                 ed.t("map_minutes", minutes=info.study_minutes) if info.study_minutes else "",
                 ed.t("map_needs", numbers=ed.t("list_separator").join(str(n) for n in info.prerequisites))
                 if info.prerequisites else ""]
        goals = "".join(f"<li>{html.escape(g)}</li>" for g in info.goals)
        items.append(f'<li>{R.link(info.page, ed.label(info.number, info.title))} <span class="time">'
                     f'{html.escape(" · ".join(f for f in facts if f))}</span>'
                     f'{f"<ul>{goals}</ul>" if goals else ""}</li>')
    tasks = []
    for a in assignments:
        if a.assignment is None:
            tasks.append(f"<li>{html.escape(a.module)}: {ed.t('not_available')} "
                         f'<span class="note">({html.escape(a.error)})</span></li>')
            continue
        n, pts = len(a.assignment.tasks), a.assignment.max_points
        title = task_text(a.id, "title", a.assignment.title, ed.lang)
        tasks.append(f"<li>{R.link(a.page, f'{a.id}: {title}')} "
                     f'<span class="time">{ed.t("tasks_points", tasks=n, points=pts)}</span></li>')
    syllabus = R.markdown(_link_syllabus(_demote_headings(syllabus_md), by_number, assignments)) \
        if syllabus_md else f"<p>{ed.t('no_syllabus')}</p>"
    body = f"""<h1>{ed.t("index_title")}</h1>
<p>{ed.t("index_intro", lessons=len(lessons), hours=f"{total / 60:.0f}")}</p>
<p class="note">{html.escape(build_note)}</p>
<p><a href="#course-map">{ed.t("course_map")}</a> · <a href="#assignments">{ed.t("assignments")}</a> ·
<a href="#syllabus">{ed.t("syllabus")}</a></p>
<h2 id="course-map">{ed.t("course_map")}</h2>
<ol class="map">{"".join(items)}</ol>
<h2 id="assignments">{ed.t("assignments")}</h2>
<ul>{"".join(tasks)}</ul>
<section id="syllabus">{syllabus}</section>"""
    return R.page(ed.t("course_index"), body, rel="index.html", edition=ed, banner=banner,
                  nav=R.link("index.html", ed.t("course_index")))


def _demote_headings(md: str) -> str:
    """Move every heading one level down, so the syllabus's own h1 sits under the index's."""
    return re.sub(r"^(#{1,5}) ", r"#\1 ", md, flags=re.M)


def _link_syllabus(md: str, lessons: dict[int, LessonInfo], assignments: list[AssignmentInfo]) -> str:
    """Turn "Lesson 03" ("第 03 课") and an assignment id at the start of a line item or table cell
    into links."""
    def lesson(m: re.Match) -> str:
        info = lessons.get(int(m.group(1) or m.group(2)))
        return f"[{m.group(0)}]({info.page})" if info else m.group(0)
    md = re.sub(r"\bLesson (\d{2})\b|第 ?(\d{2}) ?课", lesson, md)
    for a in assignments:
        if a.assignment is not None:
            md = re.sub(rf"(Released: |Due: |发布：|截止：|^\| ){a.id}\b", rf"\1[{a.id}]({a.page})", md, flags=re.M)
    return md


def assignment_page(a: AssignmentInfo, lessons: dict[int, LessonInfo], *, banner: str,
                    ed: R.Edition = R.Edition()) -> str:
    """Title, introduction, when it is released and due, each task with its points and hint, and
    how to grade it. In a translated edition the introduction, titles and hints are translated
    (course/zh/hints.toml); the "graded by" notes are the checks' English docstrings."""
    assert a.assignment is not None
    up = "../"
    when = ed.t("released", week=a.week, due=a.week + 1) if a.week else ""
    tasks = []
    for t in a.assignment.tasks:
        what = "".join(f"<li><code>{html.escape(b)}</code></li>" for b in t.blanks)
        checked = inspect.getdoc(t.check) or ""
        points = ed.t("points" if t.points == 1 else "points_plural", points=t.points)
        tasks.append(f'<div class="task"><h3 id="{R.slug(t.id)}">{html.escape(t.id)}: '
                     f'{html.escape(task_text(t.id, "title", t.title, ed.lang))} '
                     f'<span class="points">{points}</span></h3>'
                     f"<p>{ed.t('you_write')}</p><ul>{what}</ul>"
                     f"<p><strong>{ed.t('hint')}</strong> {html.escape(task_text(t.id, 'hint', t.hint, ed.lang))}</p>"
                     + (f"<p><strong>{ed.t('graded_by')}</strong> {html.escape(' '.join(checked.split()))}</p>"
                        if checked else "") + "</div>")
    title = task_text(a.id, "title", a.assignment.title, ed.lang)
    original = f'<p class="note">{ed.t("english_original")}</p>' if ed.t("english_original") else ""
    body = f"""<h1>{html.escape(ed.t("assignment_title", id=a.id, title=title))}</h1>
<div class="meta"><p class="facts">{when}{ed.t("tasks_points", tasks=len(a.assignment.tasks),
                                                points=a.assignment.max_points)}{ed.t("full_stop")}
{ed.t("builds_on", lessons=_lesson_links(a.lessons, lessons, up, ed))}</p></div>
<div class="md">{R.markdown(task_text(a.id, "intro", a.doc, ed.lang))}</div>
<h2>{ed.t("how_to")}</h2>
<pre><code>{html.escape(ed.t("how_to_code", id=a.id))}
</code></pre>
<p>{ed.t("how_to_text")}</p>
<h2>{ed.t("tasks")}</h2>
{original}{"".join(tasks)}"""
    nav = R.link(up + "index.html", ed.t("course_index")) + R.link(up + "index.html#assignments",
                                                                   ed.t("all_assignments"))
    return R.page(ed.t("assignment", id=a.id), body, rel=a.page, edition=ed, banner=banner, nav=nav)


def glossary_page(ed: R.Edition, *, banner: str) -> str:
    """术语表: every term of course/zh/glossary.toml, with the variants to avoid."""
    rows = "".join(f"<tr><td>{html.escape(' / '.join(t['en']))}</td><td>{html.escape(t['zh'])}</td>"
                   f"<td>{html.escape('、'.join(t.get('avoid', [])))}</td></tr>" for t in i18n.glossary())
    body = (f"<h1>{ed.t('glossary')}</h1><p>{ed.t('glossary_intro')}</p>"
            f"<table><thead><tr><th>{ed.t('glossary_english')}</th><th>{ed.t('glossary_chinese')}</th>"
            f"<th>{ed.t('glossary_avoid')}</th></tr></thead><tbody>{rows}</tbody></table>")
    return R.page(ed.t("glossary"), body, rel="glossary.html", edition=ed, banner=banner,
                  nav=R.link("index.html", ed.t("course_index")))

"""The course site's index page (course map and syllabus) and one page per assignment."""
from __future__ import annotations

import html
import importlib
import inspect
import re
from dataclasses import dataclass, field

from . import _site_render as R
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

    @property
    def label(self) -> str:
        return f"Lesson {self.number}: {self.title}"


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


def _lesson_links(numbers: list[int], lessons: dict[int, LessonInfo], up: str) -> str:
    parts = [R.link(up + lessons[n].page, lessons[n].label) if n in lessons else f"Lesson {n}"
             for n in numbers]
    return ", ".join(parts) or "none"


def index_page(lessons: list[LessonInfo], assignments: list[AssignmentInfo], syllabus_md: str,
               *, banner: str, build_note: str) -> str:
    """The course map (every lesson with its goals and time), the assignments, and the syllabus."""
    by_number = {info.number: info for info in lessons}
    total = sum(info.study_minutes or 0 for info in lessons)
    items = []
    for info in lessons:
        facts = [f"week {info.week}" if info.week else "",
                 f"~{info.study_minutes} min" if info.study_minutes else "",
                 "needs lessons " + ", ".join(str(n) for n in info.prerequisites) if info.prerequisites else ""]
        goals = "".join(f"<li>{html.escape(g)}</li>" for g in info.goals)
        items.append(f'<li>{R.link(info.page, info.label)} <span class="time">'
                     f'{html.escape(" · ".join(f for f in facts if f))}</span>'
                     f'{f"<ul>{goals}</ul>" if goals else ""}</li>')
    tasks = []
    for a in assignments:
        if a.assignment is None:
            tasks.append(f"<li>{html.escape(a.module)}: not available in this build "
                         f'<span class="note">({html.escape(a.error)})</span></li>')
            continue
        n, pts = len(a.assignment.tasks), a.assignment.max_points
        tasks.append(f"<li>{R.link(a.page, f'{a.id}: {a.assignment.title}')} "
                     f'<span class="time">{n} tasks, {pts} points</span></li>')
    syllabus = R.markdown(_link_syllabus(_demote_headings(syllabus_md), by_number, assignments)) \
        if syllabus_md else "<p>No syllabus (course/syllabus.md) in this tree.</p>"
    body = f"""<h1>The course: from one scalar graph to a fine-tuned BERT</h1>
<p>{len(lessons)} lessons, each with its code, output and figures; about
{total / 60:.0f} hours of study. Every lesson can be downloaded as a Jupyter notebook from its page.</p>
<p class="note">{html.escape(build_note)}</p>
<p><a href="#course-map">Course map</a> · <a href="#assignments">Assignments</a> ·
<a href="#syllabus">Syllabus</a></p>
<h2 id="course-map">Course map</h2>
<ol class="map">{"".join(items)}</ol>
<h2 id="assignments">Assignments</h2>
<ul>{"".join(tasks)}</ul>
<section id="syllabus">{syllabus}</section>"""
    return R.page("Course index", body, depth=0, banner=banner, nav='<a href="index.html">Course index</a>')


def _demote_headings(md: str) -> str:
    """Move every heading one level down, so the syllabus's own h1 sits under the index's."""
    return re.sub(r"^(#{1,5}) ", r"#\1 ", md, flags=re.M)


def _link_syllabus(md: str, lessons: dict[int, LessonInfo], assignments: list[AssignmentInfo]) -> str:
    """Turn "Lesson 03" and an assignment id at the start of a line item or table cell into links."""
    def lesson(m: re.Match) -> str:
        info = lessons.get(int(m.group(1)))
        return f"[{m.group(0)}]({info.page})" if info else m.group(0)
    md = re.sub(r"\bLesson (\d{2})\b", lesson, md)
    for a in assignments:
        if a.assignment is not None:
            md = re.sub(rf"(Released: |Due: |^\| ){a.id}\b", rf"\1[{a.id}]({a.page})", md, flags=re.M)
    return md


def assignment_page(a: AssignmentInfo, lessons: dict[int, LessonInfo], *, banner: str) -> str:
    """Title, introduction, when it is released and due, each task with its points and hint, and
    how to grade it."""
    assert a.assignment is not None
    up = "../"
    when = (f"Released in week {a.week}, due in week {a.week + 1}. " if a.week else "")
    tasks = []
    for t in a.assignment.tasks:
        what = "".join(f"<li><code>{html.escape(b)}</code></li>" for b in t.blanks)
        checked = inspect.getdoc(t.check) or ""
        tasks.append(f'<div class="task"><h3 id="{R.slug(t.id)}">{html.escape(t.id)}: {html.escape(t.title)} '
                     f'<span class="points">({t.points} point{"s" * (t.points != 1)})</span></h3>'
                     f"<p>You write:</p><ul>{what}</ul>"
                     f"<p><strong>Hint.</strong> {html.escape(t.hint)}</p>"
                     + (f"<p><strong>Graded by.</strong> {html.escape(' '.join(checked.split()))}</p>"
                        if checked else "") + "</div>")
    body = f"""<h1>Assignment {html.escape(a.id)}: {html.escape(a.assignment.title)}</h1>
<div class="meta"><p class="facts">{when}{len(a.assignment.tasks)} tasks, {a.assignment.max_points} points.
Builds on: {_lesson_links(a.lessons, lessons, up)}.</p></div>
<div class="md">{R.markdown(a.doc)}</div>
<h2>How to work on it and grade it</h2>
<pre><code># your copy of the project, with the blanks
python -m course.student student
# grade your work (add --json FILE for a machine-readable report)
python -m course.grade student --assignment {html.escape(a.id)}
</code></pre>
<p>Each blank raises <code>NotImplementedError</code> with its task id until you write it. The grader
draws fresh shapes and values every run and compares against float64 finite differences and
PyTorch/Hugging Face; code that imports torch, transformers or scipy (or the reference solution) is
rejected. A wrong task fails alone: the others still get their points.</p>
<h2>Tasks</h2>
{"".join(tasks)}"""
    nav = f'{R.link(up + "index.html", "Course index")}{R.link(up + "index.html#assignments", "All assignments")}'
    return R.page(f"Assignment {a.id}", body, depth=1, banner=banner, nav=nav)

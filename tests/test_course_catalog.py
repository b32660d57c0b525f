"""The teacher's layer agrees with the lessons: catalog, syllabus, inline questions.

``course/catalog.toml`` is read by the site and the syllabus; these tests check it against the
files that actually exist (every lessons/NN_*.py has exactly one entry, prerequisites only point
backwards), check that ``course/syllabus.md`` schedules every lesson in its catalog week with its
catalog study time, and check that every lesson ends with a questions cell and an answers cell
holding the same number (3-5) of numbered items.
"""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CATALOG = ROOT / "course" / "catalog.toml"
SYLLABUS = ROOT / "course" / "syllabus.md"
LESSON_FILES = sorted(p.name for p in (ROOT / "lessons").glob("[0-9][0-9]_*.py"))
LESSON_KEYS = {"number", "file", "title", "goals", "prerequisites", "study_minutes", "week", "readings"}
ASSIGNMENT_KEYS = {"id", "title", "week", "lessons"}


def _catalog() -> dict:
    with CATALOG.open("rb") as f:
        return tomllib.load(f)


def test_every_lesson_file_has_exactly_one_catalog_entry() -> None:
    files = [lesson["file"] for lesson in _catalog()["lesson"]]
    assert sorted(files) == LESSON_FILES, (
        f"{CATALOG.name}: lesson entries {sorted(files)} != lessons/NN_*.py files {LESSON_FILES}")


def test_lesson_entries_are_well_formed() -> None:
    for lesson in _catalog()["lesson"]:
        where = f"{CATALOG.name}: lesson {lesson.get('file', '?')}"
        assert set(lesson) == LESSON_KEYS, f"{where}: keys {sorted(lesson)} != {sorted(LESSON_KEYS)}"
        assert lesson["file"].startswith(f"{lesson['number']:02d}_"), f"{where}: number {lesson['number']}"
        assert 2 <= len(lesson["goals"]) <= 4, f"{where}: {len(lesson['goals'])} goals (want 2-4)"
        assert 1 <= lesson["week"] <= 14, f"{where}: week {lesson['week']} outside 1-14"
        assert 15 <= lesson["study_minutes"] <= 240, f"{where}: study_minutes {lesson['study_minutes']}"
        assert all(isinstance(r, str) and r for r in lesson["readings"]), f"{where}: readings"


def test_prerequisites_only_point_backwards() -> None:
    lessons = {lesson["number"]: lesson for lesson in _catalog()["lesson"]}
    for n, lesson in lessons.items():
        for p in lesson["prerequisites"]:
            assert p in lessons, f"{CATALOG.name}: lesson {n} needs lesson {p}, which does not exist"
            assert p < n, f"{CATALOG.name}: lesson {n} needs lesson {p}, which comes after it"
            assert lessons[p]["week"] <= lesson["week"], (
                f"{CATALOG.name}: lesson {n} (week {lesson['week']}) needs lesson {p} taught in week "
                f"{lessons[p]['week']}")


# Lessons 1-15 are the core sequence, numbered in teaching order. Lessons added later keep their
# numbers (renumbering would break every reference to a lesson) and are scheduled where they belong:
# lesson 16 (second order) right after lesson 9 (optimizers). Prerequisites bound them (above).
CORE = 15


def test_weeks_follow_the_lesson_order() -> None:
    core = [lesson for lesson in _catalog()["lesson"] if lesson["number"] <= CORE]
    weeks = [lesson["week"] for lesson in sorted(core, key=lambda x: x["number"])]
    assert weeks == sorted(weeks), f"{CATALOG.name}: weeks {weeks} go backwards"


def test_second_order_follows_the_optimizers_lesson() -> None:
    week = {lesson["number"]: lesson["week"] for lesson in _catalog()["lesson"]}
    assert week[16] == week[9], f"{CATALOG.name}: lesson 16 in week {week[16]}, lesson 9 in week {week[9]}"


def test_assignments_build_on_lessons_already_taught() -> None:
    catalog = _catalog()
    week_of = {lesson["number"]: lesson["week"] for lesson in catalog["lesson"]}
    ids = [a["id"] for a in catalog["assignment"]]
    assert ids == [f"a{i}" for i in range(1, len(ids) + 1)] and len(ids) >= 6, f"assignment ids {ids}"
    for a in catalog["assignment"]:
        assert set(a) == ASSIGNMENT_KEYS, f"{CATALOG.name}: assignment {a['id']} keys {sorted(a)}"
        for n in a["lessons"]:
            assert n in week_of, f"{CATALOG.name}: assignment {a['id']} builds on missing lesson {n}"
            assert week_of[n] <= a["week"], (
                f"{CATALOG.name}: assignment {a['id']} is released in week {a['week']} but builds on "
                f"lesson {n}, taught in week {week_of[n]}")


def _syllabus_weeks() -> dict[int, str]:
    """Week number -> the text of its '## Week N' section."""
    text = SYLLABUS.read_text(encoding="utf-8")
    parts = re.split(r"^## Week (\d+)\b.*$", text, flags=re.M)
    return {int(parts[i]): parts[i + 1].split("\n## ")[0] for i in range(1, len(parts), 2)}


def test_syllabus_has_fourteen_weeks() -> None:
    assert sorted(_syllabus_weeks()) == list(range(1, 15)), f"{SYLLABUS.name}: weeks {sorted(_syllabus_weeks())}"


def test_syllabus_schedules_each_lesson_in_its_week_with_its_time() -> None:
    weeks = _syllabus_weeks()
    for lesson in _catalog()["lesson"]:
        n, week = lesson["number"], lesson["week"]
        found = {w: re.findall(rf"^- Lesson {n:02d}: (.+) \(~(\d+) min\)$", body, flags=re.M)
                 for w, body in weeks.items()}
        found = {w: hits for w, hits in found.items() if hits}
        assert list(found) == [week], f"{SYLLABUS.name}: lesson {n:02d} is in weeks {list(found)}, catalog says {week}"
        (title, minutes), = found[week]
        assert title == lesson["title"], f"{SYLLABUS.name}: lesson {n:02d} title {title!r} != {lesson['title']!r}"
        assert int(minutes) == lesson["study_minutes"], (
            f"{SYLLABUS.name}: lesson {n:02d} ~{minutes} min, catalog says {lesson['study_minutes']}")
    total_h = round(sum(lesson["study_minutes"] for lesson in _catalog()["lesson"]) / 60)
    assert f"about {total_h} hours" in SYLLABUS.read_text(encoding="utf-8"), f"{SYLLABUS.name}: total time"


def test_syllabus_releases_each_assignment_in_its_week_and_collects_it_a_week_later() -> None:
    weeks = _syllabus_weeks()
    for a in _catalog()["assignment"]:
        released = [w for w, body in weeks.items() if re.search(rf"^- Released: {a['id']},", body, flags=re.M)]
        due = [w for w, body in weeks.items() if re.search(rf"^- Due: {a['id']}\.", body, flags=re.M)]
        assert released == [a["week"]], f"{SYLLABUS.name}: {a['id']} released in weeks {released}, catalog {a['week']}"
        assert due == [a["week"] + 1], f"{SYLLABUS.name}: {a['id']} due in weeks {due}, want {a['week'] + 1}"


def _tagged_cells(text: str, tag: str) -> list[list[str]]:
    """The lines of every markdown cell whose header carries tags=["<tag>"]."""
    header = f'# %% [markdown] tags=["{tag}"]'
    cells, current = [], None
    for line in text.splitlines():
        if line.startswith("# %%"):
            current = [] if line.rstrip() == header else None
            if current is not None:
                cells.append(current)
        elif current is not None:
            current.append(line)
    return cells


def _numbered_items(cell: list[str]) -> list[int]:
    return [int(m.group(1)) for line in cell if (m := re.match(r"^# (\d+)\. \S", line))]


@pytest.mark.parametrize("name", LESSON_FILES)
def test_lesson_has_questions_and_answers(name: str) -> None:
    text = (ROOT / "lessons" / name).read_text(encoding="utf-8")
    questions, answers = _tagged_cells(text, "questions"), _tagged_cells(text, "answers")
    assert len(questions) == 1, f"{name}: {len(questions)} questions cells (want one)"
    assert len(answers) == 1, f"{name}: {len(answers)} answers cells (want one)"
    assert "# ## Check your understanding" in questions[0], f"{name}: questions cell heading"
    assert "# ## Answers" in answers[0], f"{name}: answers cell heading"
    q, a = _numbered_items(questions[0]), _numbered_items(answers[0])
    assert 3 <= len(q) <= 5 and q == list(range(1, len(q) + 1)), f"{name}: questions numbered {q} (want 1..n, 3-5)"
    assert a == q, f"{name}: answers numbered {a}, questions {q}"
    assert text.index('tags=["questions"]') < text.index('tags=["answers"]'), f"{name}: answers before questions"

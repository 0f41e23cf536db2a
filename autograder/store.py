"""The class gradebook: opened through nbgrader's ``Gradebook`` API with the course's own database URL
(SQLite by default, PostgreSQL where ``CourseDirectory.db_url`` says so), written by the grading parent
alone.
"""
from __future__ import annotations

import os
import sys
import warnings
from contextlib import contextmanager
from datetime import datetime

FLAG_PREFIX = "Flagged for review: "


def ensure_alembic_on_path() -> None:
    """nbgrader runs the ``alembic`` executable to set up a new gradebook; it lives next to this Python,
    which is not on PATH when the venv's tools are called by their full path."""
    bindir = os.path.dirname(sys.executable)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")


@contextmanager
def open_gradebook(db_url: str, course_id: str = "default_course"):
    from nbgrader.api import Gradebook
    ensure_alembic_on_path()
    from sqlalchemy.exc import SAWarning
    with Gradebook(db_url, course_id=course_id or "default_course") as gb, warnings.catch_warnings():
        # nbgrader's add_submission builds rows before adding them to the session; SQLAlchemy 2 warns.
        warnings.simplefilter("ignore", SAWarning)
        yield gb


def assignment_duedate(db_url: str, assignment: str, course_id: str = "default_course") -> datetime | None:
    from nbgrader.api import MissingEntry
    with open_gradebook(db_url, course_id) as gb:
        try:
            return gb.find_assignment(assignment).duedate
        except MissingEntry:
            return None


def register_students(db_url: str, students, course_id: str = "default_course") -> None:
    """Add the students (in sorted order) that the gradebook does not know yet. nbgrader lists students
    in the order they were added (names being equal): registering them before grading keeps exports in the
    same order as ``nbgrader autograde``'s, whatever order parallel grading finishes in."""
    with open_gradebook(db_url, course_id) as gb:
        known = {s.id for s in gb.students}
        for student in sorted(set(students) - known):
            gb.update_or_create_student(student)


def merge(db_url: str, assignment: str, res, course_id: str = "default_course") -> None:
    """Record one grading result in the class gradebook (creating student and submission as needed).

    Auto scores and auto comments are replaced; manual scores already entered are kept. A submission
    that could not be graded is recorded with zero auto scores and flagged, so it is never lost. Only
    cells the assignment has are touched, and only with scores within [0, max].
    """
    from nbgrader.api import MissingEntry
    with open_gradebook(db_url, course_id) as gb:
        gb.update_or_create_student(res.student)
        try:
            sub = gb.find_submission(assignment, res.student)
        except MissingEntry:
            sub = gb.add_submission(assignment, res.student)
        if res.timestamp is not None:
            sub.timestamp = res.timestamp
        by_id = {(g["notebook"], g["grade_id"]): g for g in res.grades}
        comments = {(c["notebook"], c["name"]): c for c in res.comments}
        flags = list(res.flags) + ([] if res.success else [f"could not be graded: {res.error_line()}"])
        for nb in sub.notebooks:
            # a graded submission brings its comments (flag reasons included, see trusted.RecordFlags);
            # an ungradable one gets the reasons on its first cell, where formgrader shows them
            first_comment = not res.success
            for g in nb.grades:
                new = by_id.get((nb.name, g.name))
                score = new.get("auto_score") if new else None
                valid = new is not None and (score is None or (type(score) in (int, float)
                                                              and 0.0 <= score <= float(g.max_score)))
                if valid and res.success:
                    g.auto_score = None if score is None else float(score)
                    g.needs_manual_grade = bool(new.get("needs_manual_grade")) and g.manual_score is None
                else:  # not graded: zero for tests, leave written answers to the instructor
                    g.auto_score = 0.0 if g.cell.cell_type == "code" else None
                    g.needs_manual_grade = g.cell.cell_type != "code" and g.manual_score is None
            for c in nb.comments:
                new = comments.get((nb.name, c.name))
                text = new.get("auto_comment") if new and res.success else None
                text = str(text)[:20000] if text is not None else None
                if first_comment and flags:
                    # formgrader shows a cell's comment next to it: the first cell carries the reasons
                    text = FLAG_PREFIX + "; ".join(flags) + (f"\n\n{text}" if text else "")
                    first_comment = False
                c.auto_comment = text
            nb.flagged = bool(flags)
            penalty = res.late_penalties.get(nb.name)
            if type(penalty) in (int, float) and penalty >= 0:
                nb.late_submission_penalty = float(penalty)
        gb.db.commit()


def gradebook_rows(db_url: str, assignment: str, course_id: str = "default_course") -> tuple[list[str], list[list]]:
    """Header and rows (one per student) of the assignment's gradebook: points per graded cell."""
    with open_gradebook(db_url, course_id) as gb:
        a = gb.find_assignment(assignment)
        cells = [(nb.name, gc.name) for nb in a.notebooks for gc in nb.grade_cells]
        header = ["student"] + [name for _, name in cells] + ["total", "max", "status"]
        rows = []
        for sub in sorted(a.submissions, key=lambda s: s.student.id):
            scores = {(nb.name, g.name): g for nb in sub.notebooks for g in nb.grades}
            vals = []
            for key in cells:
                g = scores.get(key)
                vals.append("?" if g is None or (g.needs_manual_grade and g.manual_score is None)
                            else g.score)
            flagged = any(nb.flagged for nb in sub.notebooks)
            status = "needs manual grading" if sub.needs_manual_grade else "graded"
            if sub.late_submission_penalty:
                status += f", late (-{sub.late_submission_penalty:g})"
            if flagged:
                status += ", flagged"
            rows.append([sub.student.id] + vals + [sub.score, sub.max_score, status])
    return header, rows


def flag_reasons(db_url: str, assignment: str, student: str, course_id: str = "default_course") -> list[str]:
    """The review reasons recorded for a submission (from its first cell comment)."""
    from nbgrader.api import MissingEntry
    with open_gradebook(db_url, course_id) as gb:
        try:
            sub = gb.find_submission(assignment, student)
        except MissingEntry:
            return []
        for nb in sub.notebooks:
            for c in nb.comments:
                if c.auto_comment and c.auto_comment.startswith(FLAG_PREFIX):
                    return c.auto_comment[len(FLAG_PREFIX):].split("\n\n")[0].split("; ")
    return []

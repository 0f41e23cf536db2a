"""``nbgrader export`` for this course: nbgrader's CSV columns, plus the review flag and its reasons.

Configured as ``c.ExportApp.plugin_class`` in ``autograder/config.py``, so a plain ``nbgrader export``
writes it. Uses the csv module (names and reasons may hold commas).
"""
from __future__ import annotations

import csv

from nbgrader.api import MissingEntry
from nbgrader.plugins import ExportPlugin

from .store import FLAG_PREFIX

COLUMNS = ["assignment", "duedate", "timestamp", "student_id", "last_name", "first_name", "email", "raw_score",
           "late_submission_penalty", "score", "max_score", "flagged", "flag_reasons"]


def _reasons(submission) -> str:
    for nb in submission.notebooks:
        for c in nb.comments:
            if c.auto_comment and c.auto_comment.startswith(FLAG_PREFIX):
                return c.auto_comment[len(FLAG_PREFIX):].split("\n\n")[0]
    return ""


class FlaggedCsvExport(ExportPlugin):
    """nbgrader's grades.csv with two more columns: ``flagged`` and ``flag_reasons``."""

    def export(self, gradebook) -> None:
        dest = self.to or "grades.csv"
        students = {str(s) for s in self.student}
        assignments = {str(a) for a in self.assignment}
        with open(dest, "w", newline="") as fh:
            out = csv.DictWriter(fh, fieldnames=COLUMNS)
            out.writeheader()
            for assignment in gradebook.assignments:
                if assignments and assignment.name not in assignments:
                    continue
                for student in gradebook.students:
                    if students and student.id not in students:
                        continue
                    row = dict(assignment=assignment.name, duedate=assignment.duedate or "", student_id=student.id,
                               last_name=student.last_name or "", first_name=student.first_name or "",
                               email=student.email or "", max_score=assignment.max_score)
                    try:
                        sub = gradebook.find_submission(assignment.name, student.id)
                    except MissingEntry:
                        row.update(timestamp="", raw_score=0.0, late_submission_penalty=0.0, score=0.0,
                                   flagged=False, flag_reasons="")
                    else:
                        penalty = sub.late_submission_penalty or 0.0
                        row.update(timestamp=sub.timestamp or "", raw_score=sub.score,
                                   late_submission_penalty=penalty, score=max(0.0, sub.score - penalty),
                                   flagged=any(nb.flagged for nb in sub.notebooks), flag_reasons=_reasons(sub))
                    out.writerow(row)

"""The demo's class beyond Module 01: two of Module 01's learners go on through the course.

Their submissions are the instructor's model answers (code and written answers from ``solutions/``), so
they stay in step with every module: ``ada`` completes the course and ``eli`` does every module but the
capstone (two learners keep ``make demo`` short). What a certificate then needs, and who lacks
what, is the demo's last step.
"""
from __future__ import annotations

from ..bank import solution_sources, source_notebook
from ..course import MODULES
from . import Sample, strip_markers

CONTINUING = ("ada", "eli")


def written_answers(assignment: str) -> dict[str, str]:
    """grade_id -> the model answer of each written answer (markdown solution cells with points)."""
    out = {}
    for cell in source_notebook(assignment).cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "markdown" and meta.get("grade") and meta.get("solution"):
            out[meta["grade_id"]] = cell.source
    return out


def model_submission(assignment: str, student: str) -> Sample:
    """``student``'s submission of ``assignment``: the model answers, as a learner would have typed them."""
    code = {k: strip_markers(v) for k, v in solution_sources(assignment).items()}
    return Sample(student, "model answers", sources=code, answers=written_answers(assignment))


def class_after_module_01() -> dict[str, list[Sample]]:
    """assignment -> the demo's submissions of it, for every module after the first."""
    last = MODULES[-1].assignment  # the capstone, which eli does not submit
    return {m.assignment: [model_submission(m.assignment, s) for s in CONTINUING
                           if not (s == "eli" and m.assignment == last)] for m in MODULES[1:]}

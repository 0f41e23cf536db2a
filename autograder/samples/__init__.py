"""Sample submissions for ``make demo``: filled-in copies of a released notebook.

Samples are built from the released notebook and the solution cells of ``solutions/``, so they stay in
step with the assignment. Each tells a story an instructor meets in a real class.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Sample:
    """One learner's submission: code for solution cells, text for written answers, cells deleted."""

    student: str
    story: str
    sources: dict = field(default_factory=dict)   # grade_id -> code of a solution cell
    answers: dict = field(default_factory=dict)   # grade_id -> markdown of a written answer
    delete: tuple = ()                             # grade_ids of cells the learner deleted


def strip_markers(source: str) -> str:
    """A solution cell's code without nbgrader's BEGIN/END SOLUTION lines, as a learner would write it."""
    return re.sub(r"^[ \t]*### (BEGIN|END) SOLUTION[ \t]*\n", "", source, flags=re.M)


def build(release_nb, sample: Sample):
    """A copy of the released notebook filled in as ``sample`` says."""
    nb = copy.deepcopy(release_nb)
    cells = []
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid in sample.delete:
            continue
        if gid in sample.sources:
            cell.source = sample.sources[gid]
        if gid in sample.answers:
            cell.source = sample.answers[gid]
        cells.append(cell)
    nb.cells = cells
    return nb

"""The bank of known-buggy implementations, and the tools to grade them.

A :class:`Bug` is a small edit (``old`` -> ``new`` replacements) of one reference solution cell of an
assignment's source notebook in ``solutions/``, so every bug stays a realistic one-line mistake in code
that otherwise matches the notebook. ``tests/`` checks that every bug loses points and that correct
variants keep full marks, both in-process (:func:`grade_in_process`, fast) and through nbgrader.
"""
from __future__ import annotations

import ast
import contextlib
import io
from dataclasses import dataclass

import nbformat

from ..config import SOLUTIONS
from ..grading import notebook_name

@dataclass(frozen=True)
class Bug:
    """A known mistake: ``edits`` applied to the solution cell ``grade_id``.

    ``breaks``: the mistake breaks the layer for training or inference (a wrong formula, statistics or
    gradient), as opposed to a slip (eps placement, an edge case, a side effect, one parameter's gradient).
    The grading policy (course/grading.md) gives a breaking mistake less than 30% of its function's
    points and a slip at least 40%; tests/test_bank.py holds every bank to it.
    """

    name: str
    grade_id: str
    edits: tuple[tuple[str, str], ...]
    mistake: str
    breaks: bool = True


def source_notebook(assignment: str) -> nbformat.NotebookNode:
    """The instructor's source notebook of an assignment (one notebook per assignment folder)."""
    return nbformat.read(SOLUTIONS / assignment / f"{notebook_name(assignment)}.ipynb", as_version=4)


def _cells(nb, *, solution: bool | None = None, grade: bool | None = None):
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type != "code":
            continue
        if solution is not None and bool(meta.get("solution")) != solution:
            continue
        if grade is not None and bool(meta.get("grade")) != grade:
            continue
        yield meta.get("grade_id"), cell


def solution_sources(assignment: str) -> dict[str, str]:
    """grade_id -> source of each code solution cell of the source notebook."""
    return {gid: cell.source for gid, cell in _cells(source_notebook(assignment), solution=True)}


def apply_bug(sources: dict[str, str], bug: Bug) -> dict[str, str]:
    """A copy of ``sources`` with the bug's edits applied; each ``old`` must occur exactly once."""
    out = dict(sources)
    src = out[bug.grade_id]
    for old, new in bug.edits:
        count = src.count(old)
        if count != 1:
            raise ValueError(f"bug {bug.name}: {old!r} occurs {count} times in {bug.grade_id}")
        src = src.replace(old, new)
    out[bug.grade_id] = src
    return out


def _run_cell(source: str, namespace: dict):
    """Execute a cell like IPython does: the value of a trailing expression is returned."""
    tree = ast.parse(source)
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    exec(compile(tree, "<cell>", "exec"), namespace)
    if last is not None:
        return eval(compile(ast.Expression(last.value), "<cell>", "eval"), namespace)
    return None


def grade_in_process(assignment: str, sources: dict[str, str], only=None) -> dict[str, tuple[float, float, str]]:
    """Run the assignment's non-solution code cells with ``sources`` in place of the solution cells, and
    grade each test cell as nbgrader does (error -> 0, float result -> partial credit, else full).

    Slow cells that are not needed for grading (figures, experiments, timings) are skipped: only cells
    that define things (setup, solutions) and test cells run; with ``only`` (a set of grade_ids), only
    those test cells. Returns grade_id -> (points, max, output).
    """
    nb = source_notebook(assignment)
    namespace: dict = {"__name__": "__main__"}
    results = {}
    import matplotlib
    matplotlib.use("Agg")
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        gid = meta.get("grade_id")
        if cell.cell_type != "code":
            continue
        is_test = meta.get("grade") and not meta.get("solution")
        if is_test and only is not None and gid not in only:
            continue
        if meta.get("solution"):
            source = sources.get(gid, cell.source)
        elif is_test or gid == "setup":
            source = cell.source
        else:
            continue
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                value = _run_cell(source, namespace)
            error = None
        except BaseException as exc:  # noqa: BLE001 - a learner's cell may raise anything
            value, error = None, f"{type(exc).__name__}: {exc}"
        if is_test:
            max_points = float(meta["points"])
            if error:
                points = 0.0
            elif isinstance(value, float):
                points = min(max(value, 0.0), max_points)
            else:
                points = max_points
            results[gid] = (points, max_points, out.getvalue() + (error or ""))
    return results

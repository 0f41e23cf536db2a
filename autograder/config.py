"""The course's nbgrader configuration, in one place.

The repository root's ``nbgrader_config.py`` applies it, so standard nbgrader commands run from the
repository root: ``solutions/`` is the source directory, ``release/`` (not tracked) nbgrader's release
directory, ``exchange/`` (not tracked) a local exchange for one machine, ``gradebook.db`` the gradebook,
course id ``bn-deep-dive``. ``notebooks/`` is the tracked copy of the release for self-study learners,
written by ``bncourse release``. A hosted class overrides the exchange in its own ``nbgrader_config.py``
(see course/instructors.md). ``bncourse demo`` and the tests write the same configuration into their
throwaway courses.
"""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOLUTIONS = REPO / "solutions"
RELEASE = REPO / "notebooks"
COURSE_ID = "bn-deep-dive"

#: Seconds one notebook cell may run before nbgrader interrupts it (an infinite loop scores 0, the
#: notebook goes on). The slowest graded cell takes ~3 s on a 2-core CPU.
CELL_TIMEOUT = 60

CODE_STUB = "# YOUR CODE HERE\nraise NotImplementedError()"


def apply(c, root: str | Path = REPO, source: str | Path = SOLUTIONS, release: str | Path = "release",
          timeout: int = CELL_TIMEOUT, exchange: str | Path | None = None) -> None:
    """Fill a traitlets ``Config`` (``c = get_config()`` in an nbgrader_config.py) for a course at ``root``.

    ``source`` and ``release`` may be absolute, so a temporary course can grade against the repository's
    ``solutions/`` without copying it. ``exchange`` defaults to ``<root>/exchange``.
    """
    c.CourseDirectory.root = str(root)
    c.CourseDirectory.course_id = COURSE_ID
    c.CourseDirectory.source_directory = str(source)
    c.CourseDirectory.release_directory = str(release)
    c.CourseDirectory.db_url = f"sqlite:///{Path(root) / 'gradebook.db'}"
    c.Exchange.root = str(exchange or Path(root) / "exchange")
    c.ClearSolutions.code_stub = {"python": CODE_STUB}
    c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
    c.Execute.timeout = int(timeout)
    c.Execute.interrupt_on_timeout = True
    # A learner who deletes a test cell gets it back (and its points are still graded).
    c.OverwriteCells.add_missing_cells = True
    # Learners cannot skip the hidden tests by deleting cells, nor change points/grade_ids.
    c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__"]
    # Learner code runs in a sandboxed kernel; test cells are scored by the trusted grader (one engine
    # behind `nbgrader autograde`, formgrader and bncourse): autograder/trusted/preprocessor.py.
    from nbconvert.preprocessors import ClearMetadataPreprocessor
    from nbgrader.preprocessors import AssignLatePenalties, IgnorePattern, LimitOutput, SaveAutoGrades

    from .trusted.preprocessor import RecordFlags, SandboxedExecute, ShowRubrics
    # (nbgrader's list, with SandboxedExecute for Execute and two steps of ours; its final CheckCellMetadata
    # is left out: nothing after the sanitizing step, which checks the metadata, changes it)
    c.Autograde.autograde_preprocessors = [SandboxedExecute, IgnorePattern, ClearMetadataPreprocessor, LimitOutput,
                                           SaveAutoGrades, ShowRubrics, RecordFlags, AssignLatePenalties]
    # `nbgrader export`: nbgrader's CSV columns plus the review flag and its reasons
    c.ExportApp.plugin_class = "autograder.export.FlaggedCsvExport"
    c.SandboxedExecute.course_root = str(root)


def config_file_text(root: Path, source: Path = SOLUTIONS, release: Path | None = None,
                     timeout: int = CELL_TIMEOUT, extra: str = "") -> str:
    """The text of an nbgrader_config.py for a course directory outside the repository (``extra``: more
    lines of configuration, e.g. a late-submission policy)."""
    release = release if release is not None else root / "release"
    return (
        "# Written by bncourse: the course's nbgrader configuration (autograder/config.py).\n"
        "from autograder.config import apply\n"
        "c = get_config()  # noqa: F821 - provided by traitlets\n"
        f"apply(c, root={str(root)!r}, source={str(source)!r}, release={str(release)!r},"
        f" timeout={int(timeout)})\n" + extra
    )

"""Grading engine behind ``bncourse``: nbgrader's own autograde, one isolated course per submission.

Why not a plain ``nbgrader autograde``: it grades serially in one course directory, so a submission's
code (which runs with the grader's permissions) can write the shared gradebook.db, and a submission that
kills its kernel is dropped from the run. Here each submission is graded by nbgrader's API in a fresh
temporary course holding only a template gradebook (the assignment, no other learner) and a copy of that
submission, in a forked process with a wall-clock limit. The parent then merges the grades into the class
gradebook through nbgrader's ``Gradebook`` API and copies the autograded notebook next to the others, so
``nbgrader generate_feedback``, ``export`` and formgrader work as usual. The submitted files are only read.
"""
from __future__ import annotations

import ast
import json
import re
import multiprocessing as mp
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from .config import SOLUTIONS, config_file_text

STUDENT = "learner"


def _ensure_path() -> None:
    # nbgrader runs the `alembic` executable to set up a gradebook; it lives next to this Python.
    bindir = str(Path(sys.executable).parent)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")


def _config(root: Path, source: Path, release: Path, timeout: int):
    from traitlets.config import Config

    from .config import apply
    c = Config()
    apply(c, root=root, source=source, release=release, timeout=timeout)
    c.Application.log_level = "ERROR"
    return c


def _api(root: Path, source: Path = SOLUTIONS, release: Path | None = None, timeout: int = 60):
    _ensure_path()
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory
    cfg = _config(root, source, release or root / "release", timeout)
    return NbGraderAPI(coursedir=CourseDirectory(config=cfg), config=cfg)


def assignments() -> list[str]:
    """Assignment ids: the folders of solutions/ that hold a notebook."""
    return sorted(p.name for p in SOLUTIONS.iterdir() if p.is_dir() and any(p.glob("*.ipynb")))


def notebook_name(assignment: str) -> str:
    paths = sorted((SOLUTIONS / assignment).glob("*.ipynb"))
    if len(paths) != 1:
        raise FileNotFoundError(f"expected one notebook in solutions/{assignment}, found {len(paths)}")
    return paths[0].stem


def generate(assignment: str, root: Path, release: Path, timeout: int = 60) -> None:
    """nbgrader generate_assignment from solutions/ into ``release``; records the assignment in root's db."""
    result = _api(root, release=release, timeout=timeout).generate_assignment(assignment, force=True, create=True)
    if not result["success"]:
        raise RuntimeError(f"nbgrader generate_assignment {assignment} failed:\n{result['error']}\n{result['log']}")


def template_db(assignment: str, timeout: int = 60) -> Path:
    """A gradebook that holds only ``assignment`` (no learners), cached per source notebook and nbgrader.

    Creating a gradebook costs nbgrader ~6 s (it runs alembic), so it is done once and copied per
    submission. Cached under $XDG_CACHE_HOME/bncourse (default ~/.cache/bncourse).
    """
    import hashlib

    import nbgrader
    src = sorted((SOLUTIONS / assignment).glob("*.ipynb"))
    digest = hashlib.sha256(nbgrader.__version__.encode())
    for p in src:
        digest.update(p.name.encode() + p.read_bytes())
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bncourse"
    path = cache / f"{assignment}-{digest.hexdigest()[:16]}.db"
    if path.exists():
        return path
    with tempfile.TemporaryDirectory(prefix="bncourse-template-") as tmp:
        generate(assignment, Path(tmp), Path(tmp) / "release", timeout)
        try:
            cache.mkdir(parents=True, exist_ok=True)
            part = path.with_suffix(f".{os.getpid()}.part")
            shutil.copy2(Path(tmp) / "gradebook.db", part)
            os.replace(part, path)  # atomic: concurrent runs never see half a file
        except OSError:  # read-only home: keep it for this run only
            path = Path(tempfile.mkdtemp(prefix="bncourse-")) / "gradebook.db"
            shutil.copy2(Path(tmp) / "gradebook.db", path)
    return path


def ensure_assignment(course: Path, assignment: str) -> None:
    """Record ``assignment`` in course/gradebook.db (generating it from solutions/) unless it is there."""
    from nbgrader.api import Gradebook, MissingEntry
    _ensure_path()
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        try:
            if gb.find_assignment(assignment).notebooks:
                return
        except MissingEntry:
            pass
    with tempfile.TemporaryDirectory() as tmp:  # the release goes nowhere: only the db matters here
        generate(assignment, course, Path(tmp))


# ----------------------------------------------------------------------------- static review
SUSPICIOUS_NAMES = {
    "_exit": "calls os._exit (kills the kernel)",
    "modules": "touches sys.modules",
    "__builtins__": "touches __builtins__",
    "builtins": "touches builtins",
    "gradebook": "mentions the gradebook",
    "autograder": "refers to the autograder package",
    "setrecursionlimit": "changes the recursion limit",
    "displayhook": "changes how results are displayed",
    "kill": "sends signals",
}


def review(nb) -> list[str]:
    """Reasons to flag a submission for a human: code in its cells that tampers with grading.

    A flag never changes a score; it marks the submission in the gradebook (``flagged``) and the table.
    """
    reasons = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("grade") and not meta.get("solution"):
            continue  # test cells are replaced by the instructor's version at grading time
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            name = None
            if isinstance(node, ast.Attribute):
                name = node.attr
                if isinstance(node.ctx, ast.Store) and isinstance(node.value, ast.Name):
                    reasons.append(f"assigns {node.value.id}.{node.attr} (monkeypatching a module?)")
            elif isinstance(node, ast.Name):
                name = node.id
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] + ([node.module] if getattr(node, "module", None) else [])
                name = next((m.split(".")[0] for m in mods if m.split(".")[0] in SUSPICIOUS_NAMES), None)
            if name in SUSPICIOUS_NAMES:
                reasons.append(SUSPICIOUS_NAMES[name])
    return sorted(set(reasons))


# ----------------------------------------------------------------------------- one submission
@dataclass
class Result:
    """The outcome of grading one submission."""

    student: str
    success: bool
    error: str = ""
    grades: list[dict] = field(default_factory=list)   # grade_id, auto_score, max_score, needs_manual_grade
    comments: list[dict] = field(default_factory=list)  # cell name, auto_comment
    messages: dict = field(default_factory=dict)        # grade_id -> what the test cell printed
    flags: list[str] = field(default_factory=list)
    seconds: float = 0.0
    autograded: str = ""                                # path of the autograded notebook (temp dir)


def _cell_messages(path: Path) -> dict[str, str]:
    nb = nbformat.read(path, as_version=4)
    out = {}
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type != "code" or not meta.get("grade"):
            continue
        parts = []
        for o in cell.get("outputs", []):
            if o.output_type == "stream":
                parts.append(o.text)
            elif o.output_type == "error":
                parts.append(f"{o.ename}: {o.evalue}" if o.evalue else o.ename)
        out[meta["grade_id"]] = "".join(parts).strip()
    return out


def _grade_child(workdir: str, assignment: str, student: str, timeout: int) -> None:
    """Runs in a forked process: nbgrader autograde in the isolated course at workdir."""
    os.setsid()  # own process group: the parent can kill us and the kernel together
    root = Path(workdir)
    # nbgrader's log and the kernel's stderr go to a file, not the instructor's terminal.
    log = os.open(root / "grading.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    out = {"success": False, "error": "", "grades": [], "comments": []}
    try:
        api = _api(root, timeout=timeout)
        res = api.autograde(assignment, student, force=True, create=True)
        out["success"] = bool(res["success"])
        if not res["success"]:
            out["error"] = (res.get("error") or "") + (res.get("log") or "")
        else:
            from nbgrader.api import Gradebook
            with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
                sub = gb.find_submission(assignment, student)
                for nb in sub.notebooks:
                    for g in nb.grades:
                        out["grades"].append(dict(notebook=nb.name, grade_id=g.name, cell_type=g.cell.cell_type,
                                                  auto_score=g.auto_score,
                                                  max_score=g.max_score, needs_manual_grade=g.needs_manual_grade))
                    for c in nb.comments:
                        out["comments"].append(dict(notebook=nb.name, name=c.name, auto_comment=c.auto_comment))
    except BaseException as exc:  # noqa: BLE001 - report, never lose the submission
        out["success"] = False
        out["error"] = f"{type(exc).__name__}: {exc}"
    (root / "result.json").write_text(json.dumps(out))
    os._exit(0)


def _prepare(workdir: Path, template_db: Path, assignment: str, submission_dir: Path, student: str) -> None:
    shutil.copy2(template_db, workdir / "gradebook.db")
    dest = workdir / "submitted" / student / assignment
    shutil.copytree(submission_dir, dest, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    (workdir / "nbgrader_config.py").write_text(config_file_text(workdir))


def summarize_error(text: str) -> str:
    """The most telling line of an nbgrader failure log (the last exception line, else the last line)."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    pattern = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception|Exit)\b|Kernel died)")
    for ln in reversed(lines):
        if pattern.match(ln):
            return ln
    return lines[-1] if lines else "unknown error"


def _finish(workdir: Path, assignment: str, student: str, proc_ok: bool, started: float, flags) -> Result:
    res = Result(student=student, success=False, flags=list(flags), seconds=time.perf_counter() - started)
    path = workdir / "result.json"
    if not proc_ok:
        res.error = "grading exceeded its wall-clock limit and was stopped"
    elif not path.exists():
        res.error = "the grading process died without a result"
    else:
        data = json.loads(path.read_text())
        res.success, res.error = data["success"], data["error"]
        res.grades, res.comments = data["grades"], data["comments"]
    nbs = sorted((workdir / "autograded" / student / assignment).glob("*.ipynb"))
    if res.success and nbs:
        res.messages = _cell_messages(nbs[0])
        res.autograded = str(nbs[0])
    if not res.success and not res.error:
        res.error = "nbgrader could not grade this submission"
    return res


def grade_many(assignment: str, submissions: dict[str, Path], jobs: int = 2, timeout: int = 60,
               wall_limit: float = 900.0, progress=None, keep: Path | None = None):
    """Grade each submission folder (student -> folder with the notebook) in isolation, ``jobs`` at once.

    Yields :class:`Result` objects as they finish (the temporary autograded notebook is moved into
    ``keep/<student>/<assignment>/`` when ``keep`` is given). Never raises for a submission's fault.
    """
    _ensure_path()
    import nbgrader.apps  # noqa: F401 - import once in the parent; forked children inherit it

    base = Path(tempfile.mkdtemp(prefix="bncourse-"))
    try:
        template = template_db(assignment, timeout)
        ctx = mp.get_context("fork")
        pending = list(submissions.items())
        running: dict[str, tuple] = {}
        while pending or running:
            while pending and len(running) < max(1, jobs):
                student, folder = pending.pop(0)
                workdir = base / f"sub-{len(running)}-{student}"
                workdir.mkdir()
                flags = []
                for nbpath in sorted(Path(folder).glob("*.ipynb")):
                    try:
                        flags += review(nbformat.read(nbpath, as_version=4))
                    except Exception as exc:  # unreadable notebook: nbgrader will report it too
                        flags.append(f"notebook unreadable: {type(exc).__name__}")
                _prepare(workdir, template, assignment, Path(folder), student)
                proc = ctx.Process(target=_grade_child, args=(str(workdir), assignment, student, timeout))
                proc.start()
                running[student] = (proc, workdir, time.perf_counter(), flags)
            time.sleep(0.05)
            for student in list(running):
                proc, workdir, started, flags = running[student]
                overdue = time.perf_counter() - started > wall_limit
                if proc.is_alive() and not overdue:
                    continue
                if proc.is_alive():
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                proc.join()
                del running[student]
                res = _finish(workdir, assignment, student, not overdue, started, flags)
                if keep is not None and res.autograded:
                    dest = keep / student / assignment
                    if dest.exists():
                        shutil.rmtree(dest)
                    shutil.copytree(Path(res.autograded).parent, dest)
                    res.autograded = str(dest / Path(res.autograded).name)
                if progress is not None:
                    progress(res)
                yield res
    finally:
        shutil.rmtree(base, ignore_errors=True)


# ----------------------------------------------------------------------------- class gradebook
def merge(course: Path, assignment: str, res: Result) -> None:
    """Record one result in the course's gradebook.db (creating student and submission as needed).

    Auto scores and auto comments are replaced; manual scores already entered are kept. A submission
    that could not be graded is recorded with zero auto scores and flagged, so it is never lost.
    """
    import warnings

    from nbgrader.api import Gradebook, MissingEntry
    from sqlalchemy.exc import SAWarning
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb, warnings.catch_warnings():
        # nbgrader's add_submission builds rows before adding them to the session; SQLAlchemy 2 warns.
        warnings.simplefilter("ignore", SAWarning)
        gb.update_or_create_student(res.student)
        try:
            sub = gb.find_submission(assignment, res.student)
        except MissingEntry:
            sub = gb.add_submission(assignment, res.student)
        by_id = {(g["notebook"], g["grade_id"]): g for g in res.grades}
        comments = {(c["notebook"], c["name"]): c for c in res.comments}
        for nb in sub.notebooks:
            for g in nb.grades:
                new = by_id.get((nb.name, g.name))
                if new is not None:
                    g.auto_score = new["auto_score"]
                    g.needs_manual_grade = bool(new["needs_manual_grade"]) and g.manual_score is None
                else:  # not graded: zero for tests, leave answers to the instructor
                    g.auto_score = 0.0 if g.cell.cell_type == "code" else None
                    g.needs_manual_grade = g.cell.cell_type != "code" and g.manual_score is None
            for c in nb.comments:
                new = comments.get((nb.name, c.name))
                c.auto_comment = new["auto_comment"] if new else None
            nb.flagged = bool(res.flags) or not res.success
        gb.db.commit()


def gradebook_rows(course: Path, assignment: str) -> tuple[list[str], list[list]]:
    """Header and rows (one per student) of the assignment's gradebook: points per graded cell."""
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
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
            if flagged:
                status += ", flagged"
            rows.append([sub.student.id] + vals + [sub.score, sub.max_score, status])
    return header, rows

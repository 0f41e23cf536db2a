"""Grading engine behind ``bncourse``: nbgrader's own autograde, one throwaway course per submission.

Where learner code runs is decided by nbgrader's configuration, not here: the course's
``Autograde.autograde_preprocessors`` holds ``SandboxedExecute`` (``autograder.trusted``), so every
submission's code runs in a sandboxed kernel and every test cell is scored by the trusted grader, whether
nbgrader is started by ``bncourse``, ``nbgrader autograde`` or formgrader.

What this module adds for a class:

* **The course's configuration.** Each submission is graded with the course's ``nbgrader_config.py``
  (late-submission plugin, timeouts, course id, sandbox limits), only redirected to a throwaway course.
* **One writer.** Each submission is graded in its own forked process, in a temporary course holding a
  template gradebook (the assignment with the class's due date, no other learner) and a copy of the
  submission. The parent alone writes the class gradebook (:func:`store.merge`), after checking the
  result, and copies the autograded notebook next to the others, so feedback, export and formgrader work.
* **Nothing lost, nothing stops the run.** A submission that cannot be graded (an unreadable notebook, the
  wall-clock limit) is recorded with 0 points, flagged, with the reason. Submitted files are only read.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import nbformat

from . import store
from .config import SOLUTIONS
from .review import review

STUDENT = "learner"


_ensure_path = store.ensure_alembic_on_path


def assignments() -> list[str]:
    """Assignment ids: the folders of solutions/ that hold a notebook."""
    return sorted(p.name for p in SOLUTIONS.iterdir() if p.is_dir() and any(p.glob("*.ipynb")))


def notebook_name(assignment: str) -> str:
    paths = sorted((SOLUTIONS / assignment).glob("*.ipynb"))
    if len(paths) != 1:
        raise FileNotFoundError(f"expected one notebook in solutions/{assignment}, found {len(paths)}")
    return paths[0].stem


# ----------------------------------------------------------------------------- configuration
def course_config(course: Path | None):
    """The course's nbgrader configuration (its ``nbgrader_config.py``), or this repository's settings
    for a course folder without one."""
    from traitlets.config import Config, PyFileConfigLoader

    from .config import apply
    cfg = Config()
    if course is not None and (course / "nbgrader_config.py").is_file():
        cfg.merge(PyFileConfigLoader("nbgrader_config.py", path=str(course)).load_config())
    else:
        apply(cfg, root=course or Path.cwd())
    if "root" not in cfg.CourseDirectory:
        cfg.CourseDirectory.root = str(course or Path.cwd())
    return cfg


def db_url_of(cfg, course: Path) -> str:
    return cfg.CourseDirectory.get("db_url") or f"sqlite:///{course / 'gradebook.db'}"


def course_id_of(cfg) -> str:
    return cfg.CourseDirectory.get("course_id") or "default_course"


def _api(cfg):
    _ensure_path()
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory
    return NbGraderAPI(coursedir=CourseDirectory(config=cfg), config=cfg)


def _throwaway(cfg, root: Path, release: Path | None = None, timeout: int | None = None):
    """``cfg`` pointed at a throwaway course folder ``root`` with its own SQLite gradebook."""
    import copy
    out = copy.deepcopy(cfg)   # Config.merge shares sub-sections: never edit the course's own
    source = cfg.CourseDirectory.get("source_directory")
    if source and not Path(source).is_absolute():
        out.CourseDirectory.source_directory = str(Path(cfg.CourseDirectory.get("root") or ".") / source)
    out.CourseDirectory.root = str(root)
    out.CourseDirectory.db_url = f"sqlite:///{root / 'gradebook.db'}"
    if "source_directory" not in cfg.CourseDirectory:
        out.CourseDirectory.source_directory = str(SOLUTIONS)
    out.CourseDirectory.release_directory = str(release or root / "release")
    for name in ("submitted_directory", "autograded_directory", "feedback_directory"):
        out.CourseDirectory.pop(name, None)
    if timeout is not None:
        out.Execute.timeout = int(timeout)
    out.Application.log_level = "ERROR"
    return out


def generate(assignment: str, root: Path, release: Path, timeout: int = 60, cfg=None) -> None:
    """nbgrader generate_assignment from the source folder into ``release``; records it in root's db."""
    cfg = _throwaway(cfg if cfg is not None else course_config(None), root, release, timeout)
    result = _api(cfg).generate_assignment(assignment, force=True, create=True)
    if not result["success"]:
        raise RuntimeError(f"nbgrader generate_assignment {assignment} failed:\n{result['error']}\n{result['log']}")


def template_db(assignment: str, cfg=None, timeout: int = 60) -> Path:
    """A gradebook that holds only ``assignment`` (no learners), cached per source notebook and nbgrader.

    Creating a gradebook costs nbgrader ~6 s (it runs alembic), so it is done once and copied per
    submission. Cached under $XDG_CACHE_HOME/bncourse (default ~/.cache/bncourse) with a digest that is
    checked before each use.
    """
    import nbgrader
    cfg = cfg if cfg is not None else course_config(None)
    source = Path(cfg.CourseDirectory.get("source_directory") or SOLUTIONS)
    if not source.is_absolute():
        source = Path(cfg.CourseDirectory.root) / source
    digest = hashlib.sha256(nbgrader.__version__.encode() + course_id_of(cfg).encode())
    for p in sorted((source / assignment).glob("*.ipynb")):
        digest.update(p.name.encode() + p.read_bytes())
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bncourse"
    path = cache / f"{assignment}-{digest.hexdigest()[:16]}.db"
    check = path.with_suffix(".sha256")
    if path.exists() and check.exists() and hashlib.sha256(path.read_bytes()).hexdigest() == check.read_text():
        return path
    with tempfile.TemporaryDirectory(prefix="bncourse-template-") as tmp:
        generate(assignment, Path(tmp), Path(tmp) / "release", timeout, cfg)
        data = (Path(tmp) / "gradebook.db").read_bytes()
        try:
            cache.mkdir(parents=True, exist_ok=True)
            part = path.with_suffix(f".{os.getpid()}.part")
            part.write_bytes(data)
            os.replace(part, path)  # atomic: concurrent runs never see half a file
            check.write_text(hashlib.sha256(data).hexdigest())
        except OSError:  # read-only home: keep it for this run only
            path = Path(tempfile.mkdtemp(prefix="bncourse-")) / "gradebook.db"
            path.write_bytes(data)
    return path


def ensure_assignment(course: Path, assignment: str, cfg=None) -> None:
    """Record ``assignment`` in the course's gradebook (generating it from the source) unless it is there.

    A course whose SQLite gradebook does not exist yet starts as a copy of the cached template gradebook
    (nbgrader's own generate_assignment costs seconds: it sets the database up with alembic)."""
    from nbgrader.api import MissingEntry
    cfg = cfg if cfg is not None else course_config(course)
    _ensure_path()
    url = db_url_of(cfg, course)
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):])
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(template_db(assignment, cfg), path)
            return
    with store.open_gradebook(db_url_of(cfg, course), course_id_of(cfg)) as gb:
        try:
            if gb.find_assignment(assignment).notebooks:
                return
        except MissingEntry:
            pass
    import copy
    c = copy.deepcopy(cfg)
    c.CourseDirectory.root = str(course)
    c.CourseDirectory.db_url = db_url_of(cfg, course)
    c.Application.log_level = "ERROR"
    with tempfile.TemporaryDirectory() as tmp:  # the release goes nowhere: only the db matters here
        c.CourseDirectory.release_directory = tmp
        result = _api(c).generate_assignment(assignment, force=True, create=True)
        if not result["success"]:
            raise RuntimeError(f"nbgrader generate_assignment {assignment} failed:\n{result['error']}")


# ----------------------------------------------------------------------------- one submission
@dataclass
class Result:
    """The outcome of grading one submission."""

    student: str
    success: bool
    error: str = ""
    grades: list[dict] = field(default_factory=list)   # notebook, grade_id, cell_type, auto_score, max_score, ...
    comments: list[dict] = field(default_factory=list)  # notebook, name, auto_comment
    messages: dict = field(default_factory=dict)        # grade_id -> the test cell's report
    flags: list[str] = field(default_factory=list)      # reasons for a human to look
    events: list[str] = field(default_factory=list)     # what happened in the kernel (death, time limit)
    sandbox: str = ""
    sandboxed: bool = False
    seconds: float = 0.0
    cells_seconds: float | None = None                  # of which running the notebook's cells and checks
    timestamp: datetime | None = None
    late_penalties: dict = field(default_factory=dict)  # notebook -> points deducted
    autograded: str = ""                                # path of the autograded notebook

    def error_line(self) -> str:
        return summarize_error(self.error) if self.error else ""


def _cell_messages(nb) -> dict[str, str]:
    out = {}
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type != "code" or not meta.get("grade") or meta.get("solution"):
            continue
        parts = []
        for o in cell.get("outputs", []):
            if o.output_type == "stream":
                parts.append(o.text)
            elif o.output_type == "error":
                parts.append(f"{o.ename}: {o.evalue}" if o.evalue else o.ename)
        out[meta["grade_id"]] = "".join(parts).strip()
    return out


def _grade_child(workdir: str, assignment: str, student: str, cfg, duedate) -> None:
    """Runs in a forked process: nbgrader autograde in the throwaway course at ``workdir``."""
    os.setsid()  # own process group: the parent can kill us and the kernel together
    _one_thread()
    root = Path(workdir)
    log = os.open(root / "grading.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    out = {"success": False, "error": "", "grades": [], "comments": [], "timestamp": None, "penalties": {}}
    try:
        if duedate is not None:
            with store.open_gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
                gb.update_or_create_assignment(assignment, duedate=duedate)
        res = _api(cfg).autograde(assignment, student, force=True, create=True)
        out["success"] = bool(res["success"])
        if not res["success"]:
            out["error"] = (res.get("error") or "") + (res.get("log") or "")
        else:
            with store.open_gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
                sub = gb.find_submission(assignment, student)
                out["timestamp"] = sub.timestamp.isoformat() if sub.timestamp else None
                for nb in sub.notebooks:
                    out["penalties"][nb.name] = nb.late_submission_penalty
                    for g in nb.grades:
                        out["grades"].append(dict(notebook=nb.name, grade_id=g.name, cell_type=g.cell.cell_type,
                                                  auto_score=g.auto_score, max_score=g.max_score,
                                                  needs_manual_grade=g.needs_manual_grade))
                    for c in nb.comments:
                        out["comments"].append(dict(notebook=nb.name, name=c.name, auto_comment=c.auto_comment))
    except BaseException as exc:  # noqa: BLE001 - report, never lose the submission
        out["success"] = False
        out["error"] = f"{type(exc).__name__}: {exc}"
    (root / "result.json").write_text(json.dumps(out, default=str))
    os._exit(0)


def _one_thread() -> None:
    """One compute thread per grading process: with several grading processes on few cores, OpenMP and
    BLAS pools of their own would oversubscribe the CPU (threads spin-waiting for each other made rounds of
    two workers erratic)."""
    try:
        import torch
        torch.set_num_threads(1)
    except Exception:  # noqa: BLE001 - torch absent or already configured
        pass
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(1)
    except Exception:  # noqa: BLE001
        pass


def _prepare(workdir: Path, template: Path, assignment: str, submission_dir: Path, student: str) -> None:
    shutil.copy2(template, workdir / "gradebook.db")
    dest = workdir / "submitted" / student / assignment
    shutil.copytree(submission_dir, dest, ignore=shutil.ignore_patterns(".ipynb_checkpoints"), symlinks=True)


def summarize_error(text: str) -> str:
    """The most telling line of an nbgrader failure log (the last exception line, else the last line)."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    pattern = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception|Exit)\b|Kernel died)")
    for ln in reversed(lines):
        if pattern.match(ln):
            return ln
    return lines[-1] if lines else "unknown error"


def _number(value, lo=0.0, hi=float("inf")):
    return type(value) in (int, float) and lo <= value <= hi


def _finish(workdir: Path, assignment: str, student: str, proc_ok: bool, started: float, flags) -> Result:
    res = Result(student=student, success=False, flags=list(flags), seconds=time.perf_counter() - started)
    path = workdir / "result.json"
    if not proc_ok:
        res.error = "grading exceeded its wall-clock limit and was stopped"
    elif not path.is_file():
        res.error = "the grading process died without a result"
    else:
        try:
            data = json.loads(path.read_text())
            res.success, res.error = bool(data["success"]), str(data["error"])
            res.grades = [g for g in data["grades"] if type(g) is dict and _number(g.get("max_score"))
                          and (g.get("auto_score") is None or _number(g["auto_score"], 0.0, g["max_score"]))]
            res.comments = [c for c in data["comments"] if type(c) is dict]
            res.late_penalties = {k: v for k, v in data.get("penalties", {}).items() if _number(v)}
            if data.get("timestamp"):
                res.timestamp = datetime.fromisoformat(data["timestamp"])
        except (ValueError, KeyError, TypeError) as exc:
            res.success, res.error = False, f"unreadable grading result ({exc})"
    nbs = sorted((workdir / "autograded" / student / assignment).glob("*.ipynb"))
    if res.success and nbs:
        nb = nbformat.read(nbs[0], as_version=4)
        res.messages = _cell_messages(nb)
        meta = nb.metadata.get("bncourse", {})
        res.events = [str(e) for e in meta.get("events", [])]
        res.sandbox, res.sandboxed = str(meta.get("sandbox", "")), bool(meta.get("sandboxed"))
        if _number(meta.get("cells_seconds")):
            res.cells_seconds = float(meta["cells_seconds"])
        res.flags = sorted(set(res.flags) | {str(f) for f in meta.get("flags", [])})
        res.autograded = str(nbs[0])
    if not res.success and not res.error:
        res.error = "nbgrader could not grade this submission"
    return res


def warm_up(assignment: str) -> None:
    """Import in this process what every grading child needs (forked children inherit it)."""
    _ensure_path()
    import importlib

    import nbgrader.apps  # noqa: F401
    from . import course
    from .trusted import preprocessor  # noqa: F401
    module = course.find(assignment)
    if module is not None:
        importlib.import_module(module.checks)
    # What each child would otherwise import on first use, seconds per submission: jupyter_client's
    # kernelspec (IPython), nbgrader's SQLite dialect, and torch's lazy imports on the first backward
    # pass (sympy) and the first optimizer (torch._dynamo).
    import IPython.paths  # noqa: F401
    import ipykernel.kernelspec  # noqa: F401
    import sqlalchemy.dialects.sqlite  # noqa: F401
    import sqlite3  # noqa: F401
    import torch

    from .kernel_agent.torch_policy import first_optimizer_step
    first_optimizer_step(torch)
    from . import sandbox
    sandbox.mpl_cache_dir()


def grade_many(assignment: str, submissions: dict[str, Path], jobs: int = 2, timeout: int | None = None,
               wall_limit: float = 900.0, progress=None, keep: Path | None = None, course: Path | None = None,
               cfg=None, prestart: bool = True, cluster: str | None = None):
    """Grade each submission folder (student -> folder with the notebook), ``jobs`` at once, each in its
    own process and throwaway course, with the course's configuration.

    Yields :class:`Result` objects as they finish (the autograded notebook is moved into
    ``keep/<student>/<assignment>/`` when ``keep`` is given). Never raises for a submission's fault.
    With ``prestart``, sandboxed kernels are started ahead (:mod:`.trusted.pool`), one per submission.
    With ``cluster`` (a Dask scheduler's address), workers grade and this process merges (:mod:`.cluster`).
    """
    from .trusted.runner import course_secret
    cfg = cfg if cfg is not None else course_config(course)
    if cluster:
        from .cluster import grade_on_cluster
        yield from grade_on_cluster(cluster, assignment, submissions, timeout, wall_limit, progress, keep, course, cfg)
        return
    warm_up(assignment)
    secret_dir = course if course is not None else Path(tempfile.mkdtemp(prefix="bncourse-secret-"))
    course_secret(secret_dir)
    secret_file = str(secret_dir / ".bncourse" / "secret")
    duedate = None
    if course is not None:
        try:
            duedate = store.assignment_duedate(db_url_of(cfg, course), assignment, course_id_of(cfg))
        except Exception:  # noqa: BLE001 - a course without a gradebook yet has no due date
            duedate = None
    base = Path(tempfile.mkdtemp(prefix="bncourse-"))
    from .trusted import pool as pools
    pool = pools.for_course(cfg, assignment, max(1, jobs)) if prestart and len(submissions) > 1 else None
    try:
        if pool is not None:
            pool.fill(len(submissions))
        template = template_db(assignment, cfg)
        ctx = mp.get_context("fork")
        pending = list(submissions.items())
        running: dict[str, tuple] = {}
        counter = 0
        while pending or running:
            while pending and len(running) < max(1, jobs):
                student, folder = pending.pop(0)
                counter += 1
                workdir = base / f"s{counter}"
                workdir.mkdir()
                flags = []
                for nbpath in sorted(Path(folder).glob("*.ipynb")):
                    try:
                        flags += review(nbformat.read(nbpath, as_version=4))
                    except Exception as exc:  # noqa: BLE001 - unreadable notebook: nbgrader reports it too
                        flags.append(f"notebook unreadable: {type(exc).__name__}")
                _prepare(workdir, template, assignment, Path(folder), student)
                child_cfg = _throwaway(cfg, workdir, timeout=timeout)
                child_cfg.SandboxedExecute.secret_file = secret_file
                kernel = pool.take() if pool is not None else None
                if kernel is not None:
                    child_cfg.SandboxedExecute.pooled_kernel = str(kernel.info_file)
                proc = ctx.Process(target=_grade_child, args=(str(workdir), assignment, student, child_cfg, duedate))
                proc.start()
                running[student] = (proc, workdir, time.perf_counter(), sorted(set(flags)), kernel)
                if pool is not None:
                    pool.fill(len(pending))
            time.sleep(0.02)
            for student in list(running):
                proc, workdir, started, flags, kernel = running[student]
                overdue = time.perf_counter() - started > wall_limit
                if proc.is_alive() and not overdue:
                    continue
                if proc.is_alive():
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                proc.join()
                if pool is not None:
                    pool.release(kernel)
                del running[student]
                res = _finish(workdir, assignment, student, not overdue, started, flags)
                if keep is not None and res.autograded:
                    dest = keep / student / assignment
                    if dest.exists():
                        shutil.rmtree(dest)
                    shutil.copytree(Path(res.autograded).parent, dest)
                    res.autograded = str(dest / Path(res.autograded).name)
                shutil.rmtree(workdir, ignore_errors=True)
                if progress is not None:
                    progress(res)
                yield res
    finally:
        for proc, *_ in running.values() if "running" in locals() else []:
            try:
                os.killpg(proc.pid, signal.SIGKILL)   # interrupted: nothing a submission started survives
            except (ProcessLookupError, PermissionError):
                pass
            proc.join(timeout=10)
        if pool is not None:
            pool.close()
        shutil.rmtree(base, ignore_errors=True)
        if course is None:
            shutil.rmtree(secret_dir, ignore_errors=True)


# ----------------------------------------------------------------------------- records, incremental runs
RECORD = ".bncourse-graded.json"


def grader_version(assignment: str | None = None) -> str:
    """A digest of the code that decides an assignment's scores: its checks and procedures, the shared
    check machinery, the trusted grader, the kernel agent, the sandbox and the course configuration."""
    import hashlib

    from . import course
    root = Path(__file__).resolve().parent
    module = course.find(assignment) if assignment else None
    short = module.checks.rpartition(".")[2] if module else None
    files = [p for sub in ("trusted", "sandbox") for p in (root / sub).rglob("*.py")]
    files += [p for p in (root / "kernel_agent").rglob("*.py")
              if p.parent.name != "procedures" or p.stem in ("__init__", short)]
    files += [p for p in (root / "checks").glob("*.py") if p.stem in ("__init__", "learner", short) or not module]
    files += [root / n for n in ("config.py", "course.py", "review.py")]
    h = hashlib.sha256()
    for p in sorted(set(files)):
        h.update(str(p.relative_to(root)).encode() + p.read_bytes())
    return h.hexdigest()


def input_digest(assignment: str, submission: Path, cfg, course: Path | None, version: str) -> str:
    """What a grade depends on: the submitted files, the assignment's source, the course's configuration
    and the grader's code. Unchanged digest, unchanged grade."""
    import hashlib
    h = hashlib.sha256(version.encode() + assignment.encode())
    for p in sorted(submission.rglob("*")):
        if p.is_file() and not p.is_symlink():
            h.update(str(p.relative_to(submission)).encode() + b"\0" + p.read_bytes())
    source = Path(cfg.CourseDirectory.get("source_directory") or SOLUTIONS)
    if not source.is_absolute():
        source = Path(cfg.CourseDirectory.get("root") or ".") / source
    for p in sorted((source / assignment).glob("*.ipynb")):
        h.update(p.read_bytes())
    if course is not None and (course / "nbgrader_config.py").is_file():
        h.update((course / "nbgrader_config.py").read_bytes())
    return h.hexdigest()


def recorded_digest(keep: Path, student: str, assignment: str) -> str | None:
    try:
        return json.loads((keep / student / assignment / RECORD).read_text()).get("digest")
    except (OSError, ValueError, AttributeError):
        return None


def write_record(keep: Path, res: Result, assignment: str, digest: str, submission: Path | None = None) -> None:
    """After a result is merged: the autograded folder says what was graded, and for a submission that
    could not be graded it holds a notebook saying why (formgrader lists it; nothing runs it again)."""
    dest = keep / res.student / assignment
    dest.mkdir(parents=True, exist_ok=True)
    if not res.success and not any(dest.glob("*.ipynb")):
        reason = res.error_line() or "it could not be graded"
        nb = None
        for p in sorted(Path(submission).glob("*.ipynb")) if submission else []:
            try:
                nb = nbformat.read(p, as_version=4)
                name = p.name
                break
            except Exception:  # noqa: BLE001 - unreadable: the record says so
                continue
        if nb is None:
            nb, name = nbformat.v4.new_notebook(), f"{notebook_name(assignment)}.ipynb"
        nb.cells.insert(0, nbformat.v4.new_markdown_cell(
            f"**This submission could not be graded**: {reason}. It was recorded with 0 points and flagged."))
        nbformat.write(nb, dest / name)
    (dest / RECORD).write_text(json.dumps({"digest": digest, "success": res.success,
                                           "graded": time.strftime("%Y-%m-%d %H:%M:%S")}))


# ----------------------------------------------------------------------------- class gradebook
def merge(course: Path, assignment: str, res: Result, cfg=None) -> None:
    """Record one result in the course's gradebook (see :func:`store.merge`)."""
    cfg = cfg if cfg is not None else course_config(course)
    store.merge(db_url_of(cfg, course), assignment, res, course_id_of(cfg))


def register_students(course: Path, students, cfg=None) -> None:
    """Add the students the gradebook does not know yet, sorted (see :func:`store.register_students`)."""
    cfg = cfg if cfg is not None else course_config(course)
    store.register_students(db_url_of(cfg, course), students, course_id_of(cfg))


def gradebook_rows(course: Path, assignment: str, cfg=None) -> tuple[list[str], list[list]]:
    """Header and rows (one per student) of the assignment's gradebook: points per graded cell."""
    cfg = cfg if cfg is not None else course_config(course)
    return store.gradebook_rows(db_url_of(cfg, course), assignment, course_id_of(cfg))


__all__ = ["Result", "assignments", "course_config", "ensure_assignment", "generate", "grade_many",
           "gradebook_rows", "merge", "notebook_name", "summarize_error", "template_db", "asdict"]


# ----------------------------------------------------------------------------- learner edition
def learner_edition() -> bool:
    """True in the learner package (no solutions/, no bank): hidden tests exist only at the instructor's."""
    return not SOLUTIONS.is_dir()


def assignment_of(nb) -> str | None:
    """The assignment a notebook belongs to, from the check module its test cells call."""
    from . import course
    from .trusted.runner import NotACheck, parse_test_cell
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and meta.get("grade") and not meta.get("solution"):
            try:
                module = parse_test_cell(cell.source).module
            except NotACheck:
                continue
            found = next((m.assignment for m in course.MODULES if m.checks == module), None)
            if found:
                return found
    return None


def grade_visible(path: Path, sandbox: str = "auto", timeout: int = 60) -> Result:
    """Self-check of the visible test cells of one notebook, in the sandbox, without nbgrader's gradebook
    (the learner edition has no hidden tests: those run when the instructor grades)."""
    from nbgrader.utils import determine_grade
    from traitlets.config import Config

    from .trusted.preprocessor import SandboxedExecute
    started = time.perf_counter()
    res = Result(student=STUDENT, success=False)
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as exc:  # noqa: BLE001 - an unreadable notebook is a result, not a crash
        res.error = f"the notebook cannot be read: {type(exc).__name__}: {exc}"
        return res
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    cfg = Config()
    cfg.SandboxedExecute.sandbox = sandbox
    cfg.SandboxedExecute.timeout = int(timeout)
    pp = SandboxedExecute(config=cfg)
    with tempfile.TemporaryDirectory(prefix="bncourse-self-") as tmp:
        resources = {"metadata": {"path": tmp}, "nbgrader": {"assignment": assignment_of(nb) or "",
                                                             "notebook": path.stem}}
        try:
            nb, _ = pp.preprocess(nb, resources)
        except Exception as exc:  # noqa: BLE001
            res.error = f"{type(exc).__name__}: {exc}"
            return res
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("grade_id") in pp._tests and cell.cell_type == "code":
            score, top = determine_grade(cell)
            res.grades.append(dict(notebook=path.stem, grade_id=meta["grade_id"], cell_type="code",
                                   auto_score=score, max_score=top, needs_manual_grade=False))
    res.messages = _cell_messages(nb)
    meta = nb.metadata.get("bncourse", {})
    res.sandbox, res.sandboxed = str(meta.get("sandbox", "")), bool(meta.get("sandboxed"))
    res.events, res.flags = list(meta.get("events", [])), list(meta.get("events", []))
    res.success, res.seconds = True, time.perf_counter() - started
    return res

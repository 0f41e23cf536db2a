"""``SandboxedExecute``: nbgrader's Execute step, with the kernel sandboxed and test cells scored here.

It replaces ``nbgrader.preprocessors.Execute`` in ``Autograde.autograde_preprocessors`` (see
``autograder.config``), so ``nbgrader autograde``, formgrader's Autograde button and ``bncourse`` all grade
the same way. For each notebook:

1. The learner's kernel starts inside the sandbox (``autograder.sandbox``), with the assignment's policy
   (``autograder.course``): no bnlib, no course files, torch's normalization layers disabled where learners
   write their own. The submission's other files are copied in; its notebooks are not (they hold the hidden
   tests after nbgrader's sanitizing step).
2. Code cells run in that kernel in order, as nbgrader does. A cell that kills the kernel or will not stop
   ends the kernel; later code cells are not run, later test cells score 0 with the reason.
3. Test cells (grade cells that are not solution cells, as the gradebook records them) never run in the
   kernel. Their trusted source is read from the gradebook, parsed into a check call and run in this
   process (``autograder.trusted.runner``) against the learner's objects in the kernel. The cell's outputs
   are then written here: the check's report (stdout) and the score as the cell's result, which nbgrader's
   ``SaveAutoGrades`` reads. Nothing the kernel displays decides a score.

What happened (sandbox used, kernel deaths, timeouts) is recorded in the notebook's metadata under
``bncourse`` for the caller to report and flag.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient.client import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbgrader.preprocessors import Execute, NbGraderPreprocessor
from traitlets import Float, Integer, Unicode

from .. import course
from .. import sandbox as sandboxes
from ..checks.learner import KernelGone
from .kernel import AdoptedKernelManager, RemoteKernel, SandboxKernelManager
from .remote import Remote, release
from .runner import NotACheck, course_secret, parse_test_cell, run_check


LIMIT_TRAITS = {"memory": "memory_limit", "processes": "process_limit", "file_size": "file_size_limit",
                "cpu_seconds": "cpu_limit", "tmp_size": "tmp_size_limit"}


def limits_of(section) -> "sandboxes.Limits":
    """The sandbox limits a ``SandboxedExecute`` config section sets (defaults for the rest)."""
    return sandboxes.Limits(**{k: int(section[t]) for k, t in LIMIT_TRAITS.items() if t in section})


def _stream(text: str):
    return nbformat.v4.new_output("stream", name="stdout", text=text)


class SandboxedExecute(Execute):
    """Execute a submission in a sandboxed kernel; score its test cells in this (trusted) process."""

    sandbox = Unicode("auto", help="Where learner code runs: 'bwrap', 'none' (unsandboxed) or 'auto' "
                                   "(bwrap when it works here).").tag(config=True)
    memory_limit = Integer(sandboxes.Limits.memory, help="Bytes of address space per kernel process.").tag(config=True)
    process_limit = Integer(sandboxes.Limits.processes, help="Processes the kernel may run.").tag(config=True)
    file_size_limit = Integer(sandboxes.Limits.file_size, help="Bytes per file the kernel writes.").tag(config=True)
    cpu_limit = Integer(sandboxes.Limits.cpu_seconds, help="CPU seconds per kernel process.").tag(config=True)
    tmp_size_limit = Integer(sandboxes.Limits.tmp_size, help="Bytes of the kernel's private /tmp.").tag(config=True)
    call_timeout = Float(30.0, help="Seconds one call of a learner function may take.").tag(config=True)
    secret_file = Unicode("", help="File with the secret that salts hidden seeds (default: "
                                   "<course>/.bncourse/secret).").tag(config=True)
    course_root = Unicode("", help="The course folder (for the default secret).").tag(config=True)
    pooled_kernel = Unicode("", help="A kernel started ahead by bncourse's pool (its kernel.json), used for "
                                     "this notebook only.").tag(config=True)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.shutdown_kernel = "immediate"

    # ----------------------------------------------------------------------------- kernel
    def create_kernel_manager(self):
        import zmq
        import zmq.asyncio
        if self.pooled_kernel:
            km = AdoptedKernelManager(kernel_name=self.kernel_name or "python3", config=self.config)
            km.adopt(json.loads(Path(self.pooled_kernel).read_text()))
        else:
            km = SandboxKernelManager(kernel_name=self.kernel_name or "python3", config=self.config)
        km.sandbox = self._sandbox
        km.policy = course.policy(self._assignment or "")
        km.limits = sandboxes.Limits(memory=self.memory_limit, processes=self.process_limit,
                                     file_size=self.file_size_limit, cpu_seconds=self.cpu_limit,
                                     tmp_size=self.tmp_size_limit)
        km.files = self._files
        # A private ZMQ context whose sockets drop messages larger than the protocol allows.
        km.context = zmq.asyncio.Context()
        km.context.setsockopt(zmq.MAXMSGSIZE, 4 << 27)
        self.km = km
        return km

    def _kill(self) -> None:
        from jupyter_core.utils import run_sync
        try:
            if self.km is not None:
                run_sync(self.km.shutdown_kernel)(now=True)
        except Exception:  # noqa: BLE001 - it is being killed because it misbehaves
            pass

    # ----------------------------------------------------------------------------- the notebook
    def _trusted_tests(self, resources) -> dict[str, tuple[float, str]]:
        """grade_id -> (points, source) of the test cells, from the gradebook (not from the submission)."""
        info = resources.get("nbgrader", {})
        if not info.get("db_url"):   # self-check without a gradebook: the notebook's own check cells
            tests = {}
            for c in self.nb.cells:
                meta = c.metadata.get("nbgrader", {})
                if c.cell_type == "code" and meta.get("grade") and not meta.get("solution"):
                    try:
                        parse_test_cell(c.source)
                    except NotACheck:
                        continue      # e.g. a released hidden-test cell, emptied by nbgrader
                    tests[meta["grade_id"]] = (float(meta["points"]), c.source)
            return tests
        from nbgrader.api import Gradebook
        tests = {}
        with Gradebook(info["db_url"]) as gb:
            notebook = gb.find_notebook(info["notebook"], info["assignment"])
            solutions = {c.name for c in notebook.solution_cells}
            for cell in notebook.grade_cells:
                if cell.cell_type == "code" and cell.name not in solutions:
                    source = gb.find_source_cell(cell.name, info["notebook"], info["assignment"]).source
                    tests[cell.name] = (float(cell.max_score), source)
        return tests

    def _prepare_files(self, resources) -> Path | None:
        """A copy of the submission folder's other files (no notebooks, no links) for the kernel."""
        path = resources.get("metadata", {}).get("path")
        if not path or not Path(path).is_dir():
            return None
        dest = Path(tempfile.mkdtemp(prefix="bnf-"))
        for p in sorted(Path(path).rglob("*")):
            rel = p.relative_to(path)
            if p.is_symlink() or p.suffix == ".ipynb" or any(part.startswith(".") for part in rel.parts):
                continue
            if p.is_dir():
                (dest / rel).mkdir(parents=True, exist_ok=True)
            elif p.is_file():
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(p, dest / rel)
        dest.chmod(0o755)
        for p in dest.rglob("*"):
            p.chmod(0o755 if p.is_dir() else 0o644)
        return dest

    def preprocess(self, nb, resources=None, km=None):
        NotebookClient.__init__(self, nb, km)
        self.reset_execution_trackers()
        self._check_assign_resources(resources)
        resources = resources or {}
        self._assignment = resources.get("nbgrader", {}).get("assignment")
        self._tests = self._trusted_tests(resources)
        root = self.course_root or None
        self._secret = Path(self.secret_file).read_bytes() if self.secret_file else course_secret(root)
        self._sandbox = sandboxes.get(self.sandbox) if not self.pooled_kernel else None
        self._files = self._prepare_files(resources)
        self._gone: str | None = None
        self._events: list[str] = []
        self._count = 0
        self._cells_seconds = 0.0
        self._remote = RemoteKernel(self, call_timeout=self.call_timeout)
        self._launch = None
        started = time.monotonic()
        try:
            with self.setup_kernel():
                reply = self.wait_for_reply(self.kc.kernel_info())
                if reply is None:
                    raise RuntimeError("the grading kernel did not start")
                self.nb.metadata["language_info"] = reply["content"]["language_info"]
                self.km.lock()
                self._launch = self.km.launch
                if isinstance(self.km, AdoptedKernelManager) and self._files is not None:
                    self.km.prepare_files(self._files)
                    self._remote.request({"op": "files", "path": self._launch.files_path})
                for index, cell in enumerate(self.nb.cells):
                    self.preprocess_cell(cell, resources, index)
        finally:
            if self.km is not None:
                self.km.remove_workspace()
            if self._files is not None:
                shutil.rmtree(self._files, ignore_errors=True)
        self.set_widgets_metadata()
        launch = self._launch
        self.nb.metadata["bncourse"] = {"sandbox": launch.description if launch else "",
                                        "sandboxed": bool(launch and launch.sandboxed),
                                        "events": self._events, "seconds": round(time.monotonic() - started, 3),
                                        "cells_seconds": round(self._cells_seconds, 3)}
        return self.nb, self.resources

    # ----------------------------------------------------------------------------- cells
    def preprocess_cell(self, cell, resources, index):
        started = time.monotonic()
        try:
            return self._preprocess_cell(cell, resources, index)
        finally:
            self._cells_seconds += time.monotonic() - started

    def _preprocess_cell(self, cell, resources, index):
        if cell.cell_type != "code":
            return cell, self.resources
        meta = cell.metadata.get("nbgrader", {})
        gid = meta.get("grade_id")
        if meta.get("grade") and not meta.get("solution") and gid in self._tests:
            self._grade(cell, gid)
            return cell, self.resources
        if self._gone:
            cell.outputs = [_stream(f"[not run: {self._gone}]\n")] if cell.source.strip() else []
            return cell, self.resources
        try:
            return super().preprocess_cell(cell, resources, index)
        except DeadKernelError:
            self._give_up(cell, "the kernel died while running this cell", gid)
        except CellTimeoutError:
            self._give_up(cell, "this cell did not stop when interrupted after its time limit", gid)
        except Exception as exc:  # noqa: BLE001 - nothing the learner does may stop the grading
            self._give_up(cell, f"the kernel failed ({type(exc).__name__}: {exc})", gid)
        return cell, self.resources

    def _give_up(self, cell, reason: str, gid) -> None:
        self._gone = f"{reason} (cell {gid or '?'})"
        self._events.append(self._gone)
        cell.outputs = list(cell.get("outputs", [])) + [nbformat.v4.new_output(
            "error", ename="KernelStopped", evalue=reason, traceback=[f"KernelStopped: {reason}"])]
        self._kill()

    def _grade(self, cell, gid: str) -> None:
        points, source = self._tests[gid]
        self._count += 1
        if self._gone:
            text, score = f"Not graded: {self._gone}.\n", 0.0
        else:
            try:
                call = parse_test_cell(source)
            except NotACheck as exc:
                text, score = f"This test cell could not be graded ({exc}).\n", 0.0
            else:
                self._remote.deadline = time.monotonic() + float(self.timeout or 60)
                interrupts = self._remote.interrupts
                objects = [Remote(self._remote, {"global": name}, name) for name in call.names]
                text, score = run_check(call, objects, points, gid, self._secret)
                self._remote.deadline = None
                if self._remote.interrupts > interrupts:
                    self._events.append(f"learner code was stopped after its time limit (while grading {gid})")
                if self._remote.gone:
                    self._gone = f"{self._remote.gone} (while grading {gid})"
                    self._events.append(self._gone)
                    self._kill()
                else:
                    release(self._remote)
        cell.outputs = [_stream(text), nbformat.v4.new_output("execute_result", data={"text/plain": repr(score)},
                                                              execution_count=self._count)]
        cell.execution_count = self._count




class RecordFlags(NbGraderPreprocessor):
    """After ``SaveAutoGrades``: mark the submission for a human when its code looks like tampering
    (``autograder.review``) or its kernel misbehaved (died, would not stop), with the reasons as the
    first cell's comment, where formgrader shows them. A flag never changes a score."""

    def preprocess(self, nb, resources):
        from ..review import review
        from ..store import FLAG_PREFIX, open_gradebook
        meta = nb.metadata.setdefault("bncourse", {})
        reasons = sorted(set(review(nb)) | set(meta.get("events", [])))
        if not meta.get("sandboxed", True):
            reasons.append("graded WITHOUT a sandbox")
        meta["flags"] = reasons
        info = resources.get("nbgrader", {})
        if reasons and info.get("db_url"):
            with open_gradebook(info["db_url"]) as gb:
                sub = gb.find_submission_notebook(info["notebook"], info["assignment"], info["student"])
                sub.flagged = True
                names = [c.metadata["nbgrader"]["grade_id"] for c in nb.cells
                         if c.metadata.get("nbgrader", {}).get("grade_id")]
                comments = {c.name: c for c in sub.comments}
                first = next((comments[n] for n in names if n in comments), None)
                if first is not None:
                    first.auto_comment = FLAG_PREFIX + "; ".join(reasons) + (
                        f"\n\n{first.auto_comment}" if first.auto_comment else "")
                gb.db.commit()
        return nb, resources




RUBRIC_PREFIX = "Rubric (the instructor's model answer; graders see it here, learners only in feedback):\n\n"


class ShowRubrics(NbGraderPreprocessor):
    """After ``SaveAutoGrades``: each written answer's model answer, from the instructor's source notebook
    (the course's source directory), becomes that cell's comment, so a grader sees the rubric next to the
    answer in formgrader. It is never in the released notebook; learners see it in their feedback."""

    def _model_answers(self, info) -> dict[str, str]:
        cd = self.config.get("CourseDirectory", {})
        source = Path(cd.get("source_directory") or "source")
        if not source.is_absolute():
            source = Path(cd.get("root") or ".") / source
        path = source / info["assignment"] / f"{info['notebook']}.ipynb"
        if not path.is_file():
            return {}
        answers = {}
        for cell in nbformat.read(path, as_version=4).cells:
            meta = cell.metadata.get("nbgrader", {})
            if cell.cell_type == "markdown" and meta.get("grade") and meta.get("solution"):
                answers[meta["grade_id"]] = cell.source.strip()
        return answers

    def preprocess(self, nb, resources):
        from ..store import open_gradebook
        info = resources.get("nbgrader", {})
        if not info.get("db_url"):
            return nb, resources
        written = [c.metadata["nbgrader"]["grade_id"] for c in nb.cells if c.cell_type == "markdown"
                   and c.metadata.get("nbgrader", {}).get("grade") and c.metadata["nbgrader"].get("solution")]
        if not written:
            return nb, resources
        answers = self._model_answers(info)
        with open_gradebook(info["db_url"]) as gb:
            sub = gb.find_submission_notebook(info["notebook"], info["assignment"], info["student"])
            comments = {c.name: c for c in sub.comments}
            for gid in written:
                source = answers.get(gid, "")
                comment = comments.get(gid)
                if comment is None or not source:
                    continue
                rubric = RUBRIC_PREFIX + source
                comment.auto_comment = rubric + (f"\n\n{comment.auto_comment}" if comment.auto_comment else "")
            gb.db.commit()
        return nb, resources


__all__ = ["KernelGone", "RecordFlags", "SandboxedExecute", "ShowRubrics"]

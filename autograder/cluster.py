"""Grading a class on several machines with Dask distributed (``bncourse autograde --cluster ADDRESS``).

Why Dask: a class run is a bag of independent, seconds-long, CPU-bound tasks whose results come back to one
process; ``distributed`` schedules exactly that (``client.submit`` / ``as_completed``), starts with
``dask worker ADDRESS`` on each machine (or a ``LocalCluster`` on one), needs no cluster manager, and is
pure Python from PyPI. Ray would serve too, but brings a larger runtime for no feature used here.

Each task grades one submission on a worker exactly as a local run does (a forked grading process, a
throwaway course, the learner's kernel in the sandbox, scores from the trusted grader) and returns plain
data: the result and the autograded notebook's bytes. The parent alone merges into the class gradebook.
Workers need this repository (same version, same path) and bubblewrap; the sandbox, limits and secret
travel with the task's configuration.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

from . import grading


def grade_task(task: dict) -> dict:
    """Run on a worker: grade one submission; returns the result and the autograded notebook (bytes)."""
    grading.warm_up(task["assignment"])
    base = Path(tempfile.mkdtemp(prefix="bncourse-worker-"))
    try:
        workdir = base / "course"
        workdir.mkdir()
        sub = base / "submission"
        for rel, data in task["files"].items():
            dest = sub / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
        sub.mkdir(exist_ok=True)
        template = base / "template.db"
        template.write_bytes(task["template"])
        secret = base / "secret"
        secret.write_bytes(task["secret"])
        grading._prepare(workdir, template, task["assignment"], sub, task["student"])
        cfg = grading._throwaway(task["config"], workdir, timeout=task["timeout"])
        cfg.SandboxedExecute.secret_file = str(secret)
        started = time.perf_counter()
        # a plain fork: Dask's worker processes may be daemonic, which multiprocessing refuses to fork from
        pid = os.fork()
        if pid == 0:
            grading._grade_child(str(workdir), task["assignment"], task["student"], cfg, task["duedate"])
        overdue = True
        while time.perf_counter() - started < task["wall_limit"]:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                overdue = False
                break
            time.sleep(0.05)
        if overdue:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
        res = grading._finish(workdir, task["assignment"], task["student"], not overdue, started, task["flags"])
        notebook = (Path(res.autograded).name, Path(res.autograded).read_bytes()) if res.autograded else None
        out = asdict(res)
        out["timestamp"] = res.timestamp.isoformat() if res.timestamp else None
        return {"result": out, "notebook": notebook}
    finally:
        shutil.rmtree(base, ignore_errors=True)


def grade_on_cluster(address: str, assignment: str, submissions: dict[str, Path], timeout, wall_limit: float,
                     progress, keep: Path | None, course: Path | None, cfg):
    """Like :func:`grading.grade_many`, with every submission graded by a worker of the Dask cluster at
    ``address``. Yields :class:`grading.Result` objects as they finish."""
    from distributed import Client, as_completed

    import nbformat

    from .review import review
    from .trusted.runner import course_secret
    secret = course_secret(course)
    duedate = None
    if course is not None:
        try:
            duedate = grading.store.assignment_duedate(grading.db_url_of(cfg, course), assignment,
                                                       grading.course_id_of(cfg))
        except Exception:  # noqa: BLE001
            duedate = None
    template = grading.template_db(assignment, cfg).read_bytes()
    client = Client(address)
    try:
        futures = {}
        for student, folder in submissions.items():
            folder = Path(folder)
            files = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
                     if p.is_file() and not p.is_symlink() and ".ipynb_checkpoints" not in p.parts}
            flags = []
            for nbpath in sorted(folder.glob("*.ipynb")):
                try:
                    flags += review(nbformat.read(nbpath, as_version=4))
                except Exception as exc:  # noqa: BLE001
                    flags.append(f"notebook unreadable: {type(exc).__name__}")
            task = {"assignment": assignment, "student": student, "files": files, "template": template,
                    "secret": secret, "config": cfg, "timeout": timeout, "wall_limit": wall_limit,
                    "duedate": duedate, "flags": sorted(set(flags))}
            futures[client.submit(grade_task, task, pure=False, key=f"grade-{assignment}-{student}")] = student
        for future in as_completed(futures):
            student = futures[future]
            try:
                data = future.result()
                fields = data["result"]
                fields["timestamp"] = datetime.fromisoformat(fields["timestamp"]) if fields.get("timestamp") else None
                res = grading.Result(**fields)
            except Exception as exc:  # noqa: BLE001 - a worker lost is a submission recorded, not dropped
                res = grading.Result(student=student, success=False, error=f"the worker failed: {exc}")
                data = {"notebook": None}
            res.autograded = ""
            if keep is not None and data.get("notebook"):
                dest = keep / student / assignment
                if dest.exists():
                    shutil.rmtree(dest)
                dest.mkdir(parents=True)
                name, blob = data["notebook"]
                (dest / Path(name).name).write_bytes(blob)
                res.autograded = str(dest / Path(name).name)
            if progress is not None:
                progress(res)
            yield res
    finally:
        client.close()


__all__ = ["grade_on_cluster", "grade_task", "json"]

"""Grading kernels started ahead of time, one per submission, each in its own sandbox.

Starting a sandboxed kernel and importing what the notebooks need (numpy, matplotlib, torch) costs a
second or more. When a class is graded, :class:`KernelPool` in the parent process keeps a few kernels of
the assignment's policy starting while earlier submissions are graded; each grading process adopts one
(``SandboxedExecute.pooled_kernel``), uses it for one submission only and kills it; the pool reaps it
and starts the next. A kernel never serves two submissions.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from jupyter_client.connect import write_connection_file

from .. import sandbox as sandboxes
from .kernel import kernel_launch


@dataclass
class PooledKernel:
    info: dict
    process: subprocess.Popen

    @property
    def info_file(self) -> Path:
        return Path(self.info["workspace"]) / "kernel.json"


class KernelPool:
    """Up to ``size`` kernels for ``policy``, started ahead; :meth:`take` hands one out for good."""

    def __init__(self, sandbox, policy, limits, size: int = 2):
        self.sandbox, self.policy, self.limits, self.size = sandbox, policy, limits, max(0, size)
        self.ready: list[PooledKernel] = []
        self.handed: list[PooledKernel] = []

    def _start(self) -> PooledKernel:
        ws = Path(tempfile.mkdtemp(prefix="bnk-"))
        run, files = ws / "run", ws / "files"
        run.mkdir()
        files.mkdir()
        files.chmod(0o755)
        cf = str(run / "connection.json")
        write_connection_file(cf, transport="ipc", ip=str(run / "k"), key=os.urandom(32).hex().encode())
        launch = kernel_launch(self.sandbox, self.policy, self.limits, run, files, cf,
                               ["--HistoryManager.hist_file=:memory:"])
        with open(ws / "kernel.log", "wb") as log:
            proc = subprocess.Popen(launch.argv, env=launch.env or None, cwd=run, stdout=log, stderr=log,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        info = {"pid": proc.pid, "connection_file": cf, "workspace": str(ws), "files": str(files),
                "uid": launch.uid, "description": launch.description, "sandboxed": launch.sandboxed,
                "files_path": launch.files_path}
        kernel = PooledKernel(info, proc)
        kernel.info_file.write_text(json.dumps(info))
        return kernel

    def fill(self, wanted: int | None = None) -> None:
        """Start kernels until ``wanted`` (default: the pool's size) are ready or starting."""
        target = self.size if wanted is None else min(self.size, wanted)
        while len(self.ready) < target:
            self.ready.append(self._start())

    def take(self) -> PooledKernel | None:
        """A started kernel for one submission (None when the pool is empty or its kernel died)."""
        while self.ready:
            kernel = self.ready.pop(0)
            if kernel.process.poll() is None:
                self.handed.append(kernel)
                return kernel
            self._dispose(kernel)
        return None

    def release(self, kernel: PooledKernel | None) -> None:
        """After its submission: kill the kernel (all its processes die with its sandbox) and clean up."""
        if kernel is None:
            return
        if kernel in self.handed:
            self.handed.remove(kernel)
        self._dispose(kernel)

    def _dispose(self, kernel: PooledKernel) -> None:
        try:
            os.killpg(kernel.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            kernel.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        shutil.rmtree(kernel.info["workspace"], ignore_errors=True)

    def close(self) -> None:
        for kernel in self.ready + self.handed:
            self._dispose(kernel)
        self.ready, self.handed = [], []


def for_course(cfg, assignment: str, size: int) -> KernelPool | None:
    """A pool with the course's sandbox settings and the assignment's policy (None: no pooling)."""
    from .. import course
    from .preprocessor import limits_of
    if size <= 0:
        return None
    section = cfg.get("SandboxedExecute", {}) or {}
    box = sandboxes.get(section.get("sandbox", "auto"))
    return KernelPool(box, course.policy(assignment), limits_of(section), size)

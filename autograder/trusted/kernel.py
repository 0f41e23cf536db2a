"""The learner's kernel, started in the sandbox and spoken to through the kernel agent.

:class:`SandboxKernelManager` is a jupyter_client kernel manager whose kernel command is wrapped by the
sandbox (``autograder.sandbox``) and which talks to the kernel over Unix sockets in a private folder
(the sandbox has no network, not even the host's loopback). :class:`RemoteKernel` sends the agent one
request at a time and waits for its answer within a deadline; when the kernel does not answer it is
interrupted, then given up (:class:`KernelGone`).
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from queue import Empty

from jupyter_client.manager import AsyncKernelManager
from traitlets import Any as AnyTrait

from .. import sandbox as sandboxes
from ..checks.learner import KernelGone
from ..kernel_agent import protocol

GRACE = 5.0   # seconds an interrupted kernel has to answer before it is given up


def kernel_launch(sandbox, policy, limits, run_dir: Path, files: Path | None, connection_file: str,
                  extra_arguments=None) -> "sandboxes.Launch":
    """The sandboxed command of a grading kernel (and hand its folder to the kernel's uid)."""
    argv = [sys.executable, "-m", "kernel_agent.launch", "-f", connection_file] + list(extra_arguments or [])
    launch = sandbox.wrap(argv, run_dir, files, policy, limits)
    if launch.uid is not None:
        for p in (run_dir, Path(connection_file)):
            os.chown(p, launch.uid, launch.uid)
    return launch


class SandboxKernelManager(AsyncKernelManager):
    """A kernel manager whose kernels run ``kernel_agent.launch`` inside a sandbox."""

    sandbox = AnyTrait(None)
    policy = AnyTrait(None)
    limits = AnyTrait(None)
    files = AnyTrait(None)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.workspace = Path(tempfile.mkdtemp(prefix="bnk-"))   # short: Unix socket paths are limited
        self.run_dir = self.workspace / "run"
        self.run_dir.mkdir()
        self.transport = "ipc"
        self.ip = str(self.run_dir / "k")
        self.connection_file = str(self.run_dir / "connection.json")
        self.launch: sandboxes.Launch | None = None

    def format_kernel_cmd(self, extra_arguments=None):
        self.launch = kernel_launch(self.sandbox, self.policy, self.limits, self.run_dir, self.files,
                                    self.connection_file, extra_arguments)
        return self.launch.argv

    async def _async_launch_kernel(self, kernel_cmd, **kw):
        if self.launch is not None and self.launch.env:
            kw["env"] = self.launch.env
        kw["cwd"] = str(self.run_dir)
        # The kernel's own stdout/stderr (not the notebook's outputs) go to a log, not the grader's terminal.
        self.log_path = self.workspace / "kernel.log"
        with open(self.log_path, "wb") as log:
            kw["stdout"] = kw["stderr"] = log
            await super()._async_launch_kernel(kernel_cmd, **kw)

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode(errors="replace")
        except (AttributeError, OSError):
            return ""

    async def _async_interrupt_kernel(self):
        # A signal cannot reach into the sandbox's own session; ipykernel interrupts itself on request.
        if self.has_kernel:
            msg = self.session.msg("interrupt_request", content={})
            self._connect_control_socket()
            self.session.send(self._control_socket, msg)

    interrupt_kernel = _async_interrupt_kernel   # the base class binds the name to its own method

    def prepare_files(self, files: Path | None) -> None:
        """Put the submission's other files where the kernel will find them (a started kernel)."""
        self.files = files

    def lock(self) -> None:
        """Once the kernel has made its sockets, take the folder back: the kernel can no longer write in
        it (as root; an unprivileged grader shares its uid with the kernel and cannot)."""
        if self.launch is not None and self.launch.uid is not None:
            os.chown(self.run_dir, 0, 0)
            os.chmod(self.run_dir, 0o755)

    def remove_workspace(self) -> None:
        shutil.rmtree(self.workspace, ignore_errors=True)


class RemoteKernel:
    """Requests to the kernel agent of a running nbclient client, within a deadline."""

    def __init__(self, client, call_timeout: float = 30.0):
        self.client = client
        self.call_timeout = call_timeout
        self.deadline: float | None = None
        self.gone: str | None = None
        self.requests = 0
        self.interrupts = 0

    def remaining(self) -> float:
        if self.deadline is None:
            return self.call_timeout
        return max(0.0, min(self.call_timeout, self.deadline - time.monotonic()))

    def request(self, req: dict) -> dict:
        """Send one request; returns the agent's response dict. Raises KernelGone."""
        if self.gone:
            raise KernelGone(self.gone)
        timeout = self.remaining()
        if timeout <= 0:
            raise TimeoutError("the time for this test cell is used up")
        from jupyter_core.utils import run_sync
        try:
            return run_sync(self._request)(req, timeout)
        except KernelGone as exc:
            self.gone = str(exc)
            raise

    async def _request(self, req: dict, timeout: float) -> dict:
        kc = self.client.kc
        self.requests += 1
        # the request rides in the message's metadata; the code only tells the agent to read it
        content = {"code": "__import__('kernel_agent.agent').agent.serve_parent()", "silent": True,
                   "store_history": False, "user_expressions": {}, "allow_stdin": False, "stop_on_error": False}
        msg = kc.session.msg("execute_request", content,
                             metadata={"bncourse": json.dumps(req, separators=(",", ":"))})
        kc.shell_channel.send(msg)
        msg_id = msg["header"]["msg_id"]
        payload, interrupted = None, False
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                if interrupted:
                    raise KernelGone("the kernel stopped answering (it ignored an interrupt)")
                await self.client.km.interrupt_kernel()
                self.interrupts += 1
                interrupted, end = True, time.monotonic() + GRACE
                continue
            try:
                msg = await kc.get_iopub_msg(timeout=min(left, 0.5))
            except (Empty, asyncio.TimeoutError):
                if not await self.client.km.is_alive():
                    raise KernelGone("the kernel died") from None
                continue
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg.get("msg_type"), msg.get("content", {})
            if kind == "display_data" and protocol.MIME in content.get("data", {}):
                payload = content["data"][protocol.MIME]
            elif kind == "status" and content.get("execution_state") == "idle":
                break
        if payload is None:
            if interrupted:
                return {"error": {"type": "Interrupted", "message": "stopped after its time limit", "where": "",
                                  "stage": None}}
            return {"error": {"type": "NoAnswer", "message": "the kernel did not answer the grader (was the "
                              "kernel agent or IPython's display machinery replaced?)", "where": "", "stage": None}}
        if type(payload) is not str or len(payload) > protocol.MAX_TEXT:
            raise protocol.ProtocolError("answer too large")
        try:
            resp = json.loads(payload)
        except ValueError as exc:
            raise protocol.ProtocolError(f"answer is not JSON: {exc}") from None
        if type(resp) is not dict or not ({"result", "error"} & set(resp)):
            raise protocol.ProtocolError("answer has no result")
        return resp

    async def _drain_reply(self, msg_id: str) -> None:
        kc = self.client.kc
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            try:
                msg = await kc.get_shell_msg(timeout=max(0.01, end - time.monotonic()))
            except (Empty, asyncio.TimeoutError):
                return
            if msg.get("parent_header", {}).get("msg_id") == msg_id:
                return


class AdoptedKernelManager(SandboxKernelManager):
    """A grading kernel started ahead of time by the parent's :class:`~.pool.KernelPool`, used once.

    It is adopted rather than started (``has_kernel`` is true from the start), is alive while its process
    is, and is killed, not shut down politely, when grading ends; the pool reaps it.
    """

    def adopt(self, info: dict) -> None:
        shutil.rmtree(self.workspace, ignore_errors=True)
        self.workspace = Path(info["workspace"])
        self.run_dir = self.workspace / "run"
        self.files_dir = Path(info["files"])
        self.load_connection_file(info["connection_file"])
        self._pid = int(info["pid"])
        self._adopted = True
        self.log_path = self.workspace / "kernel.log"
        self.launch = sandboxes.Launch(argv=[], env={}, uid=info.get("uid"), description=info["description"],
                                       sandboxed=bool(info["sandboxed"]), files_path=info.get("files_path"))

    @property
    def has_kernel(self) -> bool:
        return bool(getattr(self, "_adopted", False)) and self._alive()

    def _alive(self) -> bool:
        try:
            stat = Path(f"/proc/{self._pid}/stat").read_text()
        except OSError:
            return False
        return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")

    async def _async_is_alive(self) -> bool:
        return self._alive()

    is_alive = _async_is_alive

    async def _async_shutdown_kernel(self, now: bool = False, restart: bool = False) -> None:
        import signal
        if getattr(self, "_adopted", False):
            try:
                os.kill(self._pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._adopted = False
        self._close_control_socket()

    shutdown_kernel = _async_shutdown_kernel

    def prepare_files(self, files: Path | None) -> None:
        """Copy the submission's other files into the folder the adopted kernel has mounted."""
        if files is None:
            return
        for src in sorted(files.rglob("*")):
            dest = self.files_dir / src.relative_to(files)
            if src.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
            elif src.is_file():
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(src, dest)

    def remove_workspace(self) -> None:
        pass   # the pool that started the kernel removes its folder

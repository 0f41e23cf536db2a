"""The grading kernel's sandbox, probed from inside: what learner code can see, reach and do.

Each test starts a real grading kernel with a module's policy and runs probes in it. They need
bubblewrap (``make`` installs it on Debian/Ubuntu); on a Linux machine without it these tests fail
rather than skip, since a class would then be graded unsandboxed.
"""
import asyncio
import os
import sys
import time
from pathlib import Path

import pytest

from autograder import course, sandbox
from autograder.config import REPO
from autograder.trusted.kernel import SandboxKernelManager

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="bubblewrap sandboxes are Linux-only; elsewhere grading is unsandboxed")


class Kernel:
    """A grading kernel with an assignment's policy; ``run(code)`` returns (stdout, error name, message)."""

    def __init__(self, assignment, limits=None):
        box = sandbox.get("auto")
        assert box.name == "bwrap", "bubblewrap is not usable here: install it (apt-get install bubblewrap)"
        self.km = SandboxKernelManager(kernel_name="python3")
        self.km.sandbox, self.km.policy = box, course.policy(assignment)
        self.km.limits, self.km.files = limits or sandbox.Limits(), None
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self.km.start_kernel())
        self.kc = self.km.client()
        self.kc.start_channels()
        self.loop.run_until_complete(self.kc.wait_for_ready(timeout=60))
        self.km.lock()

    def run(self, code, timeout=60):
        return self.loop.run_until_complete(self._run(code, timeout))

    async def _run(self, code, timeout):
        mid = self.kc.execute(code)
        out, err = [], (None, None)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            msg = await self.kc.get_iopub_msg(timeout=end - time.monotonic())
            if msg["parent_header"].get("msg_id") != mid:
                continue
            t, c = msg["msg_type"], msg["content"]
            if t == "stream":
                out.append(c["text"])
            elif t == "error":
                err = (c["ename"], c["evalue"])
            elif t == "status" and c["execution_state"] == "idle":
                break
        return "".join(out), err[0], err[1]

    def close(self):
        self.loop.run_until_complete(self.km.shutdown_kernel(now=True))
        self.km.remove_workspace()
        self.loop.close()


@pytest.fixture(scope="module")
def numpy_kernel():
    k = Kernel("01_batchnorm_numpy")
    yield k
    k.close()


@pytest.fixture(scope="module")
def torch_kernel():
    k = Kernel("02_batchnorm_pytorch")
    yield k
    k.close()


def test_kernel_runs_as_an_unprivileged_stranger(numpy_kernel):
    out, err, _ = numpy_kernel.run("import os; print(os.getuid(), os.getgid(), os.getgroups())\n"
                                   "print(open('/proc/self/status').read().split('CapEff:')[1].split()[0])")
    uid, gid, groups, caps = out.split()[0], out.split()[1], out.split("]")[0].split("[")[1], out.split()[-1]
    assert err is None and int(uid) not in (0, os.getuid()) and groups == "" and int(caps, 16) == 0


def test_no_course_files_no_repository_no_home(numpy_kernel):
    probes = [str(REPO / "solutions"), str(REPO / "autograder"), str(REPO / "bnlib"), str(REPO / "gradebook.db"),
              str(Path.home() / ".cache"), str(Path.home() / ".ipython"), "/etc/passwd", "/etc/shadow"]
    out, err, _ = numpy_kernel.run("import os\nfor p in %r:\n    print(p, os.path.exists(p))" % (probes,))
    assert err is None
    assert all(line.endswith("False") for line in out.strip().splitlines()), out


def test_course_packages_and_torch_do_not_import_in_a_numpy_module(numpy_kernel):
    for name in ("bnlib", "autograder", "nbgrader", "torch", "functorch"):
        _, err, msg = numpy_kernel.run(f"import {name}")
        assert err in ("ImportError", "ModuleNotFoundError"), (name, err)
    out, err, _ = numpy_kernel.run("import numpy, matplotlib.pyplot; print('ok')")
    assert err is None and out.strip() == "ok"


def test_no_network_and_no_view_of_host_processes(numpy_kernel):
    _, err, _ = numpy_kernel.run("import socket; socket.create_connection(('127.0.0.1', 22), timeout=2)")
    assert err in ("ConnectionRefusedError", "OSError", "TimeoutError", "PermissionError")
    out, err, _ = numpy_kernel.run("import os; print(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))")
    assert err is None and max(eval(out)) < 20          # only the sandbox's own few processes


def test_only_private_tmp_is_writable_and_it_is_bounded(numpy_kernel):
    out, err, _ = numpy_kernel.run(
        "import os\nok = []\nfor d in ['/', '/usr', os.path.dirname(os.__file__), '/opt/bncourse', '/tmp']:\n"
        "    try:\n        open(os.path.join(d, 'x'), 'w').close(); ok.append(d)\n"
        "    except OSError:\n        pass\nprint(ok)")
    assert err is None and eval(out) == ["/tmp"]
    _, err, msg = numpy_kernel.run("open('/tmp/big', 'wb').write(b'0' * (1 << 30))")
    assert err is not None, "a 1 GiB file must not fit (file size and /tmp size limits)"
    numpy_kernel.run("import os; os.remove('/tmp/big') if os.path.exists('/tmp/big') else None")


def test_introspection_and_processes_are_closed(numpy_kernel):
    for code in ("import gc; gc.get_objects()", "import ctypes; ctypes.CDLL('libc.so.6')",
                 "import subprocess; subprocess.run(['true'])", "import os; os.fork()", "import os; os.system('true')"):
        _, err, msg = numpy_kernel.run(code)
        assert err == "PermissionError", (code, err, msg)


def test_memory_is_limited():
    k = Kernel("01_batchnorm_numpy", sandbox.Limits(memory=1 << 30))
    try:
        _, err, _ = k.run("import numpy as np; a = np.ones(1 << 28)")   # 2 GiB
        assert err == "MemoryError"
    finally:
        k.close()


def test_torch_normalization_is_gone_however_reached(torch_kernel):
    attempts = [
        "F.batch_norm(x, None, None, training=True)",
        "torch.nn.BatchNorm2d(3)(x)",
        "torch.batch_norm(x, None, None, None, None, True, 0.1, 1e-5, False)",
        "torch.ops.aten.native_batch_norm(x, None, None, None, None, True, 0.1, 1e-5)",
        "functools.partial(getattr(F, 'batch' + '_norm'), training=True)(x, None, None)",
        "pickle.loads(pickle.dumps(F.batch_norm))(x, None, None, training=True)",
        "F.layer_norm(x, (5,))", "F.group_norm(x, 3)", "F.instance_norm(x)",
        "torch._decomp.decomposition_table[torch.ops.aten.native_batch_norm.default](x, None, None, None, None, True, 0.1, 1e-5)",
        "torch._decomp.decompositions.native_batch_norm(x, None, None, None, None, True, 0.1, 1e-5)",
        "type('B', (torch.nn.BatchNorm2d,), {})(3)",
        "exec(open(torch._decomp.decompositions.__file__).read(), {})",
        "torch.nn.utils.fusion.fuse_conv_bn_eval(torch.nn.Conv2d(3, 3, 1).eval(), torch.nn.BatchNorm2d(3).eval())",
    ]
    setup = "import functools, pickle, torch, torch.nn.functional as F\nx = torch.randn(4, 3, 5, 5)\n"
    for code in attempts:
        out, err, msg = torch_kernel.run(setup + code)
        assert err is not None, f"{code} worked in the grading kernel"
    out, err, _ = torch_kernel.run(setup + "m = x.mean((0, 2, 3), keepdim=True); v = x.var((0, 2, 3), keepdim=True)\n"
                                           "y = (x - m) / (v + 1e-5).sqrt(); print(float(y.std()) > 0.9)\n"
                                           "c = torch.nn.Conv2d(3, 3, 3); opt = torch.optim.SGD(c.parameters(), 0.1)\n"
                                           "c(x).sum().backward(); opt.step(); print('ok')")
    assert err is None and out.split() == ["True", "ok"]


SPAWN = """
import _posixsubprocess, os, sys
args = [sys.executable.encode(), b"-c", b"import time; time.sleep(300)", MARK.encode()]
r, w = os.pipe()
pid = _posixsubprocess.fork_exec(args, [args[0]], True, (), None, None, -1, -1, -1, -1, -1, -1, r, w,
                                 True, True, -1, None, None, None, -1, None, False)
print(pid)
"""


def test_everything_the_kernel_started_dies_with_it():
    """A daemon started by the lowest-level route (no audit event: it is allowed) still ends with the
    sandbox: the kernel's PID namespace dies with it."""
    k = Kernel("01_batchnorm_numpy")
    marker = f"bncourse-daemon-{os.getpid()}-{time.time_ns()}"
    try:
        out, err, msg = k.run(f"MARK = {marker!r}\n" + SPAWN)
        assert err is None, msg
        time.sleep(0.5)
        assert _daemons(marker), "the probe did not start its daemon"
    finally:
        k.close()
    time.sleep(1.0)
    assert not _daemons(marker), "a process started in the sandbox outlived it"


def _daemons(marker):
    return [p for p in Path("/proc").iterdir() if p.name.isdigit() and marker.encode() in _read(p / "cmdline")]


def _read(path):
    try:
        return path.read_bytes()
    except OSError:
        return b""


def test_policy_hides_ready_made_answers():
    from autograder.sandbox import Policy
    k = Kernel.__new__(Kernel)
    box = sandbox.get("auto")
    k.km = SandboxKernelManager(kernel_name="python3")
    k.km.sandbox, k.km.files, k.km.limits = box, None, sandbox.Limits()
    k.km.policy = Policy(preload=("torch",), hide=("torch.nn.utils.fusion:fuse_conv_bn_weights",))
    k.loop = asyncio.new_event_loop()
    k.loop.run_until_complete(k.km.start_kernel())
    k.kc = k.km.client()
    k.kc.start_channels()
    k.loop.run_until_complete(k.kc.wait_for_ready(timeout=60))
    try:
        _, err, msg = k.run("import torch\nfrom torch.nn.utils.fusion import fuse_conv_bn_weights\n"
                            "fuse_conv_bn_weights(*[torch.ones(1)] * 7)")
        assert err == "RuntimeError" and "not available" in msg
        _, err, _ = k.run("import torch.nn.utils.fusion as f\nexec(open(f.__file__).read(), {})")
        assert err == "PermissionError"
        out, err, _ = k.run("import torch\nprint(torch.nn.BatchNorm2d(3)(torch.randn(2, 3, 4, 4)).shape)")
        assert err is None and "torch.Size([2, 3, 4, 4])" in out          # the layers themselves work
    finally:
        k.close()

"""Where learner code runs while it is graded: one interface, two implementations.

:func:`wrap` turns the kernel's command into one that runs inside a sandbox and returns what the grader
needs to know about it. :class:`Bubblewrap` (Linux, `bwrap`) gives each kernel an unprivileged identity,
its own process, network, IPC and mount namespaces, a read-only view of the Python installation and of the
kernel agent, a private ``/tmp`` and ``HOME`` of bounded size, and nothing of the course: no repository,
no ``solutions/``, no gradebook, no other submission. When the kernel is killed, every process it started
dies with it (the sandbox's PID namespace ends). :class:`Unsandboxed` is the fallback where bwrap cannot
run (e.g. a learner's macOS laptop running ``bncourse grade``): scoring is still done outside the kernel,
but the kernel runs as the current user and says so.

The per-assignment :class:`Policy` (which packages the kernel may import, whether torch's normalization
layers work) comes from ``autograder.course``; the :class:`Limits` from the course configuration.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

AGENT_DIR = Path(__file__).resolve().parents[1] / "kernel_agent"


@dataclass(frozen=True)
class Policy:
    """What a grading kernel may use. ``deny``: top-level packages that must not import;
    ``torch_normalization``: whether torch's normalization layers work; ``preload``: modules imported
    before learner code (so that the policy applies to them); ``lazy``: modules imported on first use;
    ``hide``: ready-made answers to an assignment (``"torch.nn.utils.fusion:fuse_conv_bn_weights"``),
    imported and replaced by functions that refuse, their source unreadable."""

    deny: tuple[str, ...] = ("bnlib", "autograder", "nbgrader")
    torch_normalization: bool = True
    preload: tuple[str, ...] = ()
    lazy: tuple[str, ...] = ()
    hide: tuple[str, ...] = ()      # "module:attribute" functions replaced by ones that refuse


@dataclass(frozen=True)
class Limits:
    """Resource limits for a grading kernel (hard limits inside the sandbox)."""

    memory: int = 4 << 30          # bytes of address space per process
    processes: int = 256           # processes of the sandbox's identity
    file_size: int = 256 << 20     # bytes per written file
    cpu_seconds: int = 1800        # CPU time per process
    tmp_size: int = 512 << 20      # bytes of the private /tmp (bwrap only)


@dataclass
class Launch:
    """A wrapped kernel command and what the grader must do around it."""

    argv: list[str]
    env: dict[str, str]
    uid: int | None = None          # the identity the kernel runs as, when it differs from ours
    description: str = ""
    sandboxed: bool = True
    files_path: str | None = None   # the submission's other files, as the kernel sees them


def _site_packages() -> list[str]:
    import site
    return [p for p in site.getsitepackages() if os.path.isdir(p)]


def _kernel_settings(policy: Policy, limits: Limits, workdir: str, files: str | None,
                     mplcache: str | None) -> str:
    return json.dumps({"limits": {"memory": limits.memory, "processes": limits.processes,
                                  "file_size": limits.file_size, "cpu_seconds": limits.cpu_seconds},
                       "deny": list(policy.deny), "torch_normalization": policy.torch_normalization,
                       "preload": list(policy.preload), "lazy": list(policy.lazy), "hide": list(policy.hide),
                       "files": files, "workdir": workdir,
                       "mplcache": mplcache})


@lru_cache(maxsize=1)
def mpl_cache_dir() -> str | None:
    """The folder of this machine's matplotlib font cache (built once here, reused by every kernel)."""
    try:
        import matplotlib
        import matplotlib.font_manager  # noqa: F401 - builds the cache when it is missing
        return matplotlib.get_cachedir()
    except Exception:  # noqa: BLE001 - kernels then build their own
        return None


def _base_env() -> dict[str, str]:
    threads = "1"
    return {"LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1",
            "PYDEVD_DISABLE_FILE_VALIDATION": "1", "NBGRADER_EXECUTION": "autograde",
            "OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
            "NUMEXPR_NUM_THREADS": threads, "JUPYTER_PLATFORM_DIRS": "1"}


class Sandbox:
    name = "abstract"

    def available(self) -> bool:
        raise NotImplementedError

    def wrap(self, argv: list[str], rundir: Path, files: Path | None, policy: Policy, limits: Limits) -> Launch:
        raise NotImplementedError


class Unsandboxed(Sandbox):
    """The kernel runs as the current user with the agent on its path: scoring stays outside the kernel,
    but nothing else is isolated."""

    name = "none"

    def available(self) -> bool:
        return True

    def wrap(self, argv, rundir, files, policy, limits):
        home = rundir / "home"
        home.mkdir(exist_ok=True)
        env = dict(os.environ, **_base_env(), HOME=str(home), IPYTHONDIR=str(home / ".ipython"),
                   MPLCONFIGDIR=str(home / ".config" / "matplotlib"),
                   PYTHONPATH=str(rundir / "agent"),
                   BNCOURSE_KERNEL=_kernel_settings(policy, limits, str(rundir / "work"),
                                                    str(files) if files else None, mpl_cache_dir()))
        (rundir / "agent").mkdir(exist_ok=True)
        target = rundir / "agent" / "kernel_agent"
        if not target.exists():
            target.symlink_to(AGENT_DIR, target_is_directory=True)
        return Launch(argv=argv, env=env, sandboxed=False, files_path=str(files) if files else None,
                      description="UNSANDBOXED: no bubblewrap here, learner code runs as you (scores are "
                                  "still computed outside its kernel)")


class Bubblewrap(Sandbox):
    """Linux namespaces through bubblewrap (``bwrap``), as root (privileged setup, then a throwaway uid)
    or as an ordinary user (a user namespace; the kernel keeps your uid but sees only what is bound)."""

    name = "bwrap"
    MOUNT = "/opt/bncourse"

    def __init__(self, executable: str | None = None):
        self.executable = executable or shutil.which("bwrap")

    def available(self) -> bool:
        return bool(self.executable) and _bwrap_works(self.executable)

    def _dirs(self, path: str) -> list[str]:
        """--dir for every parent of ``path`` so that an unprivileged uid can walk to it."""
        out, parts = [], Path(path).parts
        for i in range(2, len(parts)):
            out += ["--perms", "0755", "--dir", str(Path(*parts[:i]))]
        return out

    def wrap(self, argv, rundir, files, policy, limits):
        import random
        root = os.geteuid() == 0
        uid = random.randrange(1_100_000, 1_900_000) if root else os.getuid()
        args = [self.executable, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
                "--unshare-cgroup-try", "--die-with-parent", "--new-session", "--clearenv"]
        if root:
            # Mounts are set up with root's rights (the Python install may sit under /root); the kernel
            # then runs as a uid nobody else uses, with no capabilities and no way to regain any.
            args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP"]
        else:
            args += ["--unshare-user", "--disable-userns", "--cap-drop", "ALL"]
        args += ["--ro-bind", "/usr", "/usr"]
        for name in ("bin", "sbin", "lib", "lib64", "lib32"):
            p = Path("/") / name
            if p.is_symlink():
                args += ["--symlink", os.readlink(p), str(p)]
            elif p.is_dir():
                args += ["--ro-bind", str(p), str(p)]
        for f in ("/etc/ld.so.cache", "/etc/localtime", "/etc/nsswitch.conf"):
            if os.path.exists(f):
                args += ["--ro-bind", f, f]
        # the private /tmp first: the Python installation (a venv in a clone under /tmp, say) is mounted on
        # top of it, not hidden by it
        args += ["--proc", "/proc", "--dev", "/dev",
                 "--perms", "1777", "--size", str(limits.tmp_size), "--tmpfs", "/tmp"]
        prefixes = sorted({os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix),
                           os.path.abspath(sys.prefix)})
        for p in prefixes:
            args += self._dirs(p) + ["--ro-bind", p, p]
        stub = AGENT_DIR / "denied"   # a package whose import fails with a clear message
        for site_dir in _site_packages():
            for name in policy.deny:
                pkg = Path(site_dir) / name
                if pkg.is_dir():
                    args += ["--ro-bind", str(stub), str(pkg)]
        args += self._dirs(f"{self.MOUNT}/kernel_agent") + ["--ro-bind", str(AGENT_DIR), f"{self.MOUNT}/kernel_agent"]
        cache = mpl_cache_dir()
        if cache:
            args += ["--ro-bind", cache, f"{self.MOUNT}/mplcache"]
        args += self._dirs(str(rundir)) + ["--bind", str(rundir), str(rundir)]
        if files:
            args += ["--ro-bind", str(files), f"{self.MOUNT}/files"]
        env = dict(_base_env(), HOME="/tmp/home", TMPDIR="/tmp", IPYTHONDIR="/tmp/home/.ipython",
                   MPLCONFIGDIR="/tmp/home/.config/matplotlib", PYTHONPATH=self.MOUNT,
                   PATH=f"{sys.prefix}/bin:/usr/bin:/bin",
                   BNCOURSE_KERNEL=_kernel_settings(policy, limits, "/tmp/work",
                                                    f"{self.MOUNT}/files" if files else None,
                                                    f"{self.MOUNT}/mplcache" if cache else None))
        for k, v in env.items():
            args += ["--setenv", k, v]
        args += ["--chdir", "/tmp", "--"]
        if root:
            args += ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all",
                     "--bounding-set=-all", "--no-new-privs", "--"]
        return Launch(argv=args + argv, env={}, uid=uid if root else None,
                      files_path=f"{self.MOUNT}/files" if files else None,
                      description=f"sandboxed (bubblewrap, uid {uid}, no network)")


@lru_cache(maxsize=4)
def _bwrap_works(executable: str) -> bool:
    args = [executable, "--ro-bind", "/", "/", "--unshare-pid", "--unshare-net", "--die-with-parent"]
    if os.geteuid() != 0:
        args += ["--unshare-user"]
    try:
        return subprocess.run(args + ["true"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def get(kind: str = "auto") -> Sandbox:
    """The sandbox to grade with: ``bwrap``, ``none`` or ``auto`` (bwrap when it works here).

    Raises RuntimeError when ``bwrap`` is asked for and cannot run.
    """
    if kind == "none":
        return Unsandboxed()
    box = Bubblewrap()
    if box.available():
        return box
    if kind == "bwrap":
        raise RuntimeError("bubblewrap (bwrap) is not installed or cannot create namespaces here; "
                           "install it (Debian/Ubuntu: apt-get install bubblewrap) or grade with --sandbox none")
    return Unsandboxed()


__all__ = ["Bubblewrap", "Launch", "Limits", "Policy", "Sandbox", "Unsandboxed", "get", "asdict"]

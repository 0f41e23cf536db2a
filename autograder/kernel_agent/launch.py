"""Start a grading kernel: ``python -m kernel_agent.launch -f CONNECTION_FILE [ipykernel options]``.

Runs as the first code of the kernel process, before any learner code, and reads its settings from the
``BNCOURSE_KERNEL`` environment variable (JSON written by the grader's sandbox):

* ``limits``: resource limits (bytes of address space, processes, bytes per file, CPU seconds), set as
  hard limits the learner's code cannot raise;
* ``deny``: top-level packages that must not import (e.g. ``torch`` in a NumPy assignment, ``bnlib``);
* ``torch_normalization``: false to disable torch's normalization layers (:mod:`.torch_policy`);
* ``hide``: ``module:attribute`` functions that would answer the assignment (e.g. torch's BN folding),
  replaced by functions that refuse, their source file unreadable;
* ``preload``: modules imported before the learner's code (so the policy applies to them); ``lazy``:
  modules whose import is deferred to their first use;
* ``files`` / ``workdir``: a read-only folder of the submission's other files, copied to a private
  working folder which becomes the current directory; ``mplcache``: a matplotlib font cache to reuse.

Then it closes the interpreter to introspection that the grading relies on being absent (an audit hook,
which cannot be removed once added) and hands over to ipykernel.
"""
from __future__ import annotations

import importlib.abc
import json
import os
import shutil
import sys

DENY_MESSAGE = ("{name} is not available while this notebook is graded (the grader runs your code "
                "without it): write this part yourself")


class _Deny(importlib.abc.MetaPathFinder):
    """Refuse imports of denied top-level packages with a clear message (also where no sandbox can hide
    their files)."""

    def __init__(self, names):
        self.names = frozenset(names)

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.names:
            raise ImportError(DENY_MESSAGE.format(name=fullname.split(".")[0]), name=fullname)
        return None


def _limits(limits: dict) -> None:
    import resource
    table = {"memory": resource.RLIMIT_AS, "processes": resource.RLIMIT_NPROC,
             "file_size": resource.RLIMIT_FSIZE, "cpu_seconds": resource.RLIMIT_CPU}
    for key, which in table.items():
        value = limits.get(key)
        if value:
            soft, hard = resource.getrlimit(which)
            value = int(value) if hard == resource.RLIM_INFINITY else min(int(value), hard)
            resource.setrlimit(which, (value, value))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _hide(target: str) -> list[str]:
    """Replace ``module:attribute`` by a function that refuses; returns the module's file (to protect)."""
    import importlib
    modname, _, attr = target.partition(":")
    try:
        module = importlib.import_module(modname)
    except ImportError:
        return []
    message = f"{modname}.{attr} is not available while this notebook is graded: write it yourself"

    def refuse(*args, **kwargs):
        raise RuntimeError(message)
    original = getattr(module, attr, None)
    if original is None:
        return []
    for mod in list(sys.modules.values()):   # also where it was imported by name into another module
        try:
            if getattr(mod, attr, None) is original:
                setattr(mod, attr, refuse)
        except Exception:  # noqa: BLE001 - odd modules refuse attributes
            pass
    setattr(module, attr, refuse)
    path = getattr(module, "__file__", None)
    return [os.path.realpath(path)] if path else []


def _lazy(name: str) -> None:
    """Make ``import name`` cheap: the module is loaded on first use of one of its attributes (the setup
    cells import matplotlib.pyplot, which grading never draws with)."""
    import importlib.util
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        return
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


def _audit_hook(protected: list[str]):
    blocked = {"gc.get_objects", "gc.get_referrers", "gc.get_referents", "subprocess.Popen", "os.system",
               "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "pty.spawn"}
    prefixes = tuple(p.rstrip(os.sep) + os.sep for p in protected)
    exact = frozenset(p.rstrip(os.sep) for p in protected)
    realpath, fspath = os.path.realpath, os.fspath

    def hook(event, args):
        if event in blocked or event.startswith("ctypes."):
            raise PermissionError(f"{event} is not allowed while this notebook is graded")
        if event == "open" and prefixes and args and type(args[0]) is not int:
            try:
                path = realpath(fspath(args[0]))
            except Exception:  # noqa: BLE001 - an unusable path will fail in open() itself
                return
            if isinstance(path, bytes):
                path = path.decode(errors="replace")
            if path in exact or path.startswith(prefixes):
                raise PermissionError(f"reading {path} is not allowed while this notebook is graded")
    return hook


def prepare(settings: dict) -> list[str]:
    """Everything that must happen before the first line of learner code (see the module docstring)."""
    _limits(settings.get("limits", {}))
    deny = list(settings.get("deny", []))
    if deny:
        sys.meta_path.insert(0, _Deny(deny))
    home = os.environ.get("HOME")
    if home:
        os.makedirs(os.path.join(home, ".config", "matplotlib"), exist_ok=True)
    cache = settings.get("mplcache")
    if cache and home and os.path.isdir(cache):
        for name in os.listdir(cache):
            if name.startswith("fontlist") and name.endswith(".json"):
                shutil.copy(os.path.join(cache, name), os.path.join(home, ".config", "matplotlib", name))
    files, workdir = settings.get("files"), settings.get("workdir")
    if workdir:
        if files and os.path.isdir(files):
            shutil.copytree(files, workdir, symlinks=False, dirs_exist_ok=True)
        os.makedirs(workdir, exist_ok=True)
        os.chdir(workdir)
    for name in settings.get("preload", []):
        __import__(name)
    for name in settings.get("lazy", []):
        _lazy(name)
    protected: list[str] = []
    for target in settings.get("hide", []):
        protected += _hide(target)
    if settings.get("torch_normalization") is False and "torch" not in deny:
        from . import torch_policy
        torch_policy.disable()
        protected = torch_policy.protected_paths()
    return protected


def main() -> None:
    # The start folder is writable by learner code: keep it off the import path of the kernel's own code.
    if sys.path and sys.path[0] in ("", os.getcwd()):
        sys.path.pop(0)
    settings = json.loads(os.environ.pop("BNCOURSE_KERNEL", "{}") or "{}")
    protected = prepare(settings)
    from ipykernel.kernelapp import IPKernelApp
    app = IPKernelApp.instance()
    app.initialize(sys.argv[1:])
    # Last, once the kernel's own machinery is loaded: the hook cannot be removed, and from here on only
    # learner code and the agent run.
    if settings.get("audit", True):
        sys.addaudithook(_audit_hook(protected))
    app.start()


if __name__ == "__main__":
    main()

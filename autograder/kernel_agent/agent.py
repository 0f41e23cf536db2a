"""The grader's hands inside the learner's kernel.

The grader executes ``kernel_agent.agent.serve(request)`` in the kernel. A request is JSON:

* ``{"op": "call", "target": T, "args": [...], "kwargs": {...}}``: call the learner's object ``T`` with
  decoded arguments; the response holds the result and, for every array argument, its value after the call
  (so in-place updates such as ``running_mean *= ...`` are seen by the grader).
* ``{"op": "proc", "name": "m02.function_step", "objects": [T, ...], "kwargs": {...}}``: run a procedure
  from :mod:`kernel_agent.procedures` with learner objects and plain inputs; it returns plain observations.
* ``{"op": "describe", "target": T}``: what ``T`` is (function, class, ...), for messages and structure.
* ``{"op": "release"}``: forget the objects kept for handles.

``T`` is ``{"global": name}`` (a name in the notebook's namespace), ``{"ref": id}`` (a handle returned
earlier) or ``{"attr": [T, name]}``. The response, ``{"result": ...}`` or ``{"error": {...}}``, is
published as display data of type :data:`protocol.MIME`; the learner's prints and warnings during the call
are swallowed so that they cannot interleave with it.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import itertools
import json
import os
import traceback
import warnings

import numpy as np

from . import protocol

_objects: dict[int, object] = {}
_ids = itertools.count(1)
_OURS = os.path.dirname(os.path.abspath(__file__))


def _store(obj) -> int:
    i = next(_ids)
    _objects[i] = obj
    return i


def _resolve(i, cls=None):
    try:
        return _objects[i]
    except KeyError:
        raise LookupError(f"handle {i} is unknown (was the kernel restarted?)") from None


def _namespace() -> dict:
    from IPython import get_ipython
    shell = get_ipython()
    return shell.user_ns if shell is not None else {}


def _target(t):
    if type(t) is not dict:
        raise ValueError("bad target")
    if "global" in t:
        ns = _namespace()
        if t["global"] not in ns:
            raise NameError(f"name '{t['global']}' is not defined")
        return ns[t["global"]]
    if "ref" in t:
        return _resolve(t["ref"])
    if "attr" in t:
        obj, name = t["attr"]
        return getattr(_target(obj), name)
    raise ValueError("bad target")


def _where(tb) -> str:
    """The last traceback frame in the learner's code (not this package, not a library)."""
    frames = [f for f in traceback.extract_tb(tb)
              if not f.filename.startswith(_OURS) and "site-packages" not in f.filename
              and "/lib/python3" not in f.filename]
    if not frames:
        return ""
    f = frames[-1]
    return f"line {f.lineno}: {f.line}" if f.line else f"line {f.lineno}"


def _error(exc: BaseException) -> dict:
    name = type(exc).__name__
    try:
        message = str(exc)
    except Exception:  # noqa: BLE001 - a learner's exception may fail to print
        message = "<unprintable>"
    if isinstance(exc, KeyboardInterrupt):
        name, message = "Interrupted", "stopped after its time limit"
    stage = getattr(exc, "bncourse_stage", None)
    return {"type": name[:200], "message": message[:2000], "where": _where(exc.__traceback__)[:500],
            "stage": stage if type(stage) is str else None}


@contextlib.contextmanager
def _quiet():
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), warnings.catch_warnings(), \
            np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        yield


def _handle(req: dict) -> dict:
    op = req.get("op")
    if op == "release":
        _objects.clear()
        return {"result": None}
    if op == "files":   # the submission's other files, for a kernel started before they were known
        import shutil
        shutil.copytree(req["path"], os.getcwd(), symlinks=False, dirs_exist_ok=True)
        return {"result": None}
    if op == "describe":
        try:
            obj = _target(req["target"])
        except NameError as exc:
            return {"result": {"kind": "missing", "message": str(exc)}}
        kind = "class" if isinstance(obj, type) else "function" if callable(obj) else "value"
        mro = [f"{c.__module__}.{c.__qualname__}" for c in obj.__mro__] if isinstance(obj, type) else []
        return {"result": {"kind": kind, "type": protocol.type_name(obj), "mro": mro,
                           "name": str(getattr(obj, "__name__", ""))[:200]}}
    kwargs = protocol.decode({"$": "dict", "v": req.get("kwargs", [])}, _resolve)
    if op == "call":
        fn = _target(req["target"])
        args = protocol.decode({"$": "list", "v": req.get("args", [])}, _resolve)
        with _quiet():
            result = fn(*args, **kwargs)
        after = [a if isinstance(a, np.ndarray) else None for a in args]
        after_kw = {k: v for k, v in kwargs.items() if isinstance(v, np.ndarray)}
        return {"result": protocol.encode(result, _store), "args": protocol.encode(after),
                "kwargs": protocol.encode(after_kw)}
    if op == "proc":
        module, _, name = req["name"].rpartition(".")
        proc = getattr(importlib.import_module(f"{__package__}.procedures.{module}"), name)
        objects = [_target(t) for t in req.get("objects", [])]
        with _quiet():
            result = proc(*objects, **kwargs)
        return {"result": protocol.encode(result, _store)}
    raise ValueError(f"unknown op {op!r}")


def serve_parent() -> None:
    """Handle the request carried in the metadata of the execute_request being run (``bncourse``): the
    payload never goes through IPython's cell parsing, which is slow for long strings."""
    try:
        from IPython import get_ipython
        request = get_ipython().kernel.get_parent("shell")["metadata"]["bncourse"]
    except Exception as exc:  # noqa: BLE001
        request = json.dumps({"op": "none", "why": str(exc)})
    serve(request)


def serve(request: str) -> None:
    """Handle one request from the grader and publish the response (never raises)."""
    try:
        response = _handle(json.loads(request))
        text = json.dumps(response, separators=(",", ":"))
        if len(text) > protocol.MAX_TEXT:
            text = json.dumps({"error": {"type": "ResultTooLarge", "message": "the result is too large to grade",
                                         "where": "", "stage": None}})
    except BaseException as exc:  # noqa: BLE001 - everything the learner's code raises is a result
        text = json.dumps({"error": _error(exc)})
    from IPython.display import publish_display_data
    publish_display_data({protocol.MIME: text})

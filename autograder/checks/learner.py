"""How checks reach the learner's code, wherever it runs.

A check receives the learner's function or class either as the object itself (a visible test run in the
learner's own notebook, or the bank's in-process tests) or as a :class:`Proxy` for an object that lives in
the sandboxed grading kernel (``autograder.trusted.remote.Remote``). :func:`call_learner`,
:func:`run_procedure` and :func:`describe` treat both alike, so one check serves both: in the kernel the
learner's object is called with the inputs the check made and only plain data comes back.
"""
from __future__ import annotations

import contextlib
import copy
import io
import traceback
import warnings
from typing import Callable

import numpy as np

from ..kernel_agent import protocol


class CheckFailure(Exception):
    """A sub-test failed; the message says what is wrong. ``stop`` skips the remaining sub-tests."""

    def __init__(self, message: str, stop: bool = False):
        super().__init__(message)
        self.stop = stop


class Proxy:
    """A learner's object that lives in the grading kernel (see ``autograder.trusted.remote``)."""

    __name__ = "the function"

    def call(self, *args, **kwargs):
        raise NotImplementedError

    def describe(self) -> dict:
        raise NotImplementedError

    def procedure(self, proc, objects, kwargs):
        raise NotImplementedError


class LearnerError(Exception):
    """The learner's code raised (or was interrupted) in the grading kernel."""

    def __init__(self, type: str, message: str, where: str = "", stage: str | None = None):
        super().__init__(f"{type}: {message}")
        self.type, self.message, self.where, self.stage = type, message, where, stage


class KernelGone(Exception):
    """The grading kernel died or stopped answering: nothing more can be graded in it."""


def _learner_frame(tb) -> str:
    """The last traceback frame that comes from notebook code (not numpy, not this package)."""
    frames = [f for f in traceback.extract_tb(tb)
              if "site-packages" not in f.filename and "/autograder/" not in f.filename
              and "/lib/python3" not in f.filename]
    if not frames:
        return ""
    f = frames[-1]
    return f"line {f.lineno}: {f.line}" if f.line else f"line {f.lineno}"


def _failure(name: str, err: LearnerError) -> CheckFailure:
    if err.type == "NotImplementedError":
        return CheckFailure(f"{name} is not implemented yet (it raised NotImplementedError)", stop=True)
    if err.type == "Interrupted":
        return CheckFailure(f"{name} did not finish in time and was stopped (an endless loop?)", stop=True)
    where = f" ({err.where})" if err.where else ""
    return CheckFailure(f"{err.stage or name} raised {err.type}: {err.message}{where}")


def _unwrap(value):
    if isinstance(value, protocol.Ref) and value.obj is not None:
        return value.obj
    return value


@contextlib.contextmanager
def _captured():
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), warnings.catch_warnings(), \
            np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        yield


def _local_error(exc: BaseException) -> LearnerError:
    return LearnerError(type(exc).__name__, str(exc), _learner_frame(exc.__traceback__),
                        getattr(exc, "bncourse_stage", None))


def call_learner(fn: Callable, *args, **kwargs):
    """Call learner code (here or in the grading kernel) with its output captured and warnings silenced.

    Raises CheckFailure naming the exception the learner's code raised.
    """
    name = getattr(fn, "__name__", "the function")
    if isinstance(fn, Proxy):
        try:
            return fn.call(*args, **kwargs)
        except LearnerError as err:
            raise _failure(name, err) from None
        except (KernelGone, TimeoutError) as exc:
            raise CheckFailure(f"{name} could not be graded: {exc}", stop=True) from None
        except protocol.ProtocolError as exc:
            raise CheckFailure(f"{name} returned something that is not plain data ({exc})") from None
    fn = _unwrap(fn)
    try:
        with _captured():
            return fn(*[_unwrap(a) for a in args], **{k: _unwrap(v) for k, v in kwargs.items()})
    except CheckFailure:
        raise
    except Exception as exc:  # any learner error becomes a failed sub-test
        raise _failure(name, _local_error(exc)) from None


def run_procedure(proc: Callable, *objects, **inputs):
    """Run ``proc(*objects, **inputs)`` from ``kernel_agent.procedures`` where the learner's objects live.

    ``objects`` are learner objects (or, for references, the grader's own); ``inputs`` are plain data.
    Returns the procedure's observations as plain data (decoded like anything from the kernel).
    """
    remote = [o for o in objects if isinstance(o, Proxy)]
    if remote:
        try:
            return remote[0].procedure(proc, objects, inputs)
        except LearnerError as err:
            raise _failure(getattr(remote[0], "__name__", "your code"), err) from None
        except (KernelGone, TimeoutError) as exc:
            raise CheckFailure(f"could not be graded: {exc}", stop=True) from None
        except protocol.ProtocolError as exc:
            raise CheckFailure(f"the result is not plain data ({exc})") from None
    inputs = copy.deepcopy(inputs)
    try:
        with _captured():
            result = proc(*[_unwrap(o) for o in objects], **inputs)
    except CheckFailure:
        raise
    except Exception as exc:  # noqa: BLE001 - the learner's code raised inside the procedure
        name = getattr(objects[0], "__name__", "your code") if objects else "your code"
        raise _failure(name, _local_error(exc)) from None
    try:
        return protocol.roundtrip(result)
    except protocol.ProtocolError as exc:
        raise CheckFailure(f"the result is not plain data ({exc})") from None


def describe(obj) -> dict:
    """``{"kind": "function" | "class" | "value" | "missing", "type": ..., "mro": [...]}`` for a learner
    object, without running any of its code."""
    if isinstance(obj, Proxy):
        try:
            return obj.describe()
        except (LearnerError, KernelGone, TimeoutError, protocol.ProtocolError) as exc:
            return {"kind": "missing", "message": str(exc)}
    obj = _unwrap(obj)
    if isinstance(obj, type):
        return {"kind": "class", "type": protocol.type_name(obj),
                "mro": [f"{c.__module__}.{c.__qualname__}" for c in obj.__mro__]}
    return {"kind": "function" if callable(obj) else "value", "type": protocol.type_name(obj), "mro": []}

"""Machinery shared by the checks that notebook test cells call.

A check runs named sub-tests against a learner's function, prints one line per sub-test to stdout (what
passed; for a failure, what is wrong in the field's words, the measured error and the tolerance) and
returns the points earned as a plain Python ``float``. nbgrader reads that value as partial credit
(``nbgrader.utils.get_partial_grade``), so it must never be a NumPy scalar, whose repr does not parse.

A check never raises and never writes to stderr (nbgrader scores a test cell 0 for either): exceptions
from the learner's code become failed sub-tests, and the learner's own prints and warnings are captured.
"""
from __future__ import annotations

import contextlib
import dis
import io
import math
import traceback
import types
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

__all__ = ["CheckFailure", "Report", "call_learner", "compare", "forbidden_uses", "norm_rel_error"]

FORBIDDEN_ROOTS = ("bnlib", "torch", "autograder")


class CheckFailure(Exception):
    """A sub-test failed; the message says what is wrong. ``stop`` skips the remaining sub-tests."""

    def __init__(self, message: str, stop: bool = False):
        super().__init__(message)
        self.stop = stop


def norm_rel_error(actual, expected) -> float:
    """max|actual - expected| / max(1e-12, max|expected|): robust where single entries are near zero."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        return math.inf
    return float(np.max(np.abs(a - e), initial=0.0) / max(1e-12, float(np.max(np.abs(e), initial=0.0))))


def compare(what: str, actual, expected, tol: float, hint: str | None = None) -> float:
    """Raise CheckFailure unless ``actual`` has expected's shape and is within ``tol`` (normwise)."""
    if actual is None:
        raise CheckFailure(f"{what} is None")
    try:
        a = np.asarray(actual)
    except Exception:  # e.g. a torch tensor that needs grad
        raise CheckFailure(f"{what} is a {type(actual).__name__}, expected a numpy.ndarray")
    if a.dtype == object or not np.issubdtype(a.dtype, np.number):
        raise CheckFailure(f"{what} has dtype {a.dtype}, expected a floating array")
    if a.shape != np.shape(expected):
        raise CheckFailure(f"{what} has shape {a.shape}, expected {np.shape(expected)}")
    err = norm_rel_error(a, expected)
    if not err <= tol:
        msg = f"{what} is wrong: relative error {err:.2e} (tolerance {tol:.0e})"
        if not np.all(np.isfinite(a)):
            msg = f"{what} contains NaN or Inf"
        if hint:
            msg += f". {hint}"
        raise CheckFailure(msg)
    return err


def _learner_frame(tb) -> str:
    """The last traceback frame that comes from notebook code (not numpy, not this package)."""
    frames = [f for f in traceback.extract_tb(tb)
              if "site-packages" not in f.filename and "/autograder/" not in f.filename]
    if not frames:
        return ""
    f = frames[-1]
    return f" (line {f.lineno}: {f.line})" if f.line else f" (line {f.lineno})"


def call_learner(fn: Callable, *args, **kwargs):
    """Call learner code with its stdout/stderr captured and warnings silenced.

    Raises CheckFailure naming the exception the learner's code raised.
    """
    name = getattr(fn, "__name__", "the function")
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), \
                warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            return fn(*args, **kwargs)
    except NotImplementedError:
        raise CheckFailure(f"{name} is not implemented yet (it raised NotImplementedError)", stop=True) from None
    except CheckFailure:
        raise
    except Exception as exc:  # any learner error becomes a failed sub-test
        raise CheckFailure(f"{name} raised {type(exc).__name__}: {exc}{_learner_frame(exc.__traceback__)}") from None


def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def _imported_modules(code: types.CodeType) -> set[str]:
    """Modules imported inside the function (``import torch`` in a body binds a local, not a global)."""
    mods = {ins.argval for ins in dis.get_instructions(code) if ins.opname == "IMPORT_NAME"}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            mods |= _imported_modules(const)
    return mods


def _root(obj) -> str | None:
    if isinstance(obj, types.ModuleType):
        return obj.__name__.split(".")[0]
    mod = getattr(obj, "__module__", None)
    if isinstance(mod, str) and callable(obj):
        return mod.split(".")[0]
    return None


def forbidden_uses(fn, roots=FORBIDDEN_ROOTS, _depth: int = 0, _seen=None) -> list[str]:
    """Names through which ``fn`` reaches a forbidden package (bnlib, torch, the autograder).

    Follows global names in the function's code (nested functions included) and, two levels deep, the
    learner's own helper functions. Dynamic imports (``__import__``, ``importlib``) are reported too.
    """
    seen = set() if _seen is None else _seen
    if id(fn) in seen:
        return []
    seen.add(id(fn))
    if _root(fn) in roots:
        return [f"{getattr(fn, '__name__', fn)} (from {fn.__module__})"]
    code = getattr(fn, "__code__", None)
    if code is None:
        return []
    found = [f"import {mod}" for mod in sorted(_imported_modules(code)) if mod.split(".")[0] in roots]
    glb = getattr(fn, "__globals__", {})
    for name in sorted(_code_names(code)):
        if name in ("__import__", "importlib", "exec", "eval", "compile"):
            found.append(name)
            continue
        if name not in glb:
            continue
        obj = glb[name]
        root = _root(obj)
        if root in roots:
            found.append(f"{name} ({root})")
        elif isinstance(obj, types.FunctionType) and _depth < 2:
            found += forbidden_uses(obj, roots, _depth + 1, seen)
    return found


@dataclass
class Report:
    """Collects weighted sub-tests and turns them into printed lines and a score."""

    title: str
    points: float
    lines: list[str] = field(default_factory=list)
    earned: float = 0.0
    total: float = 0.0
    skipped: int = 0

    def run(self, name: str, weight: float, test: Callable[[], str | None]) -> bool:
        """Run one sub-test; ``test`` returns an optional detail string or raises CheckFailure."""
        self.total += weight
        if self.skipped:
            self.skipped += 1
            return False
        try:
            detail = test()
        except CheckFailure as exc:
            self.lines.append(f"  FAIL  {name}: {exc}")
            if exc.stop:
                self.skipped = 1
            return False
        except Exception as exc:  # a bug in the check itself must not cost the learner the cell
            self.lines.append(f"  FAIL  {name}: unexpected {type(exc).__name__}: {exc}")
            return False
        self.earned += weight
        self.lines.append(f"  pass  {name}" + (f" ({detail})" if detail else ""))
        return True

    def zero(self, reason: str) -> float:
        self.lines.append(f"  FAIL  {reason}")
        self.earned, self.total = 0.0, 1.0
        return self.finish()

    def finish(self) -> float:
        score = 0.0 if self.total == 0 else self.points * self.earned / self.total
        score = float(round(score, 2))
        print(f"{self.title}: {score:g} / {self.points:g} points")
        for line in self.lines:
            print(line)
        if self.skipped > 1:
            print(f"  ...   {self.skipped - 1} more check(s) not run")
        if score == self.points:
            print("  All checks passed.")
        return score

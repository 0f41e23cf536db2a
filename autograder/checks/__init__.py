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

__all__ = ["CheckFailure", "Report", "call_learner", "compare", "forbidden_uses", "guard", "likely_cause",
           "norm_rel_error", "unpack"]

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
    if hasattr(actual, "detach") and hasattr(actual, "cpu"):  # a torch tensor (duck-typed: no torch import)
        actual = actual.detach().cpu()
        actual = actual.double() if actual.is_floating_point() else actual
        actual = actual.numpy()
    try:
        a = np.asarray(actual)
    except Exception:
        raise CheckFailure(f"{what} is a {type(actual).__name__}, expected an array")
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


def likely_cause(actual, candidates, tol: float = 1e-6) -> str | None:
    """"Likely cause: ..." for the first (expected_if_mistaken, message) candidate that ``actual`` matches.

    Each candidate is what a known mistake would produce on the same input, so a match names the mistake.
    """
    try:
        a = np.asarray(actual.detach().cpu().double() if hasattr(actual, "detach") else actual, dtype=np.float64)
    except Exception:
        return None
    for cand, msg in candidates:
        with np.errstate(all="ignore"):
            if np.shape(cand) == a.shape and norm_rel_error(a, cand) <= tol:
                return "Likely cause: " + msg
    return None


def unpack(result, n: int, name: str, what: str):
    """Check that a learner's function returned an n-tuple (``what`` names its parts) and return it."""
    if not isinstance(result, tuple) or len(result) != n:
        raise CheckFailure(f"{name} must return a tuple {what}, got {type(result).__name__}")
    return result


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


def _attr_names(code: types.CodeType) -> set[str]:
    """Attribute names the code reads (obj.name), nested functions included."""
    names = {ins.argval for ins in dis.get_instructions(code) if ins.opname in ("LOAD_ATTR", "LOAD_METHOD")}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _attr_names(const)
    return names


def _root(obj) -> str | None:
    if isinstance(obj, types.ModuleType):
        return obj.__name__.split(".")[0]
    mod = getattr(obj, "__module__", None)
    if isinstance(mod, str) and callable(obj):
        return mod.split(".")[0]
    return None


def forbidden_uses(fn, roots=FORBIDDEN_ROOTS, attrs=(), _depth: int = 0, _seen=None) -> list[str]:
    """Names through which ``fn`` (a function or a class) reaches forbidden code.

    ``roots``: packages forbidden entirely (bnlib, the autograder; torch in NumPy modules). ``attrs``:
    attribute names forbidden on anything (e.g. ``batch_norm`` in ``F.batch_norm``). Follows global names
    in the code (nested functions included), imports inside the body, the learner's own helper functions
    two levels deep, and for a class its methods and base classes. ``__import__``/``importlib`` are reported.
    """
    seen = set() if _seen is None else _seen
    if id(fn) in seen:
        return []
    seen.add(id(fn))
    if isinstance(fn, type):
        found = [f"base class {b.__module__}.{b.__name__}" for b in fn.__mro__[1:]
                 if _root(b) in roots or (b.__module__ or "").startswith("torch.nn.modules.batchnorm")]
        for member in vars(fn).values():
            member = getattr(member, "__func__", member)  # staticmethod / classmethod
            if isinstance(member, types.FunctionType):
                found += forbidden_uses(member, roots, attrs, _depth, seen)
        return found
    if _root(fn) in roots:
        return [f"{getattr(fn, '__name__', fn)} (from {fn.__module__})"]
    code = getattr(fn, "__code__", None)
    if code is None:
        return []
    found = [f"import {mod}" for mod in sorted(_imported_modules(code)) if mod.split(".")[0] in roots]
    found += [f".{name}" for name in sorted(_attr_names(code) & set(attrs))]
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
        elif name in attrs and root is not None:  # e.g. `from torch.nn.functional import batch_norm`
            found.append(f"{name} ({obj.__module__})")
        elif isinstance(obj, (types.FunctionType, type)) and _depth < 2 and obj is not fn:
            if isinstance(obj, type) and not (obj.__module__ or "").startswith(("__main__", "builtins")) \
                    and _root(obj) not in roots:
                if (obj.__module__ or "").startswith("torch.nn.modules.batchnorm"):
                    found.append(f"{name} ({obj.__module__})")
                continue
            found += forbidden_uses(obj, roots, attrs, _depth + 1, seen)
    return found


def guard(report: "Report", *objs, roots=FORBIDDEN_ROOTS, attrs=(), how: str = "in NumPy"):
    """Zero the report (and return its score) when an object is missing or delegates to forbidden code."""
    for obj in objs:
        if not callable(obj):
            return report.zero(f"expected a function or class, got {type(obj).__name__}")
        bad = forbidden_uses(obj, roots, attrs)
        if bad:
            return report.zero(
                f"{getattr(obj, '__name__', 'this')} must be written {how} by you; it uses {', '.join(bad)}. "
                "Delegating to bnlib, to a built-in batch norm or to the autograder earns no credit here.")
    return None


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

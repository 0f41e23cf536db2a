"""Machinery shared by the checks that notebook test cells call.

A check runs named sub-tests against a learner's function, prints one line per sub-test to stdout (what
passed; for a failure, what is wrong in the field's words, the measured error and the tolerance) and
returns the points earned as a plain Python ``float``. nbgrader reads that value as partial credit
(``nbgrader.utils.get_partial_grade``), so it must never be a NumPy scalar, whose repr does not parse.

Where checks run. In a learner's own notebook (visible tests while working) the check calls the learner's
function directly. When a notebook is graded, the check runs in the trusted grader and receives
:class:`~.learner.Proxy` objects for the learner's functions, which live in the sandboxed kernel
(``autograder.trusted``): the check makes the inputs, the kernel returns plain data, the check decides.
:func:`call_learner`, :func:`run_procedure` and :func:`describe` hide the difference.

Results are validated before any comparison: exact type (a NumPy array is an ``ndarray``, not a subclass
or an object with ``__array__``), dtype, shape, finiteness. A check never raises and never writes to stderr
(nbgrader scores a test cell 0 for either): exceptions from the learner's code become failed sub-tests.
"""
from __future__ import annotations

import dis
import functools
import math
import types
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..kernel_agent import protocol
from .learner import (CheckFailure, KernelGone, LearnerError, Proxy, call_learner, describe,  # noqa: F401
                      run_procedure)

__all__ = ["CheckFailure", "Proxy", "Report", "call_learner", "compare", "describe", "forbidden_uses", "guard",
           "likely_cause", "norm_rel_error", "run_procedure", "unpack"]

FORBIDDEN_ROOTS = ("bnlib", "torch", "autograder")


def one_torch_thread(check):
    """Decorator: run a check with torch on one thread (restored afterwards). Checks' tensors are tiny,
    and on a busy machine torch's OpenMP pool makes such operations many times slower."""
    @functools.wraps(check)
    def wrapper(*args, **kwargs):
        import torch
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return check(*args, **kwargs)
        finally:
            torch.set_num_threads(before)
    return wrapper


def norm_rel_error(actual, expected) -> float:
    """max|actual - expected| / max(1e-12, max|expected|): robust where single entries are near zero."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        return math.inf
    return float(np.max(np.abs(a - e), initial=0.0) / max(1e-12, float(np.max(np.abs(e), initial=0.0))))


def _kind(value) -> str:
    if isinstance(value, protocol.Foreign):
        return value.cls.rpartition(".")[2]
    if isinstance(value, protocol.Ref):
        return value.cls.rpartition(".")[2]
    return type(value).__name__


def as_array(what: str, actual) -> np.ndarray:
    """``actual`` as a float64 array, if it is exactly a NumPy array or a torch tensor; else CheckFailure."""
    if actual is None:
        raise CheckFailure(f"{what} is None")
    t = type(actual)
    if t.__module__ == "torch" and t.__name__ == "Tensor":
        actual = actual.detach().cpu()
        actual = (actual.double() if actual.is_floating_point() else actual).numpy()
    elif t is not np.ndarray:
        raise CheckFailure(f"{what} is a {_kind(actual)}, expected an array (numpy.ndarray or torch.Tensor)")
    if actual.dtype == object or not np.issubdtype(actual.dtype, np.number) \
            or np.issubdtype(actual.dtype, np.complexfloating):
        raise CheckFailure(f"{what} has dtype {actual.dtype}, expected a floating array")
    return actual


def compare(what: str, actual, expected, tol: float, hint: str | None = None) -> float:
    """Raise CheckFailure unless ``actual`` is an array of expected's shape, finite, within ``tol``
    (normwise relative error)."""
    a = as_array(what, actual)
    if a.shape != np.shape(expected):
        raise CheckFailure(f"{what} has shape {a.shape}, expected {np.shape(expected)}")
    with np.errstate(all="ignore"):
        finite = bool(np.all(np.isfinite(a.astype(np.float64))))
    if not finite and np.all(np.isfinite(expected)):
        msg = f"{what} contains NaN or Inf"
        raise CheckFailure(msg + (f". {hint}" if hint else ""))
    err = norm_rel_error(a, expected)
    if not err <= tol:
        msg = f"{what} is wrong: relative error {err:.2e} (tolerance {tol:.0e})"
        if hint:
            msg += f". {hint}"
        raise CheckFailure(msg)
    return err


def compare_or_own(credited: list, what: str, actual, expected, own, tol: float, hint: str | None = None):
    """:func:`compare` against the reference; when that fails and ``own`` is given (the gradient that is right
    for the learner's own, wrong, forward normalization), a match with ``own`` is credited instead: ``what`` is
    appended to ``credited`` and None returned, so that one forward mistake is not paid twice. Otherwise the
    reference comparison's :class:`CheckFailure` is raised."""
    try:
        return compare(what, actual, expected, tol, hint)
    except CheckFailure:
        if own is None:
            raise
        try:
            compare(what, actual, own, tol)
        except CheckFailure:
            pass
        else:
            credited.append(what)
            return None
        raise


def likely_cause(actual, candidates, tol: float = 1e-6) -> str | None:
    """"Likely cause: ..." for the first (expected_if_mistaken, message) candidate that ``actual`` matches.

    Each candidate is what a known mistake would produce on the same input, so a match names the mistake.
    """
    try:
        a = as_array("value", actual).astype(np.float64)
    except CheckFailure:
        return None
    for cand, msg in candidates:
        with np.errstate(all="ignore"):
            if np.shape(cand) == a.shape and norm_rel_error(a, cand) <= tol:
                return "Likely cause: " + msg
    return None


def unpack(result, n: int, name: str, what: str):
    """Check that a learner's function returned an n-tuple (``what`` names its parts) and return it."""
    if type(result) is not tuple or len(result) != n:
        raise CheckFailure(f"{name} must return a tuple {what}, got {_kind(result)}"
                           + (f" of length {len(result)}" if type(result) in (tuple, list) else ""))
    return result


def _code_names(code: types.CodeType) -> set[str]:
    """Global names the code reads (not attribute names: ``bn.train()`` does not read a global ``train``)."""
    names = {ins.argval for ins in dis.get_instructions(code) if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME")}
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
    """Zero the report (and return its score) when an object is missing or is not a function or class.

    In the learner's own notebook it also predicts what grading will do with delegation: bnlib and torch's
    normalization are absent from the grading kernel, so a function that reaches them (seen here by
    :func:`forbidden_uses`, which only reads names) will earn nothing; it says so now instead of later.
    While grading, nothing is read from the learner's code: the absence itself does the work.
    """
    for obj in objs:
        info = describe(obj)
        name = getattr(obj, "__name__", "this")
        if info.get("kind") == "missing":
            return report.zero(f"{name} is not defined (run the cell that defines it)")
        if info.get("kind") not in ("function", "class"):
            return report.zero(f"expected a function or class, got {str(info.get('type', '?')).rpartition('.')[2]}")
        if isinstance(obj, Proxy):
            continue
        bad = forbidden_uses(obj, roots, attrs)
        if bad:
            return report.zero(
                f"{name} must be written {how} by you; it uses {', '.join(bad)}. bnlib, torch's normalization "
                "layers and the autograder are not available when your notebook is graded, so this earns no credit.")
    return None


@dataclass
class Report:
    """Collects weighted sub-tests and turns them into printed lines and a score.

    A sub-test may ``require`` others by name: it is run and reported, but its weight counts only when
    every required sub-test passed. Properties that a function doing nothing also has (inputs left
    untouched, gradient invariants, unchanged buffers, the right class structure) require the sub-test of
    the main behaviour, so that no credit comes without the output itself being right.

    An ``essential`` sub-test checks that the layer works at all (its main behaviour, at a tolerance a
    working layer meets easily). If one fails, the layer is broken for training or inference and the cell
    scores 0, whatever else passes: points follow how much a mistake breaks the layer (course/grading.md).
    """

    title: str
    points: float
    entries: list = field(default_factory=list)   # [name, weight, passed, line, requires, essential]
    skipped: int = 0
    zeroed: str | None = None

    def run(self, name: str, weight: float, test: Callable[[], str | None], requires=(),
            essential: bool = False) -> bool:
        """Run one sub-test; ``test`` returns an optional detail string or raises CheckFailure."""
        requires = (requires,) if isinstance(requires, str) else tuple(requires)
        entry = [name, weight, False, "", requires, essential]
        self.entries.append(entry)
        if self.skipped:
            self.skipped += 1
            return False
        try:
            detail = test()
        except CheckFailure as exc:
            entry[3] = f"  FAIL  {name}: {exc}"
            if exc.stop:
                self.skipped = 1
            return False
        except Exception as exc:  # noqa: BLE001 - never let a surprise escape the test cell
            entry[3] = f"  FAIL  {name}: unexpected {type(exc).__name__}: {exc}"
            return False
        entry[2] = True
        entry[3] = f"  pass  {name}" + (f" ({detail})" if detail else "")
        return True

    def zero(self, reason: str) -> float:
        self.zeroed = reason
        return self.finish()

    def broken(self) -> str | None:
        """The first essential sub-test that failed (the layer does not work yet), if any."""
        return next((e[0] for e in self.entries if e[5] and not e[2]), None)

    def score(self) -> float:
        if self.zeroed is not None or self.broken() is not None:
            return 0.0
        passed = {e[0] for e in self.entries if e[2]}
        total = sum(e[1] for e in self.entries)
        earned = sum(e[1] for e in self.entries if e[2] and all(r in passed for r in e[4]))
        score = 0.0 if total == 0 else self.points * earned / total
        return float(round(min(max(score, 0.0), self.points), 2))

    def finish(self) -> float:
        score = self.score()
        print(f"{self.title}: {score:g} / {self.points:g} points")
        if self.zeroed is not None:
            print(f"  FAIL  {self.zeroed}")
            return score
        passed = {e[0] for e in self.entries if e[2]}
        if self.broken() is not None:
            print(f"  No points yet: \"{self.broken()}\" must work first (the layer is broken without it). "
                  "What else passes is listed, and counts once it works.")
        for name, _, ok, line, requires, _essential in self.entries:
            if not line:
                continue
            missing = [r for r in requires if r not in passed]
            if ok and missing:
                line += f" -- no credit until this passes: {missing[0]}"
            print(line)
        if self.skipped > 1:
            print(f"  ...   {self.skipped - 1} more check(s) not run")
        if score == self.points:
            print("  All checks passed.")
        return score

"""A test cell, graded by the trusted side.

The course's test cells are declarations, e.g. ::

    from autograder.checks.m01 import check_batchnorm_forward
    check_batchnorm_forward(batchnorm_forward, points=4, hidden=True, seed=1502)

:func:`parse_test_cell` reads one into a :class:`CheckCall` (the check, the learner names it is given,
literal options); :func:`run_check` runs that check in this process with :class:`~.remote.Remote` objects
for the learner names, and returns the text it printed and its score. The cell's code never runs in the
learner's kernel: the kernel never sees the hidden tests, and nothing it prints or displays is read.

Seeds of hidden inputs are mixed with a course secret (:func:`salted`), so that inputs shown in feedback
or read from the repository cannot be precomputed.
"""
from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib
import io
import math
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

CHECK_PACKAGE = "autograder.checks."


class NotACheck(ValueError):
    """A test cell that is not one check call (a course configuration error, not the learner's)."""


@dataclass
class CheckCall:
    module: str                 # e.g. "autograder.checks.m01"
    function: str               # e.g. "check_batchnorm_forward"
    names: list[str]            # learner names passed positionally
    options: dict = field(default_factory=dict)


def parse_test_cell(source: str) -> CheckCall:
    """The check call a test cell declares. Raises NotACheck for anything else."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise NotACheck(f"test cell does not parse: {exc}") from None
    imported: dict[str, tuple[str, str]] = {}
    call = None
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(CHECK_PACKAGE) \
                and node.level == 0:
            for alias in node.names:
                imported[alias.asname or alias.name] = (node.module, alias.name)
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and call is None:
            call = node.value
        else:
            raise NotACheck(f"unexpected statement on line {node.lineno} of a test cell")
    if call is None or not isinstance(call.func, ast.Name) or call.func.id not in imported:
        raise NotACheck("a test cell must call one imported check")
    module, function = imported[call.func.id]
    if not function.startswith("check_"):
        raise NotACheck(f"{function} is not a check")
    names = []
    for arg in call.args:
        if not isinstance(arg, ast.Name):
            raise NotACheck("checks take the learner's names as positional arguments")
        names.append(arg.id)
    options = {}
    for kw in call.keywords:
        if kw.arg is None:
            raise NotACheck("no **kwargs in a test cell")
        try:
            options[kw.arg] = ast.literal_eval(kw.value)
        except ValueError:
            raise NotACheck(f"option {kw.arg} must be a literal") from None
    return CheckCall(module, function, names, options)


def course_secret(root: str | os.PathLike | None) -> bytes:
    """The secret that salts hidden seeds: ``<course>/.bncourse/secret`` (created on first use, 0600).
    Falls back to a per-user file when the course folder is not writable."""
    candidates = []
    if root:
        candidates.append(Path(root) / ".bncourse" / "secret")
    candidates.append(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bncourse" / "secret")
    for path in candidates:
        try:
            if path.is_file():
                return path.read_bytes()
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            value = secrets.token_hex(32).encode()
            with os.fdopen(fd, "wb") as f:
                f.write(value)
            return value
        except FileExistsError:
            return path.read_bytes()
        except OSError:
            continue
    return secrets.token_hex(32).encode()


def salted(seed: int, secret: bytes | None, grade_id: str) -> int:
    """``seed`` mixed with the course secret and the cell (the same for every learner of a course)."""
    if not secret:
        return seed
    digest = hashlib.sha256(secret + b"\0" + grade_id.encode() + b"\0" + str(seed).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def run_check(call: CheckCall, objects: list, points: float, grade_id: str,
              secret: bytes | None = None) -> tuple[str, float]:
    """Run ``call`` here with the learner ``objects`` (one per name); returns (printed text, score).

    The score is clipped to [0, points]; anything that is not a finite float scores 0.
    """
    try:
        module = importlib.import_module(call.module)
        check = getattr(module, call.function)
    except (ImportError, AttributeError) as exc:
        return f"This test cell could not be graded (grader configuration: {exc}).", 0.0
    options = dict(call.options)
    options["points"] = points
    if "seed" in options and type(options["seed"]) is int:
        options["seed"] = salted(options["seed"], secret, grade_id)
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            score = check(*objects, **options)
    except Exception as exc:  # noqa: BLE001 - a check must never take grading down
        return out.getvalue() + f"\nThe grader failed on this test cell ({type(exc).__name__}: {exc}).", 0.0
    if type(score) is not float or not math.isfinite(score):
        score = 0.0
    score = min(max(score, 0.0), float(points))
    return out.getvalue(), score

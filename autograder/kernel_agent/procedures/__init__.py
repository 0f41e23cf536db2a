"""Procedures the grader runs where the learner's objects live (the grading kernel, or in-process).

A procedure takes learner objects (a class, a function) and plain inputs the grader made, exercises the
learner's code the way a user would (build a module, train a few steps, call backward) and returns plain
observations: tensors, arrays, numbers, strings. The grader runs the same procedure with a reference
implementation in its own process and compares the observations. A procedure holds no expected value;
rewriting it in the kernel can only change what the learner's own code appears to do.
"""
from __future__ import annotations

import contextlib


@contextlib.contextmanager
def stage(label: str):
    """Label exceptions raised inside (e.g. "BatchNormFunction.backward") for the learner's message."""
    try:
        yield
    except Exception as exc:
        if getattr(exc, "bncourse_stage", None) is None:
            try:
                exc.bncourse_stage = label
            except Exception:  # noqa: BLE001 - some exception types refuse attributes
                pass
        raise

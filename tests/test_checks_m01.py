"""Module 01 grading, in-process: the notebook's own test cells run against the bank and correct variants."""
import contextlib
import io

import numpy as np
import pytest

from autograder.bank import apply_bug, grade_in_process, solution_sources
from autograder.bank.m01 import ASSIGNMENT, BUGS
from autograder.checks import forbidden_uses
from autograder.checks.m01 import check_batchnorm_backward_alt, check_batchnorm_forward

SOURCES = solution_sources(ASSIGNMENT)


@pytest.mark.parametrize("bug_name,expected", [
    ("normalize_unbiased", "biased batch variance"),
    ("eps_outside_sqrt", "eps belongs inside the square root"),
    ("momentum_weights_old", "weight of the NEW batch statistic"),
    ("running_var_biased", "running_var must be updated with the unbiased"),
    ("running_not_in_place", "in place"),
    ("eval_uses_batch_stats", "eval mode must normalize with running_mean and running_var"),
    ("stats_over_features", "LayerNorm"),
    ("dx_missing_mean_term", "mean term"),
    ("dx_missing_var_term", "through the variance"),
    ("dbeta_mean", "SUM of dout"),
    ("alt_not_divided_by_m", "divide by m"),
    ("forward_calls_bnlib", "earns no credit"),
    ("alt_calls_torch", "earns no credit"),
])
def test_failures_name_the_mistake(bug_name, expected):
    bug = next(b for b in BUGS if b.name == bug_name)
    output = "".join(v[2] for v in grade_in_process(ASSIGNMENT, apply_bug(SOURCES, bug)).values())
    assert expected in output


def _forward_with(body):
    ns = {"np": np}
    exec(f"def batchnorm_forward(x, gamma, beta, running_mean, running_var, training, momentum=0.1, eps=1e-5):\n{body}", ns)
    return ns["batchnorm_forward"]


def test_check_returns_a_python_float_and_never_writes_stderr():
    noisy = _forward_with("    import sys\n    print('debug', file=sys.stderr)\n    import warnings\n"
                          "    warnings.warn('careful')\n    raise ZeroDivisionError('boom')\n")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        score = check_batchnorm_forward(noisy, points=3)
    assert type(score) is float and score == 0.0  # a NumPy scalar's repr would not parse as partial credit
    assert err.getvalue() == ""
    assert "raised ZeroDivisionError: boom" in out.getvalue()


def test_partial_credit_is_a_fraction_of_the_points():
    ns = {}
    exec(apply_bug(SOURCES, next(b for b in BUGS if b.name == "eps_outside_sqrt"))["batchnorm_forward"],
         {"np": np}, ns)
    with contextlib.redirect_stdout(io.StringIO()):
        score = check_batchnorm_forward(ns["batchnorm_forward"], points=3)
    assert 0 < score < 3


def test_not_a_function_scores_zero():
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert check_batchnorm_backward_alt(None, 42, points=2) == 0.0
    assert "expected a function" in out.getvalue()


def test_forbidden_uses_sees_aliases_local_imports_and_helpers():
    import bnlib
    import torch.nn.functional as tnf
    g = {"np": np, "bf": bnlib.batch_norm_forward, "tnf": tnf, "bnlib": bnlib}

    def make(src):
        ns = dict(g)
        exec(src, ns)
        return ns["f"]
    assert forbidden_uses(make("def f(x):\n    return bf(x)"))
    assert forbidden_uses(make("def f(x):\n    return tnf.batch_norm(x)"))
    assert forbidden_uses(make("def f(x):\n    import torch\n    return x"))
    assert forbidden_uses(make("def helper(x):\n    return bnlib.batch_norm_forward(x)\ndef f(x):\n    return helper(x)"))
    assert forbidden_uses(make("def f(x):\n    return __import__('bnlib')"))
    assert forbidden_uses(bnlib.batch_norm_forward)
    assert not forbidden_uses(make("def f(x):\n    return np.mean(x, axis=0)"))

"""Test cells as the trusted grader reads them, review flags, and the course registry."""
import importlib

import nbformat
import pytest

from autograder import course
from autograder.bank import solution_sources
from autograder.config import SOLUTIONS
from autograder.grading import assignments, notebook_name
from autograder.review import review, review_source
from autograder.samples import build, strip_markers
from autograder.trusted.runner import NotACheck, parse_test_cell, run_check, salted


def test_registry_lists_every_assignment():
    assert [m.assignment for m in course.MODULES] == assignments()


@pytest.mark.parametrize("a", assignments())
def test_every_test_cell_is_one_check_call_with_its_cells_points(a):
    nb = nbformat.read(SOLUTIONS / a / f"{notebook_name(a)}.ipynb", as_version=4)
    tests = [c for c in nb.cells if c.cell_type == "code" and c.metadata["nbgrader"].get("grade")
             and not c.metadata["nbgrader"].get("solution")]
    assert tests
    for cell in tests:
        call = parse_test_cell(cell.source)
        assert call.module == course.find(a).checks
        assert float(call.options["points"]) == float(cell.metadata["nbgrader"]["points"])
        assert all(name.isidentifier() for name in call.names)


@pytest.mark.parametrize("source", [
    "assert batchnorm_forward(1) == 2",
    "from autograder.checks.m01 import check_batchnorm_forward\nprint(1)\ncheck_batchnorm_forward(f, points=3)",
    "from os import system\nsystem('ls')",
    "from autograder.checks.m01 import CheckFailure\nCheckFailure(f)",
    "from autograder.checks.m01 import check_batchnorm_forward\ncheck_batchnorm_forward(f(), points=3)",
    "from autograder.checks.m01 import check_batchnorm_forward\ncheck_batchnorm_forward(f, points=x)",
    "from autograder.checks.m01 import check_batchnorm_forward\ncheck_batchnorm_forward(f, **opts)",
])
def test_anything_else_is_not_a_check(source):
    with pytest.raises(NotACheck):
        parse_test_cell(source)


def test_hidden_seeds_depend_on_the_course_secret_and_the_cell():
    assert salted(1502, None, "t") == 1502
    a, b = salted(1502, b"one", "t"), salted(1502, b"two", "t")
    assert a != b and a == salted(1502, b"one", "t") and a != salted(1502, b"one", "u")


def test_run_check_clips_and_refuses_non_floats(monkeypatch):
    from autograder.trusted import runner

    class Fake:
        pass
    fake = Fake()
    real = importlib.import_module
    monkeypatch.setattr(runner.importlib, "import_module", lambda name: fake if name == "fake" else real(name))
    call = runner.CheckCall("fake", "check_x", [], {"points": 3})
    fake.check_x = lambda *a, points, **k: float("nan")
    assert run_check(call, [], 3.0, "g")[1] == 0.0
    fake.check_x = lambda *a, points, **k: 99.0
    assert run_check(call, [], 3.0, "g")[1] == 3.0
    fake.check_x = lambda *a, points, **k: "3"
    assert run_check(call, [], 3.0, "g")[1] == 0.0


def test_review_has_no_false_positive_on_honest_code():
    from autograder.samples.m01 import samples
    for m in course.MODULES:
        bank = importlib.import_module(m.bank)
        for gid, src in solution_sources(m.assignment).items():
            assert review_source(strip_markers(src)) == [], (m.assignment, gid)
        for name, variant in bank.CORRECT_VARIANTS.items():
            for gid, src in variant.items():
                assert review_source(src) == [], (name, gid)
        for bug in bank.BUGS:
            from autograder.bank import apply_bug
            src = apply_bug(solution_sources(m.assignment), bug)[bug.grade_id]
            found = review_source(strip_markers(src))
            assert all("bnlib" in r or "torch" in r for r in found), (bug.name, found)
    released = nbformat.read(SOLUTIONS.parent / "notebooks" / "01_batchnorm_numpy" / "01_batchnorm_numpy.ipynb",
                             as_version=4)
    for s in samples():
        if s.student in ("gus", "hal"):
            continue
        assert review(build(released, s)) == [], s.student


@pytest.mark.parametrize("source, reason", [
    ("import autograder.checks.m01 as m\nm.check_batchnorm_forward = lambda *a, **k: 3.0", "patches the module"),
    ("import numpy as np\nnp.allclose = lambda *a, **k: True", "patches the module"),
    ("import sys\nsys.modules['bnlib'] = None", "sys.modules"),
    ("import os\nos._exit(0)", "kills the kernel"),
    ("setattr(__import__('numpy'), 'max', min)", "sets attributes by name"),
    ("exec(__import__('base64').b64decode('cHJpbnQoMSk='))", "executes code built at run time"),
    ("%%capture\nx = 1", "magic %%capture"),
    ("get_ipython().display_formatter.formatters['text/plain'].enabled = False", "reconfigures IPython"),
    ("import gc\ngc.get_referrers(1)", "garbage collector"),
    ("import sys\nf = sys._getframe(1).f_back", "walks the call stack"),
    ("open('/work/main/solutions/x.ipynb').read()", "outside the notebook's folder"),
])
def test_review_flags_tampering(source, reason):
    assert any(reason in r for r in review_source(source)), review_source(source)

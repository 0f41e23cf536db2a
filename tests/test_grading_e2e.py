"""End to end through nbgrader: a whole class of submissions autograded by `bncourse autograde`.

The class holds the reference solution, the release notebook as shipped, two independent correct
variants, every bug of the bank, and the awkward sample learners (syntax error, infinite loop, deleted
test cells, two hostile ones). One run grades them all; the assertions read the class gradebook.
"""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from autograder import grading
from autograder.bank import apply_bug, solution_sources
from autograder.bank import m02, m03
from autograder.bank.m01 import ASSIGNMENT, BUGS, CORRECT_VARIANTS
from autograder.config import RELEASE, REPO, config_file_text
from autograder.samples import Sample, build, strip_markers
from autograder.samples.m01 import samples

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
ENV = dict(os.environ, PATH=str(BIN) + os.pathsep + os.environ.get("PATH", ""))
NB = grading.notebook_name(ASSIGNMENT)
AUTO_MAX = 21.0


def run(*args, cwd=REPO):
    return subprocess.run([str(BIN / "bncourse"), *args], capture_output=True, text=True, env=ENV, cwd=cwd,
                          timeout=1800)


def grade_class(root, assignment, bank, extra=()):
    """Submissions for the reference, the release notebook, each correct variant and each bug (plus
    ``extra`` samples), autograded in one `bncourse autograde` run; returns the gradebook as a dict."""
    nb = grading.notebook_name(assignment)
    (root / "nbgrader_config.py").write_text(config_file_text(root))
    released = nbformat.read(RELEASE / assignment / f"{nb}.ipynb", as_version=4)
    ref = {k: strip_markers(v) for k, v in solution_sources(assignment).items()}
    learners = {s.student: s for s in extra}
    learners["reference"] = Sample("reference", "", sources=ref)
    learners["blank"] = Sample("blank", "")
    for name, variant in bank.CORRECT_VARIANTS.items():
        learners[f"variant_{name}"] = Sample(name, "", sources={**ref, **variant})
    for bug in bank.BUGS:
        learners[f"bug_{bug.name}"] = Sample(bug.name, "", sources=apply_bug(ref, bug))
    digests = {}
    for student, sample in learners.items():
        dest = root / "submitted" / student / assignment
        dest.mkdir(parents=True)
        nbformat.write(build(released, sample), dest / f"{nb}.ipynb")
        digests[student] = hashlib.sha256((dest / f"{nb}.ipynb").read_bytes()).hexdigest()
    proc = run("autograde", assignment, "--course-dir", str(root), "--timeout", "10", "--jobs", "2")
    print(proc.stdout[-6000:])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    header, rows = grading.gradebook_rows(root, assignment)
    table = {r[0]: dict(zip(header, r)) for r in rows}
    return root, learners, table, digests, proc.stdout


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    import autograder.bank.m01 as m01
    return grade_class(tmp_path_factory.mktemp("course"), ASSIGNMENT, m01, samples())


def test_module02_bank_through_nbgrader(tmp_path):
    _, _, table, _, _ = grade_class(tmp_path, m02.ASSIGNMENT, m02)
    top = auto_total(table["reference"])
    assert top == 20.0
    for name in m02.CORRECT_VARIANTS:
        assert auto_total(table[f"variant_{name}"]) == top, name
    assert table["blank"]["total"] == 0.0
    kept = [b.name for b in m02.BUGS if auto_total(table[f"bug_{b.name}"]) >= top]
    assert not kept, f"bugs that kept full marks: {kept}"


def one_breaking_bug_per_function(bank):
    """A bank holding the first breaking bug of each graded function (and the bank's correct variants): what
    the Module 04-07 tests grade through nbgrader; test_bank.py grades every bug in-process."""
    import types
    picked = {}
    for bug in bank.BUGS:
        if bug.breaks:
            picked.setdefault(bug.grade_id, bug)
    return types.SimpleNamespace(BUGS=list(picked.values()), CORRECT_VARIANTS=bank.CORRECT_VARIANTS)


def auto_total(row):
    return sum(v for k, v in row.items() if k.startswith("test_") and isinstance(v, float))


def test_no_submission_is_lost_and_none_is_modified(course):
    root, learners, table, digests, _ = course
    assert set(table) == set(learners)
    for student, digest in digests.items():
        path = root / "submitted" / student / ASSIGNMENT / f"{NB}.ipynb"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_reference_and_correct_variants_get_full_marks(course):
    _, _, table, _, _ = course
    assert auto_total(table["reference"]) == AUTO_MAX
    for name in CORRECT_VARIANTS:
        assert auto_total(table[f"variant_{name}"]) == AUTO_MAX, name


def test_every_bug_loses_points_through_nbgrader(course):
    _, _, table, _, _ = course
    kept = [b.name for b in BUGS if auto_total(table[f"bug_{b.name}"]) >= AUTO_MAX]
    assert not kept, f"bugs that kept full marks: {kept}"


def test_release_notebook_scores_zero(course):
    _, _, table, _, _ = course
    assert table["blank"]["total"] == 0.0


def test_awkward_learners_all_get_a_grade(course):
    _, _, table, _, out = course
    assert auto_total(table["ada"]) == AUTO_MAX
    assert auto_total(table["eli"]) == AUTO_MAX                    # deleted test cells were restored
    assert table["dee"]["test_batchnorm_forward"] == 3.0           # the loop only costs its own cells
    assert table["dee"]["test_batchnorm_backward"] == 0.0
    assert table["dee"]["test_batchnorm_backward_alt"] == 3.0
    assert 0 < auto_total(table["ben"]) < AUTO_MAX                 # partial credit
    assert table["cai"]["total"] == 0.0                            # syntax error: graded, not crashed
    assert "flagged" in table["gus"]["status"]                     # tampering is flagged for a human
    assert table["gus"]["test_batchnorm_backward"] == 0.0          # ... and gains nothing
    # hal kills its kernel in the last solution cell: what was graded before keeps its points, the rest
    # scores 0, and the submission is flagged with the reason; no gradebook was reached
    assert table["hal"]["test_batchnorm_backward_alt"] == 0.0 and table["hal"]["test_batchnorm_forward"] == 3.0
    assert "flagged" in table["hal"]["status"]
    assert "hal: flagged: the kernel died" in out
    assert "flagged" in table["dee"]["status"] and "dee: flagged: learner code was stopped" in out
    for honest in ("ada", "ben", "cai", "eli", "fay", "reference", "blank"):
        assert "flagged" not in table[honest]["status"], honest


def test_feedback_with_standard_nbgrader(course):
    root = course[0]
    proc = subprocess.run([str(BIN / "nbgrader"), "generate_feedback", ASSIGNMENT, "--student", "ben"],
                          capture_output=True, text=True, env=ENV, cwd=root, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    html = (root / "feedback" / "ben" / ASSIGNMENT / f"{NB}.html").read_text()
    assert "dx is missing the mean term" in html  # the targeted message reaches the learner


def test_grade_one_notebook_json(tmp_path):
    nb_path = tmp_path / f"{NB}.ipynb"
    released = nbformat.read(RELEASE / ASSIGNMENT / f"{NB}.ipynb", as_version=4)
    ref = {k: strip_markers(v) for k, v in solution_sources(ASSIGNMENT).items()}
    bug = next(b for b in BUGS if b.name == "running_var_biased")
    nbformat.write(build(released, Sample("x", "", sources=apply_bug(ref, bug),
                                          answers={"q_batch_size": "GroupNorm, since m = 2 is too few."})), nb_path)
    proc = run("grade", str(nb_path), "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert set(out) >= {"total", "max_total", "tests"}
    assert out["max_total"] == AUTO_MAX and 0 < out["total"] < AUTO_MAX
    for t in out["tests"]:
        assert set(t) >= {"grade_id", "points", "max_points", "message"}
        assert isinstance(t["points"], float) and 0 <= t["points"] <= t["max_points"]
    fwd = next(t for t in out["tests"] if t["grade_id"] == "test_batchnorm_forward")
    assert "running_var must be updated with the unbiased" in fwd["message"]
    # self-check: the model answer of a written answer given, and only of one given
    answered = {m["grade_id"]: m for m in out["manual"]}
    assert "With m = 2" in answered["q_batch_size"]["model_answer"]
    assert "model_answer" not in answered["q_inference_mode"]


def test_grade_exits_zero_on_a_broken_notebook(tmp_path):
    bad = tmp_path / f"{NB}.ipynb"
    bad.write_text("{ this is not a notebook")
    proc = run("grade", str(bad), "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["total"] == 0.0 and "error" in out


def test_module03_through_nbgrader(tmp_path):
    """Every Module 03 bug loses points in-process (tests/test_bank.py, the same test cells); here the
    nbgrader pipeline grades the assignment: reference, release notebook, correct variant, one bug each."""
    import types
    picked = {}
    for bug in m03.BUGS:
        picked.setdefault(bug.grade_id, bug)
    bank = types.SimpleNamespace(BUGS=list(picked.values()), CORRECT_VARIANTS=m03.CORRECT_VARIANTS)
    _, _, table, _, _ = grade_class(tmp_path, m03.ASSIGNMENT, bank)
    top = auto_total(table["reference"])
    assert top == 23.0
    assert auto_total(table["variant_recompute_caches"]) == top
    assert table["blank"]["total"] == 0.0
    assert all(auto_total(table[f"bug_{b.name}"]) < top for b in bank.BUGS)

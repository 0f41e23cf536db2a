"""End to end through nbgrader: a whole class of submissions autograded by `bncourse autograde`.

The class holds the reference solution, the release notebook as shipped, two independent correct
variants, every bug of the bank, and the awkward sample learners (syntax error, infinite loop, deleted
test cells, two hostile ones). One run grades them all; the assertions read the class gradebook.
"""
import functools
import hashlib
import json
import os
import subprocess
import sys
import types
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


def grade_class(root, assignment, bank, extra=(), packs=()):
    """Submissions for the reference, the release notebook, each correct variant and each bug (plus
    ``extra`` samples, and one submission ``pack<k>`` holding all the bugs of each of ``packs``), autograded
    in one `bncourse autograde` run; returns the gradebook as a dict."""
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
    for k, pack in enumerate(packs):
        learners[f"pack{k}"] = Sample(f"pack{k}", "", sources=functools.reduce(apply_bug, pack, ref))
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


def _layer(grade_id):
    """The layer a graded function belongs to: a backward pass is checked on its own forward's cache."""
    return grade_id.removesuffix("_forward").removesuffix("_backward")


def packs_of(bank):
    """Every bug of a bank of independent graded functions (Modules 03-07) in few submissions: each holds at
    most one bug per function, and never bugs in both passes of one layer (a backward pass is checked on its
    own forward's cache; a broken forward would cost it points that are not its bug's). Each bug is then
    judged on its own function's cells, as if it were alone."""
    remaining = {}
    for bug in bank.BUGS:
        remaining.setdefault(bug.grade_id, []).append(bug)
    packs = []
    while any(remaining.values()):
        pack, layers = [], set()
        for gid in sorted(remaining, key=lambda g: -len(remaining[g])):   # the longest lists first
            if remaining[gid] and _layer(gid) not in layers:
                pack.append(remaining[gid].pop(0))
                layers.add(_layer(gid))
        packs.append(pack)
    return packs


def grade_packed(root, assignment, bank):
    """The reference, the release notebook, the bank's correct variants and every bug (packed, see
    :func:`packs_of`) in one `bncourse autograde` run; returns (gradebook table, packs)."""
    packs = packs_of(bank)
    variants_only = types.SimpleNamespace(BUGS=[], CORRECT_VARIANTS=bank.CORRECT_VARIANTS)
    _, _, table, _, _ = grade_class(root, assignment, variants_only, packs=packs)
    return table, packs


def bugs_off_policy(table, packs):
    """Packed bugs whose points break the grading policy (course/grading.md): a mistake that breaks the layer
    keeps less than 30% of its function's points, a slip at least 40% and less than all; each as (bug,
    points kept, the function's points). Also each pack whose grading was cut short (a flagged kernel death
    or time limit would zero cells for another bug's sake)."""
    ref, out = table["reference"], []
    for k, pack in enumerate(packs):
        row = table[f"pack{k}"]
        if "flagged" in row["status"]:
            out.append((f"pack{k}", row["status"], [b.name for b in pack]))
        for bug in pack:
            cells = [c for c in (f"test_{bug.grade_id}", f"test_{bug.grade_id}_hidden") if c in ref]
            kept, own = sum(row[c] for c in cells), sum(ref[c] for c in cells)
            if not cells or not (kept < 0.3 * own if bug.breaks else 0.4 * own <= kept < own):
                out.append((bug.name, kept, own))
    return out


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
    """Through the nbgrader pipeline: the reference and the correct variant get full marks, the release notebook
    0, and every bug of the bank (packed, one per graded function in each submission) loses its points."""
    table, packs = grade_packed(tmp_path, m03.ASSIGNMENT, m03)
    top = auto_total(table["reference"])
    assert top == 23.0
    assert auto_total(table["variant_recompute_caches"]) == top
    assert table["blank"]["total"] == 0.0
    assert sum(map(len, packs)) == len(m03.BUGS)
    assert not bugs_off_policy(table, packs)

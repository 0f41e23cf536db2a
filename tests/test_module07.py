"""Module 07 (capstone): the setups' data and models agree between the grader and the notebook's helpers, each
broken setup shows its symptom and each reference fix removes it, the checks' messages name the cause, wrong
fixes that hide a symptom score nothing, the quiz's visible test never reveals an answer, the kernel policy,
the module page, and (slow) the assignment through nbgrader."""
import inspect
import json

import nbformat
import pytest
import torch

from autograder import course
from autograder.bank import apply_bug, grade_in_process, m07, solution_sources
from autograder.checks import m07 as checks
from autograder.config import REPO
from autograder.kernel_agent.procedures import m07 as proc
from cases import capstone

ASSIGNMENT = m07.ASSIGNMENT
PAGE = REPO / "course" / "modules" / f"{ASSIGNMENT}.md"
SOURCE = REPO / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _namespace(sources: dict) -> dict:
    """The notebook's setup cell and the given solution cells, run here (as grading does)."""
    nb = nbformat.read(SOURCE, as_version=4)
    ns = {"__name__": "__main__"}
    for cell in nb.cells:
        gid = cell.metadata["nbgrader"]["grade_id"]
        if cell.cell_type == "code" and (gid == "setup" or gid in sources):
            exec(compile(sources.get(gid, cell.source), gid, "exec"), ns)
    return ns


def _with_bug(name: str) -> dict:
    bug = next(b for b in m07.BUGS if b.name == name)
    sources = apply_bug(solution_sources(ASSIGNMENT), bug)
    return _namespace({bug.grade_id: sources[bug.grade_id]})


# ----------------------------------------------------------------------------- the setups
def test_grader_and_notebook_share_data_and_models():
    """cases.capstone (notebook) and the grader's procedures (which cannot import cases) make the same data,
    the same networks and the same pretrained model; the notebook's setup cell defines the same helpers."""
    for a, b in zip(proc.classification(11, 1, 64), capstone.classification(11, 1, 64)):
        assert torch.equal(a, b)
    for a, b in zip(proc.relabeled(11, 5, 64), capstone.relabeled(11, 5, 64)):
        assert torch.equal(a, b)
    for a, b in zip(proc.sequences(11, 2, 8, 25), capstone.sequences(11, 2, 8, 25)):
        assert torch.equal(a, b)
    x = proc.classification(3, 1, 32)[0]
    assert torch.equal(proc.pretrained(3).eval()(x), capstone.pretrained(3).eval()(x))
    ns = _namespace({})
    assert inspect.getsource(capstone.mlp) in nbformat.read(SOURCE, as_version=4).cells[1].source
    torch.manual_seed(0)
    a = ns["mlp"]()
    torch.manual_seed(0)
    b = proc.mlp()
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert checks._task_seed(5, 2) == capstone.task_seed(5, 2)


def test_notebook_shows_each_broken_setup_verbatim():
    text = "\n".join(c.source for c in nbformat.read(SOURCE, as_version=4).cells if c.cell_type == "markdown")
    for name, fn in capstone.BROKEN.items():
        assert inspect.getsource(fn).rstrip() in text, name
    assert inspect.getsource(capstone.BrokenSequenceClassifier).rstrip() in text


@pytest.mark.parametrize("name", capstone.NAMES)
def test_broken_setup_fails_and_reference_fix_clears_the_threshold(name):
    bad = capstone.evaluate(name, capstone.BROKEN[name], 0)
    good = capstone.evaluate(name, capstone.REFERENCE[name], 0)
    assert good["error"] is None and good["accuracy"] >= checks.THRESHOLDS[name]
    if name == "keras_port":       # accuracy alone does not separate them: the statistics do
        assert bad["gap"] > checks.GAP >= good["gap"]
    elif name == "dropout_before_bn":
        assert bad["gap_max"] > checks.DROP_GAP >= good["gap_max"]
    elif name in ("batch_of_one", "sequence_axis"):
        assert bad["error"] is not None
    else:
        assert bad["accuracy"] < checks.THRESHOLDS[name]
    if name == "finetune_bn":
        assert bad["changed"] and not good["changed"]


def test_reference_solution_gets_full_marks_in_seconds():
    import time
    t0 = time.perf_counter()
    result = grade_in_process(ASSIGNMENT, solution_sources(ASSIGNMENT))
    assert all(v[0] == v[1] for v in result.values()), {k: v[2] for k, v in result.items() if v[0] < v[1]}
    assert sum(v[1] for v in result.values()) == 62
    assert time.perf_counter() - t0 < 30


# ----------------------------------------------------------------------------- wrong fixes and messages
@pytest.mark.parametrize("bug,check,expected", [
    ("eval_no_grad_only", "check_fix_eval_mode", "Likely cause: the model ran in training mode"),
    ("one_eval_mode_during_training", "check_fix_batch_of_one", "Likely cause: the BN layers never updated"),
    ("one_still_batch_of_one_eps_raised", "check_fix_batch_of_one", "Expected more than 1 value per channel"),
    ("ft_lower_learning_rate", "check_fix_finetune_bn", "a smaller learning rate or more epochs does not"),
    ("ft_eval_before_train", "check_fix_finetune_bn", "running statistics changed during fine-tuning"),
    ("keras_eps_raised", "check_fix_keras_port", "PyTorch's momentum weighs the NEW batch statistic"),
    ("keras_gradient_clipping", "check_fix_keras_port", "Keras' momentum=0.99 weighs the OLD value"),
    ("seq_time_as_channels", "check_fix_sequence_axis", "running_mean should contain 25 elements not 10"),
    ("stale_not_recomputed", "check_fix_stale_stats", "still hold their initial statistics"),
    ("drop_statistics_recomputed_with_dropout_on", "check_fix_dropout_before_bn", "Place dropout after the last BN"),
])
def test_wrong_fixes_score_nothing_and_the_message_names_the_cause(bug, check, expected, capsys):
    ns = _with_bug(bug)
    grade_id = next(b.grade_id for b in m07.BUGS if b.name == bug)
    assert getattr(checks, check)(ns[grade_id], points=3) == 0.0
    assert expected in capsys.readouterr().out


def test_more_epochs_is_over_budget(capsys):
    """A fix that works but needs more optimizer steps than the broken setup loses the budget's point."""
    ns = _namespace({})
    exec(compile(solution_sources(ASSIGNMENT)["fix_keras_port"].replace("epochs=8", "epochs=12"), "fix", "exec"), ns)
    assert checks.check_fix_keras_port(ns["fix_keras_port"], points=3) == 2.0
    assert "768 optimizer steps, the budget is 512" in capsys.readouterr().out


def test_do_nothing_stubs_score_zero():
    stubs = {gid: f"def {gid}(*args):\n    raise NotImplementedError()\n" for gid in solution_sources(ASSIGNMENT)
             if gid != "quiz"}
    stubs["quiz"] = "quiz = {}\n"
    result = grade_in_process(ASSIGNMENT, {**solution_sources(ASSIGNMENT), **stubs})
    assert {k: v[0] for k, v in result.items()} == {k: 0.0 for k in result}, \
        {k: v[2] for k, v in result.items() if v[0] > 0}


def test_quiz_visible_test_never_reveals_answers(capsys):
    """Wrong answers of the right form pass the visible test; the hidden test's feedback names the section to
    reread, never the answer."""
    wrong = {k: {"float": 0.5, "bool": True, "choice": "d", "pair": (0.0, 0.0)}[v[0]] for k, v in checks.QUIZ.items()}
    assert checks.check_quiz(wrong, points=1) == 1.0
    capsys.readouterr()
    assert checks.check_quiz(wrong, points=12, hidden=True) == 0.0
    out = capsys.readouterr().out
    assert "see Module 01" in out and "see Module 03" in out
    assert "0.01" not in out and "(1.0, 3.0)" not in out and "1.0, 3.0" not in out   # q01's and q05's answers
    assert all("not the expected answer; see Module" in line for line in out.splitlines() if "FAIL" in line)
    bad_form = dict(wrong, q03_eval_uses="running statistics", q05_folded=1.0)
    assert checks.check_quiz(bad_form, points=1) == 0.0
    out = capsys.readouterr().out
    assert "q03_eval_uses should be one letter among a, b, c, d" in out and "q05_folded should be a pair" in out


def test_policy_keeps_torch_whole_and_denies_the_course():
    policy = course.policy(ASSIGNMENT)
    assert {"bnlib", "autograder", "nbgrader", "cases"} <= set(policy.deny)
    assert "torch" not in policy.deny and policy.torch_normalization and "torch" in policy.preload


# ----------------------------------------------------------------------------- the page
def test_page_quotes_what_the_notebook_measured():
    from cases import report
    results = json.loads(PAGE.with_suffix(".results.json").read_text())
    assert report.render(results) in PAGE.read_text()
    assert results["run"]["seconds"] < 240, "the notebook must run top to bottom in under 4 minutes"
    experiments = {r["experiment"] for r in results["rows"]}
    assert {"all setups (5 seeds)", *capstone.NAMES} <= experiments
    for name in capstone.NAMES:
        assert "**Checks.**" in PAGE.read_text() and f"`fix_{name}(" in PAGE.read_text()


@pytest.mark.slow
def test_module07_through_nbgrader(tmp_path):
    """Every Module 07 bug loses points in-process (tests/test_bank.py) and here, through the nbgrader
    pipeline (sandboxed kernel, trusted checks), packed one per graded function in each submission, with the
    points course/grading.md gives it; the reference and a correct variant get full marks, the release
    notebook 0."""
    from test_grading_e2e import auto_total, bugs_off_policy, grade_packed   # tests/ is on sys.path
    table, packs = grade_packed(tmp_path, ASSIGNMENT, m07)
    top = auto_total(table["reference"])
    assert top == 62.0
    for name in m07.CORRECT_VARIANTS:
        assert auto_total(table[f"variant_{name}"]) == top, name
    assert table["blank"]["total"] == 0.0
    assert sum(map(len, packs)) == len(m07.BUGS)
    assert not bugs_off_policy(table, packs)


def fix_keras_port(X, y, seed):            # a "fix" that calls the course's reference (a global name)
    return capstone.reference_keras_port(X, y, seed)


def test_delegating_to_the_reference_fixes_earns_nothing(capsys):
    """cases is denied in the grading kernel; in the learner's own notebook the check says so up front."""
    assert checks.check_fix_keras_port(fix_keras_port, points=3) == 0.0
    assert "it uses capstone (cases)" in capsys.readouterr().out

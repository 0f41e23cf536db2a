"""Module 04 (case study: vision): grading policy, do-nothing stubs, the kernel policy, the module page,
and (slow) the assignment through nbgrader."""
import importlib
import json
from pathlib import Path

import pytest

from autograder import course
from autograder.bank import grade_in_process, m04, solution_sources
from autograder.config import REPO

ASSIGNMENT = m04.ASSIGNMENT
PAGE = REPO / "course" / "modules" / f"{ASSIGNMENT}.md"

STUBS = {
    "fold_batchnorm": '''
def fold_batchnorm(weight, bias, gamma, beta, running_mean, running_var, eps=1e-5):
    return weight.copy(), (beta.copy() if bias is None else bias.copy())
''',
    "ResidualBlock": '''
class ResidualBlock(nn.Module):
    def __init__(self, channels, zero_init_residual=True):
        super().__init__()

    def forward(self, x):
        return torch.relu(x)
''',
    "adapt_bn_statistics": '''
def adapt_bn_statistics(model, batches, prior_strength):
    return model
''',
}


def test_do_nothing_stubs_score_zero():
    """Functions that do nothing (return their inputs, ReLU(x), leave the model alone) earn nothing: every
    property they share with a right answer requires the main behaviour (autograder/checks/__init__.py)."""
    result = grade_in_process(ASSIGNMENT, {**solution_sources(ASSIGNMENT), **STUBS})
    assert {k: v[0] for k, v in result.items()} == {k: 0.0 for k in result}, \
        {k: v[2] for k, v in result.items() if v[0] > 0}


def test_a_stub_with_the_right_layers_but_no_shortcut_scores_zero():
    block = '''
class ResidualBlock(nn.Module):
    def __init__(self, channels, zero_init_residual=True):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x):
        self.bn2(self.conv2(self.bn1(self.conv1(x))))
        return torch.relu(x)
'''
    result = grade_in_process(ASSIGNMENT, {**solution_sources(ASSIGNMENT), "ResidualBlock": block})
    assert result["test_ResidualBlock"][0] == 0 and result["test_ResidualBlock_hidden"][0] == 0


def test_visible_tests_explain_what_they_checked(capsys):
    import numpy as np
    from autograder.checks.m04 import check_fold_batchnorm

    def eps_outside(weight, bias, gamma, beta, running_mean, running_var, eps=1e-5):
        s = gamma / (np.sqrt(running_var) + eps)
        b = np.zeros_like(s) if bias is None else bias
        return weight * s.reshape((-1,) + (1,) * (weight.ndim - 1)), (b - running_mean) * s + beta

    score = check_fold_batchnorm(eps_outside, points=2)
    out = capsys.readouterr().out
    assert 0 < score < 2 and "eps belongs inside the square root" in out and "pass  folding works" in out


def test_policy_hides_torch_folding_and_keeps_bn():
    policy = course.policy(ASSIGNMENT)
    assert {"bnlib", "autograder", "nbgrader", "cases"} <= set(policy.deny)
    assert "torch" not in policy.deny and policy.torch_normalization and "torch" in policy.preload
    for target in policy.hide:      # every hidden answer exists in this torch (a typo would hide nothing)
        module, _, attr = target.partition(":")
        assert hasattr(importlib.import_module(module), attr), target
    names = {t.partition(":")[2] for t in policy.hide}
    assert {"fuse_conv_bn_weights", "fuse_conv_bn_eval", "fuse_linear_bn_weights", "fuse_linear_bn_eval"} <= names


def test_page_quotes_what_the_notebook_measured():
    """The page's results block is the rendering of the results file that `python -m cases.report`
    wrote by running the solution notebook: numbers are generated, never typed."""
    from cases import report
    data = json.loads(PAGE.with_suffix(".results.json").read_text())
    text = PAGE.read_text()
    assert report.render(data) in text
    assert data["run"]["seconds"] < 240, "the notebook must run top to bottom in under 4 minutes"
    experiments = {r["experiment"] for r in data["rows"]}
    assert {"placement", "learning rate and init scale", "folding", "zero-init residual gamma",
            "covariate shift (severity 3)", "fine-tuning at batch 2"} <= experiments
    source = "\n".join(c["source"] if isinstance(c["source"], str) else "".join(c["source"])
                       for c in json.loads(next((REPO / "solutions" / ASSIGNMENT).glob("*.ipynb")).read_text())["cells"])
    for row in data["rows"]:    # every experiment that produced a result is still in the notebook
        assert f'"{row["experiment"]}"' in source, row["experiment"]


def test_experiments_import_cases_as_a_package():
    """The visible tests' guard reads the names a learner's function uses (e.g. ``bn.train()`` uses
    ``train``); a notebook global ``train`` bound to ``cases.train`` would make it look like delegation.
    So experiment cells keep cases' modules under ``cases.``."""
    import ast
    import nbformat
    nb = nbformat.read(next((REPO / "solutions" / ASSIGNMENT).glob("*.ipynb")), as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            for node in ast.walk(ast.parse(cell.source)):
                if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "cases":
                    raise AssertionError(f"{cell.metadata['nbgrader']['grade_id']}: from {node.module} import ...")


@pytest.mark.slow
def test_module04_through_nbgrader(tmp_path):
    """Every Module 04 bug loses points in-process (tests/test_bank.py) and here, through the nbgrader
    pipeline (sandboxed kernel, trusted checks), packed one per graded function in each submission, with the
    points course/grading.md gives it; the reference and a correct variant get full marks, the release
    notebook 0."""
    from test_grading_e2e import auto_total, bugs_off_policy, grade_packed   # tests/ is on sys.path
    table, packs = grade_packed(tmp_path, ASSIGNMENT, m04)
    top = auto_total(table["reference"])
    assert top == 18.0
    for name in m04.CORRECT_VARIANTS:
        assert auto_total(table[f"variant_{name}"]) == top, name
    assert table["blank"]["total"] == 0.0
    assert sum(map(len, packs)) == len(m04.BUGS)
    assert not bugs_off_policy(table, packs)


@pytest.mark.slow
def test_grading_kernel_refuses_torch_folding_but_runs_bn():
    """In Module 04's grading kernel torch's BN layers work, and every ready-made folding path refuses:
    the fusion helpers under each name they are imported by, torch.ao's fuse_modules, torch.fx's fuse and
    torch.jit.freeze; `cases` (the reference implementations) is absent."""
    import sys
    if not sys.platform.startswith("linux"):
        pytest.skip("bubblewrap sandboxes are Linux-only")
    from test_sandbox import Kernel   # tests/ is on sys.path under pytest
    k = Kernel(ASSIGNMENT)
    try:
        out, err, _ = k.run("import torch, torch.nn as nn\nprint(nn.BatchNorm2d(3)(torch.randn(2, 3, 4, 4)).shape)")
        assert err is None and "torch.Size([2, 3, 4, 4])" in out
        conv_bn = "m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)).eval()\n"
        for code in ["from torch.nn.utils.fusion import fuse_conv_bn_eval\nfuse_conv_bn_eval(m[0], m[1])",
                     "from torch.nn.utils import fuse_conv_bn_weights\nfuse_conv_bn_weights(*[torch.ones(2)] * 7)",
                     "from torch.nn.utils import fuse_linear_bn_weights\nfuse_linear_bn_weights(*[torch.ones(2)] * 7)",
                     "import torch.ao.quantization as q\nq.fuse_modules(m, [['0', '1']])",
                     "import torch.fx.experimental.optimization as o\no.fuse(m)",
                     "torch.jit.freeze(torch.jit.script(m))"]:
            _, err, msg = k.run(conv_bn + code)
            assert err == "RuntimeError" and "not available while this notebook is graded" in msg, (code, err, msg)
        _, err, _ = k.run("import cases")
        assert err == "ImportError"
    finally:
        k.close()

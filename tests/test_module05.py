"""Module 05 (case study: NLP): the cases.text helpers, do-nothing stubs, the messages, the kernel policy, the
module page, and (slow) the assignment through nbgrader."""
import json
import types

import numpy as np
import pytest
import torch

import bnlib
from autograder import course
from autograder.bank import grade_in_process, m05, solution_sources
from autograder.config import REPO
from cases import data, text

ASSIGNMENT = m05.ASSIGNMENT


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one torch thread (a loaded 2-core machine makes torch's pool many times slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
PAGE = REPO / "course" / "modules" / f"{ASSIGNMENT}.md"

STUBS = {
    "masked_batchnorm_forward": '''
def masked_batchnorm_forward(x, mask, gamma, beta, running_mean, running_var, training, momentum=0.1, eps=1e-5):
    return np.where(mask[..., None], x, 0), None
''',
    "masked_batchnorm_backward": '''
def masked_batchnorm_backward(dout, cache):
    return dout.copy(), np.zeros(dout.shape[-1]), np.zeros(dout.shape[-1])
''',
    "LayerNormLSTMCell": '''
class LayerNormLSTMCell(nn.Module):
    def __init__(self, input_size, hidden_size):
        super().__init__()
        H = hidden_size
        self.weight_ih = nn.Parameter(torch.zeros(4 * H, input_size))
        self.weight_hh = nn.Parameter(torch.zeros(4 * H, H))
        self.bias = nn.Parameter(torch.zeros(4 * H))
        for name, size in (("ih", 4 * H), ("hh", 4 * H), ("c", H)):
            setattr(self, f"gamma_{name}", nn.Parameter(torch.ones(size)))
            setattr(self, f"beta_{name}", nn.Parameter(torch.zeros(size)))

    def forward(self, x, state):
        return state
''',
}


def test_do_nothing_stubs_score_zero():
    """Functions that do nothing (copy their input, return the state unchanged with the right parameters)
    earn nothing: every property they share with a right answer requires the main behaviour."""
    result = grade_in_process(ASSIGNMENT, {**solution_sources(ASSIGNMENT), **STUBS})
    assert {k: v[0] for k, v in result.items()} == {k: 0.0 for k in result}, \
        {k: v[2] for k, v in result.items() if v[0] > 0}


def test_visible_tests_name_the_mistake(capsys):
    from autograder.checks.m05 import check_masked_batchnorm_forward

    def padding_counted(x, mask, gamma, beta, running_mean, running_var, training, momentum=0.1, eps=1e-5):
        flat = x.reshape(-1, x.shape[-1])
        mu, var = flat.mean(0), flat.var(0)
        running_mean[:] = (1 - momentum) * running_mean + momentum * mu
        running_var[:] = (1 - momentum) * running_var + momentum * var * len(flat) / (len(flat) - 1)
        return np.where(mask[..., None], (x - mu) / np.sqrt(var + eps) * gamma + beta, 0), None

    assert check_masked_batchnorm_forward(padding_counted, points=2) == 0
    out = capsys.readouterr().out
    assert "the statistics include the padded positions" in out and "No points yet" in out


def test_torch_layer_norm_earns_nothing_but_an_own_helper_named_layer_norm_is_fine(capsys):
    from autograder.checks.m05 import check_layernorm_lstm_cell
    ns = {}
    exec(solution_sources(ASSIGNMENT)["LayerNormLSTMCell"].replace(
        "mu = z.mean(dim=-1, keepdim=True)\n    var = ((z - mu) ** 2).mean(dim=-1, keepdim=True)\n"
        "    return (z - mu) / torch.sqrt(var + eps) * gamma + beta",
        "return F.layer_norm(z, z.shape[-1:], gamma, beta, eps)"),
        {"torch": torch, "nn": torch.nn, "F": torch.nn.functional, "__name__": "__main__"}, ns)
    assert check_layernorm_lstm_cell(ns["LayerNormLSTMCell"], points=2) == 0
    assert "layer_norm" in capsys.readouterr().out


def test_policy_switches_off_torch_normalization_and_the_course_packages():
    policy = course.policy(ASSIGNMENT)
    assert {"bnlib", "autograder", "nbgrader", "cases"} <= set(policy.deny)
    assert "torch" not in policy.deny and not policy.torch_normalization and "torch" in policy.preload
    assert course.find(ASSIGNMENT).min_bank == 15 and len(m05.BUGS) >= 15
    # nothing ready-made to hide: torch has no layer-normalized LSTM cell and no masked batch/layer norm
    assert not any("layernorm" in n.lower() and "lstm" in n.lower() for n in dir(torch.nn))
    assert not any("norm" in n.lower() and "batch" in n.lower() for n in dir(torch.masked))


# ----------------------------------------------------------------------------- cases.text
def test_names_corpus_is_padded_and_masked():
    words = text.census_names("first")
    assert len(words) == 5163 and all(w.isalpha() and w.isupper() for w in words)
    corpus = data.load("names")
    assert len(corpus.train) + len(corpus.val) == 5163 and not set(corpus.words_train) & set(corpus.words_val)
    s = corpus.train
    assert s.inputs.shape == s.targets.shape == s.mask.shape and s.mask.dtype == torch.bool
    row = 3
    word = corpus.words_train[row]
    assert text.decode(s.inputs[row]) == "." + word and text.decode(s.targets[row]) == word + "."
    assert int(s.mask[row].sum()) == len(word) + 1 and not s.mask[row, len(word) + 1:].any()
    b = s.batch(torch.arange(8), length=20)
    assert b.inputs.shape == (8, 20) and (b.inputs[~b.mask] == text.PAD).all()
    assert len(data.load("names", which="last", limit=100).train) == 90


def test_step_batch_norm_uses_the_real_tokens_of_each_step_and_recomputes_them():
    torch.manual_seed(0)
    bn = text.StepBatchNorm(3, max_steps=2, gamma_init=1.0, momentum=1.0)
    z, mask = torch.randn(6, 3) * 2 + 5, torch.tensor([True, True, True, False, False, True])
    z[~mask] = 1e3
    y = bn(z, 0, mask)
    real = z[mask]
    assert torch.allclose(y[mask], (real - real.mean(0)) / torch.sqrt(real.var(0, unbiased=False) + 1e-5), atol=1e-5)
    assert torch.allclose(bn.running_var[0], real.var(0)) and torch.all(bn.running_mean[1] == 0)
    bn.eval()
    assert torch.equal(bn(z, 5, mask), (z - bn.running_mean[1]) / torch.sqrt(bn.running_var[1] + 1e-5))
    lm = text.CharLM("bn", hidden=8, max_steps=12, seed=0)
    corpus = data.load("names", limit=200)
    text.recompute_step_statistics(lm.eval(), corpus.train)
    assert not lm.training and not lm.cell.bn_ih.training and lm.cell.bn_ih.momentum == 0.1
    e = lm.embed(corpus.train.inputs[:, 0]) @ lm.cell.weight_ih.T        # step 0: the same '.' for every name
    assert torch.allclose(lm.cell.bn_ih.running_mean[0], e.mean(0), atol=1e-6)


def test_masked_batch_norm_layers_match_bnlib_and_each_other():
    torch.manual_seed(1)
    x = torch.randn(4, 5, 3) * 3 + 2
    mask = torch.arange(5)[None, :] < torch.tensor([5, 2, 4, 1])[:, None]
    dy = torch.randn(4, 5, 3)
    layer, numpy_layer = text.MaskedBatchNorm(3), text.NumpyMaskedBatchNorm(3)
    outs = []
    for m in (layer, numpy_layer):
        xi = x.clone().requires_grad_()
        y = m(xi, mask)
        y.backward(dy)
        outs.append((y.detach(), xi.grad, m.weight.grad, m.running_var.clone()))
    ref, saved = bnlib.masked_batch_norm_forward(x.double(), mask, weight=torch.ones(3, dtype=torch.float64),
                                                 bias=torch.zeros(3, dtype=torch.float64), training=True)
    gref = bnlib.masked_batch_norm_backward(dy.double(), saved)
    for y, dx, dw, rv in outs:
        assert torch.allclose(y.double(), ref, atol=1e-5) and torch.all(y[~mask] == 0)
        assert torch.allclose(dx.double(), gref.dx, atol=1e-5) and torch.allclose(dw.double(), gref.dweight, atol=1e-4)
    assert torch.allclose(outs[0][3], outs[1][3])
    unmasked = text.MaskedBatchNorm(3, use_mask=False)(x, mask)
    flat = x.reshape(-1, 3)
    assert torch.allclose(unmasked.reshape(-1, 3), (flat - flat.mean(0)) / torch.sqrt(flat.var(0, unbiased=False) + 1e-5),
                          atol=1e-5)


def test_models_run_and_score_per_position():
    corpus = data.load("names", limit=300)
    for model in (text.CharLM("lstm", hidden=8), text.CharLM("ln", hidden=8), text.CharLM("bn", hidden=8),
                  text.TinyTransformer("masked_bn", d=16, heads=2, layers=1),
                  text.PaddedBNLM(text.NumpyMaskedBatchNorm(16), hidden=8)):
        hist = text.fit_lm(model, corpus.train, epochs=1, batch_size=64)
        assert len(hist.losses) == len(corpus.train) // 64 and not hist.diverged
        sums, counts = text.position_losses(model, corpus.val, "batch")
        assert counts.sum() == int(corpus.val.mask.sum()) and np.all(sums >= 0)
    ln = text.CharLM("ln", hidden=8)
    one, many = text.encode(["ANNA"]), text.encode(["ANNA", "BOB", "CHRISTINE"])
    assert abs(text.sequence_losses(ln, one)[0] - text.sequence_losses(ln, many)[0]) < 1e-6


def test_checked_functions_fall_back_to_the_references(capsys):
    fwd, bwd = text.checked_masked_batchnorm(text.reference_masked_batchnorm_forward,
                                             text.reference_masked_batchnorm_backward)
    assert fwd is text.reference_masked_batchnorm_forward and "Using your" in capsys.readouterr().out

    def wrong_backward(dout, cache):
        return tuple(-g for g in text.reference_masked_batchnorm_backward(dout, cache))
    fwd, bwd = text.checked_masked_batchnorm(text.reference_masked_batchnorm_forward, wrong_backward)
    assert bwd is text.reference_masked_batchnorm_backward
    assert "not correct yet (dx differs" in capsys.readouterr().out
    assert text.checked_ln_cell(text.LayerNormLSTMCell) is text.LayerNormLSTMCell

    class NoLN(text.LayerNormLSTMCell):
        def forward(self, x, state):
            h, c = super().forward(x, state)
            return torch.tanh(c), c
    assert text.checked_ln_cell(NoLN) is text.LayerNormLSTMCell
    assert "h after 3 steps differs" in capsys.readouterr().out


def test_batch_fluctuation():
    torch.manual_seed(0)
    small = text.batch_fluctuation([torch.randn(16, 4) for _ in range(30)])
    large = text.batch_fluctuation([torch.randn(1024, 4) for _ in range(30)])
    assert np.median(small["mean"]) > 4 * np.median(large["mean"]) and list(large["m"][:2]) == [1024, 1024]


def test_experiment_cells_bind_no_global_named_like_a_cases_module():
    """The visible tests' delegation guard reads the names a learner's code uses (attributes included: `p.data`,
    `model.train()`) against the notebook's globals; a global `data` or `train` bound to a cases module would
    make honest code look like it calls the course's package once the experiments have run (see Module 04)."""
    import ast

    import cases
    submodules = {n for n in dir(cases) if isinstance(getattr(cases, n), types.ModuleType)}
    nb = json.loads(next((REPO / "solutions" / ASSIGNMENT).glob("*.ipynb")).read_text())
    bound = set()
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        tree = ast.parse("".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"])
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                bound |= {(a.asname or a.name).split(".")[0] for a in node.names}
            elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                bound.add(node.name)
            elif isinstance(node, ast.Assign):
                bound |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    assert {"data", "text", "train"} <= submodules and not bound & submodules, bound & submodules


# ----------------------------------------------------------------------------- the page
def test_page_quotes_what_the_notebook_measured():
    """The page's results block is the rendering of the results file that `python -m cases.report` wrote
    by running the solution notebook: numbers are generated, never typed."""
    from cases import report
    data_ = json.loads(PAGE.with_suffix(".results.json").read_text())
    assert report.render(data_) in PAGE.read_text()
    assert data_["run"]["seconds"] < 240, "the notebook must run top to bottom in under 4 minutes"
    experiments = {r["experiment"] for r in data_["rows"]}
    assert {"character LM", "BN-LSTM at inference", "padding pollution", "transformer on last names",
            "batch-statistic fluctuation", "batch of one"} <= experiments
    nb = json.loads(next((REPO / "solutions" / ASSIGNMENT).glob("*.ipynb")).read_text())
    source = "\n".join(c["source"] if isinstance(c["source"], str) else "".join(c["source"]) for c in nb["cells"])
    for row in data_["rows"]:
        assert f'"{row["experiment"]}"' in source, row["experiment"]


@pytest.mark.slow
def test_module05_through_nbgrader(tmp_path):
    """Every Module 05 bug loses points in-process (tests/test_bank.py) and here, through the nbgrader
    pipeline (sandboxed kernel, trusted checks), packed one per graded function in each submission, with the
    points course/grading.md gives it; the reference and a correct variant get full marks, the release
    notebook 0."""
    from test_grading_e2e import auto_total, bugs_off_policy, grade_packed   # tests/ is on sys.path
    table, packs = grade_packed(tmp_path, ASSIGNMENT, m05)
    top = auto_total(table["reference"])
    assert top == 16.0
    for name in m05.CORRECT_VARIANTS:
        assert auto_total(table[f"variant_{name}"]) == top, name
    assert table["blank"]["total"] == 0.0
    assert sum(map(len, packs)) == len(m05.BUGS)
    assert not bugs_off_policy(table, packs)

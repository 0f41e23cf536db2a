"""cases/: the case-study helpers (data, corruptions, models, training, BN tools, checks, plots, report)."""
import copy
import math

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import bnlib
from cases import bn, corruptions, data, models, plots, report, runtime, train, verify

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def digits():
    return data.digits()


# ----------------------------------------------------------------------------- runtime
def test_threads_seeds_and_runs_over_seeds():
    assert runtime.limit_threads(1) == 1 and torch.get_num_threads() == 1
    runtime.seed_all(3)
    a = (torch.rand(3), np.random.rand(3))
    g = runtime.seed_all(3)
    assert torch.equal(a[0], torch.rand(3)) and np.array_equal(a[1], np.random.rand(3))
    assert torch.equal(torch.rand(2, generator=g), torch.rand(2, generator=torch.Generator().manual_seed(3)))
    assert runtime.over_seeds(lambda s: s * 2, seeds=(0, 1, 2)) == [0, 2, 4]
    assert runtime.median_time(lambda: None, repeats=3, warmup=0) >= 0
    with runtime.timer() as t:
        pass
    assert 0 <= t() < 1


# ----------------------------------------------------------------------------- data
def test_digits_split(digits):
    assert digits.x_train.shape == (1437, 1, 8, 8) and digits.x_test.shape == (360, 1, 8, 8)
    assert digits.x_train.dtype == torch.float32 and digits.y_train.dtype == torch.int64
    assert float(digits.x_train.min()) == 0.0 and float(digits.x_train.max()) == 1.0
    again = data.load("digits")
    assert torch.equal(again.x_test, digits.x_test) and torch.equal(again.y_test, digits.y_test)
    low = digits.classes(range(5))
    high = digits.classes([5, 6, 7, 8, 9], relabel=True)
    assert set(low.y_train.tolist()) == {0, 1, 2, 3, 4} and set(high.y_test.tolist()) == {0, 1, 2, 3, 4}
    assert len(low.x_train) + len(high.x_train) == 1437
    with pytest.raises(KeyError):
        data.load("imagenet")


def test_batches_drop_the_last_incomplete_one():
    x = torch.zeros(10)
    assert [len(b) for b in data.batches(x, 4)] == [4, 4]
    assert [len(b) for b in data.batches(x, 4, drop_last=False)] == [4, 4, 2]
    shuffled = torch.cat(data.batches(x, 5, torch.Generator().manual_seed(0)))
    assert sorted(shuffled.tolist()) == list(range(10))


# ----------------------------------------------------------------------------- corruptions
@pytest.mark.parametrize("name", sorted(corruptions.CORRUPTIONS))
def test_corruptions_keep_shape_range_and_input(name, digits):
    x = digits.x_test[:20].numpy().copy()
    x0 = x.copy()
    out = corruptions.corrupt(x, name, severity=3, seed=1)
    assert out.shape == x.shape and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1 and np.array_equal(x, x0)
    assert not np.allclose(out, x)
    assert np.array_equal(out, corruptions.corrupt(x, name, 3, seed=1))
    assert isinstance(corruptions.corrupt(digits.x_test[:2], name), torch.Tensor)


def test_corruption_definitions():
    x = np.full((2, 1, 4, 4), 0.25, np.float32)
    x[:, :, 0, 0] = 0.75
    assert np.allclose(corruptions.brightness(x, 2), np.clip(x + 0.2, 0, 1))
    c = corruptions.contrast(x, 1)
    assert np.allclose(c.mean(axis=(1, 2, 3)), x.mean(axis=(1, 2, 3)), atol=1e-6)
    assert np.allclose(c - c.mean(), (x - x.mean()) * 0.4, atol=1e-6)
    noise = corruptions.gaussian_noise(np.full((1, 64, 64), 0.5, np.float32), 1, seed=0)
    assert abs(noise.std() - 0.08) < 0.005 and abs(noise.mean() - 0.5) < 0.005
    blurred = corruptions.gaussian_blur(x, 5)
    assert abs(blurred.sum() - x.sum()) < 1e-4 and blurred.max() < 0.75
    with pytest.raises(ValueError):
        corruptions.brightness(x, 6)
    with pytest.raises(ValueError):
        corruptions.contrast(np.zeros(5), 1)


# ----------------------------------------------------------------------------- models
def test_conv_net_placements():
    x = torch.rand(3, 1, 8, 8)
    for placement in models.NORM_PLACEMENTS:
        net = models.conv_net(placement, widths=(4, 8, 8), seed=0)
        assert net(x).shape == (3, 10)
        convs = [m for m in net if isinstance(m, nn.Conv2d)]
        assert all((c.bias is None) == (placement == "before") for c in convs)
        assert len(models.bn_layers(net)) == (0 if placement == "none" else 3)
    seq = models.conv_net("after", widths=(4, 8, 8))
    assert [type(m).__name__ for m in seq[:3]] == ["Conv2d", "ReLU", "BatchNorm2d"]
    a, b = models.conv_net(seed=1), models.conv_net(seed=1, init_scale=3.0)
    assert torch.allclose(b[0].weight, 3 * a[0].weight)
    w = models.conv_net(widths=(64, 64, 64))[3].weight
    assert abs(float(w.detach().std()) - math.sqrt(2 / (64 * 9))) < 0.01         # He initialization
    with pytest.raises(ValueError):
        models.conv_net("inside")


def test_reference_residual_block():
    block = models.ResidualBlock(4)
    assert models.count_parameters(block) == 18 * 16 + 4 * 4
    assert all(m.bias is None for m in block.modules() if isinstance(m, nn.Conv2d))
    x = torch.randn(5, 4, 6, 6)
    assert torch.equal(block(x), torch.relu(x))                       # zero-init gamma: ReLU(x) at init
    plain = models.ResidualBlock(4, zero_init_residual=False)
    assert torch.all(plain.bn2.weight == 1) and not torch.equal(plain(x), torch.relu(x))
    net = models.residual_net(depth=2, width=4)
    assert net(torch.rand(2, 1, 8, 8)).shape == (2, 10)


# ----------------------------------------------------------------------------- BN tools
def _bn_case(rng, wshape, bias=True, dtype=np.float64):
    c = wshape[0]
    return [rng.normal(size=wshape).astype(dtype), rng.normal(size=c).astype(dtype) if bias else None,
            rng.normal(1, 0.3, c).astype(dtype), rng.normal(size=c).astype(dtype),
            rng.normal(size=c).astype(dtype), rng.uniform(0.5, 2, c).astype(dtype)]


@pytest.mark.parametrize("wshape,bias", [((6, 3, 3, 3), True), ((6, 3, 3, 3), False), ((5, 7), True), ((5, 7), False)])
def test_fold_batchnorm_matches_bn_in_eval_mode(wshape, bias):
    rng = np.random.default_rng(0)
    args = _bn_case(rng, wshape, bias)
    copies = [None if a is None else a.copy() for a in args]
    wf, bf = bn.fold_batchnorm(*args, eps=1e-3)
    assert all(a is None or np.array_equal(a, c) for a, c in zip(args, copies))
    w, b, g, be, rm, rv = [None if a is None else torch.tensor(a) for a in args]
    x = torch.tensor(rng.normal(size=(4,) + wshape[1:2] + ((5, 5) if len(wshape) == 4 else ())))
    z = F.conv2d(x, w, b, padding=1) if len(wshape) == 4 else F.linear(x, w, b)
    expected = F.batch_norm(z, rm, rv, g, be, False, 0.0, 1e-3)
    got = F.conv2d(x, torch.tensor(wf), torch.tensor(bf), padding=1) if len(wshape) == 4 else F.linear(x, torch.tensor(wf), torch.tensor(bf))
    assert torch.allclose(got, expected, rtol=0, atol=1e-10)
    if len(wshape) == 2:   # bnlib's eval-mode forward, the new keyword form
        y, _ = bnlib.batch_norm_forward(z.numpy(), weight=args[2], bias=args[3], running_mean=args[4],
                                        running_var=args[5], training=False, eps=1e-3)
        assert np.allclose(got.numpy(), y, rtol=0, atol=1e-10)


def test_fold_keeps_float32():
    wf, bf = bn.fold_batchnorm(*_bn_case(np.random.default_rng(1), (4, 2, 3, 3), True, np.float32))
    assert wf.dtype == np.float32 and bf.dtype == np.float32


def test_fold_model_parity_and_copy():
    net = models.conv_net(widths=(4, 8, 8), seed=0)
    train.fit(net, torch.rand(64, 1, 8, 8), torch.randint(0, 10, (64,)), epochs=1, batch_size=16)
    net.eval()
    folded = bn.fold_model(net)
    assert not models.bn_layers(folded) and len(models.bn_layers(net)) == 3
    x = torch.rand(16, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(folded(x), net(x), atol=1e-5)
    after = bn.fold_model(models.conv_net("after", widths=(4, 8, 8)))
    assert len(models.bn_layers(after)) == 3                 # BN after ReLU cannot be folded into the conv


def _eval_model(seed=0):
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(),
                      nn.Linear(3 * 16, 5), nn.BatchNorm1d(5)).double()
    with torch.no_grad():
        for layer in models.bn_layers(m):
            layer.running_mean.normal_()
            layer.running_var.uniform_(0.5, 2)
    return m.eval()


def test_adapt_bn_statistics_formula():
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randn(6, 2, 4, 4, generator=gen, dtype=torch.float64) * 3 + 2 for _ in range(3)]
    source = _eval_model()
    target = copy.deepcopy(source)
    for layer in models.bn_layers(target):       # torch's own recomputation: momentum=None, train mode
        layer.reset_running_stats()
        layer.momentum = None
    target.train()
    with torch.no_grad():
        for b in batches:
            target(b)
    for strength, w in ((0.0, 0.0), (18.0, 0.5), (math.inf, 1.0)):
        m = _eval_model()
        weights = [p.detach().clone() for p in m.parameters()]
        bn.adapt_bn_statistics(m, batches, strength)
        assert not m.training and all(not x.training for x in m.modules())
        assert all(torch.equal(p, q) and p.grad is None for p, q in zip(m.parameters(), weights))
        for got, s, t in zip(models.bn_layers(m), models.bn_layers(source), models.bn_layers(target)):
            assert torch.allclose(got.running_mean, w * s.running_mean + (1 - w) * t.running_mean, atol=1e-12)
            assert torch.allclose(got.running_var, w * s.running_var + (1 - w) * t.running_var, atol=1e-12)
            assert got.momentum == 0.1 and int(got.num_batches_tracked) == 0
    with pytest.raises(ValueError):
        bn.adapt_bn_statistics(_eval_model(), batches, -1)


def test_freeze_bn_and_drift():
    m = _eval_model()
    before = bn.statistics(m)
    bn.freeze_bn(m)
    assert m.training and all(not x.training for x in models.bn_layers(m))
    m(torch.randn(4, 2, 4, 4, dtype=torch.float64))
    assert bn.statistics_drift(before, bn.statistics(m)) == 0.0
    m.train()
    m(torch.randn(4, 2, 4, 4, dtype=torch.float64))
    assert bn.statistics_drift(before, bn.statistics(m)) > 0


# ----------------------------------------------------------------------------- training
def test_fit_accuracy_and_prediction_time_bn(digits):
    runtime.limit_threads(1)
    net = models.conv_net(widths=(4, 8, 8), seed=0)
    hist = train.fit(net, digits.x_train[:256], digits.y_train[:256], epochs=3, lr=0.05, batch_size=32)
    assert len(hist.losses) == 24 and not hist.diverged and np.mean(hist.losses[-4:]) < np.mean(hist.losses[:4])
    assert len(hist.smoothed(5)) == 20
    net.train()
    acc = train.accuracy(net, digits.x_test, digits.y_test, batch_size=100)
    net.eval()
    with torch.no_grad():
        expected = float((net(digits.x_test).argmax(1) == digits.y_test).double().mean())
    assert abs(acc - expected) < 1e-12
    net.train()
    stats = bn.statistics(net)
    acc_b = train.accuracy_with_batch_statistics(net, digits.x_test, digits.y_test, batch_size=64)
    assert net.training and 0 < acc_b <= 1.0 and bn.statistics_drift(stats, bn.statistics(net)) == 0.0
    nan_loss = train.fit(net, digits.x_train[:64], digits.y_train[:64], epochs=3, batch_size=32,
                         loss_fn=lambda m, x, y: m(x).sum() * float("nan"))
    assert nan_loss.diverged and len(nan_loss.losses) == 1


# ----------------------------------------------------------------------------- verify
def test_checked_uses_the_reference_for_wrong_code(capsys):
    def eps_outside(weight, bias, gamma, beta, running_mean, running_var, eps=1e-5):
        s = gamma / (np.sqrt(running_var) + eps)
        b = 0 if bias is None else bias
        return weight * s.reshape((-1,) + (1,) * (weight.ndim - 1)), (b - running_mean) * s + beta

    def in_place(weight, bias, gamma, beta, running_mean, running_var, eps=1e-5):
        s = gamma / np.sqrt(running_var + eps)
        weight *= s.reshape((-1,) + (1,) * (weight.ndim - 1))
        return weight, ((0 if bias is None else bias) - running_mean) * s + beta

    assert verify.checked_fold(bn.fold_batchnorm) is bn.fold_batchnorm
    assert verify.checked_fold(eps_outside) is bn.fold_batchnorm
    assert verify.checked_fold(in_place) is bn.fold_batchnorm
    assert verify.checked(None, bn.fold_batchnorm, verify.probe_fold, "fold_batchnorm") is bn.fold_batchnorm
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Using your fold_batchnorm")
    assert "not correct yet" in out[1] and "relative error" in out[1] and "cases.bn.fold_batchnorm" in out[1]
    assert "modified its inputs" in out[2] and "not defined" in out[3]


def test_checked_block_and_adapt(capsys):
    class ReluBeforeAdd(models.ResidualBlock):
        def forward(self, x):
            return torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))) + x

    class ModeNotRestored:
        pass

    def adapt_leaves_train_mode(model, batches, prior_strength):
        bn.adapt_bn_statistics(model, batches, prior_strength)
        model.train()

    assert verify.checked_block(models.ResidualBlock) is models.ResidualBlock
    assert verify.checked_block(ReluBeforeAdd) is models.ResidualBlock
    assert verify.checked_adapt(bn.adapt_bn_statistics) is bn.adapt_bn_statistics
    assert verify.checked_adapt(adapt_leaves_train_mode) is bn.adapt_bn_statistics
    out = capsys.readouterr().out
    assert "training-mode output differs" in out and "modes were not restored" in out


# ----------------------------------------------------------------------------- plots and report
def test_plots_draw_mean_and_range():
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3)
    plots.mean_range(axes[0], [1, 2, 3], [[1, 2, 3], [2, 3, np.nan]], label="a")
    plots.mean_range(axes[0], [1, 2, 3], [1, 2, 3], band=False)
    plots.bars_mean_range(axes[1], {"g1": {"s1": [1, 2], "s2": [2, 3]}, "g2": {"s1": [0, 1], "s2": [1, 1]}})
    h1, h2 = train.History([3, 2, 1, 1, 1]), train.History([3, float("nan")], diverged=True)
    plots.loss_curves(axes[2], {"x": [h1, h2]}, window=1)
    assert len(axes[0].collections) >= 1 and len(axes[1].patches) == 4 and len(axes[2].lines) == 1
    plt.close(fig)


def test_results_render_into_the_page():
    assert report.mean_range([0.981, 0.978, 0.983], percent=True) == "98.1% (97.8-98.3)"
    assert report.mean_range([float("nan")]) == "diverged"
    r = report.Results()
    r.line("folding", "max |difference|", "1e-6", show=False)
    r.line("folding", "max |difference|", "2e-6", show=False)
    r.line("folding", "speedup", "1.3x", show=False)
    data_ = {"rows": __import__("json").loads(r.to_json()), "run": {"seconds": 100.0, "machine": "m", "torch": "t"}}
    block = report.render(data_)
    assert block.count("| folding |") == 1 and "2e-6" in block and "1e-6" not in block and "100 s" in block
    page = report.replace_block("# Title\n\ntext\n", block)
    assert page.startswith("# Title") and block in page
    assert report.replace_block(page.replace("2e-6", "9"), block) == page

"""Conformance: every bnlib.nn class against its torch 2.13 counterpart.

Inputs: torch's own ``torch.testing._internal.common_modules.module_db`` entries for the normalization
layers when that module imports (it needs the ``expecttest`` package), otherwise the same constructor
arguments and input shapes transcribed below (``TORCH_MODULE_INPUTS``, from torch 2.13's
``module_inputs_torch_nn_*`` functions). Then the rows of issue 14's table, class by class: values, grads,
buffers, state_dict both ways, exception types, memory formats, dtypes (mixed precision), empty batches,
NaN/Inf, eps = 0 in eval, double backward, forward-mode AD, deepcopy and pickling, and convert_model on a
ResNet-18 built here (torchvision is not a dependency).
"""
import copy
import io
import pickle

import pytest
import torch
import torch.nn as tnn

import bnlib.nn as bnn

D = torch.float64
PAIRS = {tnn.BatchNorm1d: bnn.BatchNorm1d, tnn.BatchNorm2d: bnn.BatchNorm2d, tnn.BatchNorm3d: bnn.BatchNorm3d,
         tnn.InstanceNorm1d: bnn.InstanceNorm1d, tnn.InstanceNorm2d: bnn.InstanceNorm2d,
         tnn.InstanceNorm3d: bnn.InstanceNorm3d, tnn.LayerNorm: bnn.LayerNorm, tnn.GroupNorm: bnn.GroupNorm,
         tnn.SyncBatchNorm: bnn.SyncBatchNorm}

# (torch class, constructor args, constructor kwargs, input shape, desc): torch 2.13's module_inputs_torch_nn_*
TORCH_MODULE_INPUTS = [
    (tnn.BatchNorm1d, (10,), {}, (4, 10), "affine"),
    (tnn.BatchNorm1d, (5,), {}, (4, 5, 3), "3d_input"),
    (tnn.BatchNorm1d, (10, 1e-3, None), {}, (4, 10), "affine_simple_average"),
    (tnn.BatchNorm1d, (10, 1e-3, 0.3, False), {}, (4, 10), "not_affine"),
    (tnn.BatchNorm1d, (10, 1e-3, 0.3, True, False), {}, (4, 10), "not_tracking_stats"),
    (tnn.BatchNorm1d, (5, 1e-3, 0.3, False), {}, (4, 5, 3), "3d_input_not_affine"),
    (tnn.BatchNorm1d, (5, 1e-3, 0.3, False), {}, (0, 5, 9), "zero_batch"),
    (tnn.BatchNorm1d, (10,), {"bias": False}, (4, 10), "affine_not_bias"),
    (tnn.BatchNorm2d, (3,), {}, (2, 3, 6, 6), ""),
    (tnn.BatchNorm2d, (3, 1e-3, None), {}, (2, 3, 6, 6), "2d_simple_average"),
    (tnn.BatchNorm2d, (3, 1e-3, 0.8), {}, (2, 3, 6, 6), "momentum"),
    (tnn.BatchNorm2d, (3, 1e-3, 0.8, False), {}, (2, 3, 6, 6), "not_affine"),
    (tnn.BatchNorm2d, (3, 1e-3, 0.8, True, False), {}, (2, 3, 6, 6), "not_tracking_stats"),
    (tnn.BatchNorm2d, (5, 1e-3, 0.3, False), {}, (0, 5, 2, 2), "zero_batch"),
    (tnn.BatchNorm2d, (3,), {"bias": False}, (2, 3, 6, 6), "affine_not_bias"),
    (tnn.BatchNorm3d, (3,), {}, (2, 3, 4, 4, 4), ""),
    (tnn.BatchNorm3d, (3, 1e-3, None), {}, (2, 3, 4, 4, 4), "3d_simple_average"),
    (tnn.BatchNorm3d, (3, 1e-3, 0.7), {}, (2, 3, 4, 4, 4), "momentum"),
    (tnn.BatchNorm3d, (3, 1e-3, 0.7, False), {}, (2, 3, 4, 4, 4), "not_affine"),
    (tnn.BatchNorm3d, (3, 1e-3, 0.7, True, False), {}, (2, 3, 4, 4, 4), "not_tracking_stats"),
    (tnn.BatchNorm3d, (5, 1e-3, 0.3, False), {}, (0, 5, 2, 2, 2), "zero_batch"),
    (tnn.BatchNorm3d, (3,), {"bias": False}, (2, 3, 4, 4, 4), "affine_not_bias"),
    (tnn.GroupNorm, (3, 6, 1e-3), {}, (4, 6, 5), "1d_affine"),
    (tnn.GroupNorm, (3, 6, 1e-3), {"bias": False}, (4, 6, 5), "1d_affine_not_bias"),
    (tnn.GroupNorm, (3, 12, 1e-3), {}, (4, 12), "1d_affine_GN"),
    (tnn.GroupNorm, (1, 6, 1e-3), {}, (150, 6), "1d_affine_large_batch"),
    (tnn.GroupNorm, (5, 5, 1e-3, False), {}, (4, 5, 5), "1d_no_affine_IN"),
    (tnn.GroupNorm, (1, 10, 1e-3, False), {}, (4, 10), "1d_no_affine_LN"),
    (tnn.GroupNorm, (3, 6, 1e-3), {}, (4, 6, 2, 3), "2d_affine"),
    (tnn.GroupNorm, (3, 9, 1e-3), {"bias": False}, (4, 9, 2, 3), "2d_affine_not_bias"),
    (tnn.GroupNorm, (3, 3, 1e-3, False), {}, (4, 3, 2, 3), "2d_no_affine_IN"),
    (tnn.GroupNorm, (1, 3, 1e-3, False), {}, (4, 3, 2, 3), "2d_no_affine_LN"),
    (tnn.LayerNorm, ([5], 1e-3), {}, (4, 5, 5), "1d_elementwise_affine"),
    (tnn.LayerNorm, ([5], 1e-3), {}, (128, 5, 5), "1d_elementwise_affine_large_batch"),
    (tnn.LayerNorm, ([5], 1e-3, False), {}, (4, 5, 5), "1d_no_elementwise_affine"),
    (tnn.LayerNorm, ([2, 2, 5], 1e-3), {}, (4, 2, 2, 5), "3d_elementwise_affine"),
    (tnn.LayerNorm, ([2, 2, 5], 1e-3, False), {}, (4, 2, 2, 5), "3d_no_elementwise_affine"),
    (tnn.LayerNorm, ([5], 1e-3), {}, (0, 5), "1d_empty_elementwise_affine"),
    (tnn.LayerNorm, ([2, 2, 5], 1e-3), {"elementwise_affine": True, "bias": False}, (4, 2, 2, 5),
     "3d_elementwise_affine_no_bias"),
]
for _n, _cls in ((1, tnn.InstanceNorm1d), (2, tnn.InstanceNorm2d), (3, tnn.InstanceNorm3d)):
    _plane = {1: (3, 15), 2: (3, 6, 6), 3: (3, 4, 4, 4)}[_n]
    TORCH_MODULE_INPUTS += [
        (_cls, (3, 1e-3, 0.3), {}, (4,) + _plane, ""),
        (_cls, (3, 1e-3, 0.3, False, True), {}, (4,) + _plane, "tracking_stats"),
        (_cls, (3, 1e-3, 0.3), {}, _plane, "tracking_stats_no_batch_dim"),
        (_cls, (3, 1e-3, 0.3, False, True), {}, _plane, "no_batch_dim"),
        (_cls, (3, 1e-3, 0.3), {"affine": True}, (4,) + _plane, "affine"),
        (_cls, (3, 1e-3, 0.3), {"affine": True, "bias": False}, (4,) + _plane, "affine_not_bias"),
    ]
# SyncBatchNorm is not in module_db; outside a process group it is batch norm over any rank >= 2
TORCH_MODULE_INPUTS += [(tnn.SyncBatchNorm, (3,), {}, (4, 3, 5, 5), "single_process"),
                        (tnn.SyncBatchNorm, (3, 1e-3, None, False), {}, (6, 3), "2d_simple_average_not_affine")]


def _module_db_inputs():
    """(cls, args, kwargs, input, desc) from torch's module_db, or None when it cannot be imported."""
    try:
        from torch.testing._internal.common_modules import module_db
    except Exception:           # torch's test helpers need `expecttest`, not a dependency of this project
        return None
    out = []
    for info in module_db:
        if info.module_cls not in PAIRS:
            continue
        for mi in info.module_inputs_func(info, device="cpu", dtype=D, requires_grad=True, training=True):
            (x,) = mi.forward_input.args
            out.append((info.module_cls, tuple(mi.constructor_input.args), dict(mi.constructor_input.kwargs),
                        tuple(x.shape), mi.desc))
    return out


MODULE_DB = _module_db_inputs()
if MODULE_DB:
    CASES = MODULE_DB + [c for c in TORCH_MODULE_INPUTS if c[0] is tnn.SyncBatchNorm]
else:
    CASES = TORCH_MODULE_INPUTS
SOURCE = "torch module_db" if MODULE_DB else "transcribed module_db inputs"


def make_pair(torch_cls, args, kwargs, dtype=D, seed=0):
    """torch's layer and bnlib's, same constructor, random affine parameters, same state."""
    theirs = torch_cls(*args, **kwargs).to(dtype)
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(torch.randn_like(p) * 0.5 + 1)
    ours = PAIRS[torch_cls](*args, **kwargs).to(dtype)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def step(ours, theirs, x, dy=None, create_graph=False):
    """Forward and backward through both; returns ((y, grads...) ours, (y, grads...) theirs)."""
    out = []
    for m in (ours, theirs):
        xg = x.detach().clone().requires_grad_(x.is_floating_point())
        y = m(xg)
        g = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(y.dtype) \
            if dy is None else dy
        y.backward(g, create_graph=create_graph)
        out.append((y.detach(), xg.grad, *[p.grad for p in m.parameters()]))
        for p in m.parameters():
            p.grad = None
    return out


def assert_same(a, b, rtol, atol):
    for u, v in zip(a, b):
        if u is None or v is None:
            assert u is None and v is None
            continue
        assert u.dtype == v.dtype and u.shape == v.shape
        torch.testing.assert_close(u, v, rtol=rtol, atol=atol, equal_nan=True)


def assert_same_state(ours, theirs, rtol=1e-12, atol=1e-12):
    sa, sb = ours.state_dict(), theirs.state_dict()
    assert list(sa) == list(sb)
    for k in sb:
        torch.testing.assert_close(sa[k], sb[k], rtol=rtol, atol=atol, equal_nan=True)


def _rand(shape, dtype=D, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * 2 + 3).to(dtype)


# ----------------------------------------------------------------------------- torch's own inputs
@pytest.mark.parametrize("dtype,tol", [(D, 1e-10), (torch.float32, 2e-5)], ids=["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0].__name__}-{c[4] or 'default'}")
def test_module_inputs_values_grads_buffers_state_dict(case, dtype, tol):
    """Over torch's inputs: train, train, eval: outputs, input and parameter grads, buffers; then
    state_dict both ways."""
    cls, args, kwargs, shape, _ = case
    ours, theirs = make_pair(cls, args, kwargs, dtype)
    for i, training in enumerate((True, True, False)):
        ours.train(training), theirs.train(training)
        x = _rand(shape, dtype, seed=i)
        a, b = step(ours, theirs, x)
        assert_same(a, b, tol, tol)
        assert_same_state(ours, theirs, tol, tol)
    again = PAIRS[cls](*args, **kwargs).to(dtype)
    again.load_state_dict(theirs.state_dict())            # torch -> bnlib
    back = cls(*args, **kwargs).to(dtype)
    back.load_state_dict(ours.state_dict())               # bnlib -> torch
    assert_same_state(again, theirs, 0, 0)
    assert_same_state(back, ours, 0, 0)
    x = _rand(shape, dtype, seed=9)
    torch.testing.assert_close(again.eval()(x), back.eval()(x), rtol=tol, atol=tol)


def test_inputs_come_from_torch_or_its_transcription():
    assert SOURCE in ("torch module_db", "transcribed module_db inputs")
    assert {c[0] for c in CASES} == set(PAIRS)


# ----------------------------------------------------------------------------- the rows, class by class
def _bn(cls, c, **kw):
    return lambda: (cls(c, **kw), PAIRS[cls](c, **kw))


# (id, factory -> (torch layer, bnlib layer), input shape); float32 modules
KINDS = [
    ("BatchNorm1d", _bn(tnn.BatchNorm1d, 4), (6, 4)),
    ("BatchNorm2d", _bn(tnn.BatchNorm2d, 4), (3, 4, 5, 5)),
    ("BatchNorm3d", _bn(tnn.BatchNorm3d, 4), (3, 4, 2, 3, 3)),
    ("InstanceNorm1d", _bn(tnn.InstanceNorm1d, 4, affine=True, track_running_stats=True), (3, 4, 7)),
    ("InstanceNorm2d", _bn(tnn.InstanceNorm2d, 4, affine=True, track_running_stats=True), (3, 4, 5, 5)),
    ("InstanceNorm3d", _bn(tnn.InstanceNorm3d, 4, affine=True), (3, 4, 2, 3, 3)),
    ("LayerNorm", lambda: (tnn.LayerNorm((4, 5)), bnn.LayerNorm((4, 5))), (3, 4, 5)),
    ("GroupNorm", lambda: (tnn.GroupNorm(2, 4), bnn.GroupNorm(2, 4)), (3, 4, 5, 5)),
    ("SyncBatchNorm", _bn(tnn.SyncBatchNorm, 4), (3, 4, 5, 5)),
]
KIND_IDS = [k[0] for k in KINDS]


def _kind_pair(factory, dtype=torch.float32):
    theirs, ours = factory()
    theirs, ours = theirs.to(dtype), ours.to(dtype)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(torch.randn_like(p) * 0.5 + 1)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_mixed_precision_half_input_float32_module(kind, half):
    """A half input with float32 parameters: half output and input grad; float32 parameter grads,
    accumulated in float32 (the issue's bias.grad -9.5 vs -9.50861): within 1e-4 of float64 on the same
    half values, and within half precision of torch's."""
    _, factory, shape = kind
    ours, theirs = _kind_pair(factory)
    exact = copy.deepcopy(theirs).double()
    x = _rand(shape, half)
    dy = _rand(shape, half, seed=5)
    a, b = step(ours, theirs, x, dy)
    xe = x.double().requires_grad_()
    exact(xe).backward(dy.double())
    ref = [p.grad for p in exact.parameters()]
    for u, v in zip(a, b):
        assert u.dtype == v.dtype
    tol = 2e-2 if half == torch.bfloat16 else 2e-3
    torch.testing.assert_close(a[0].float(), b[0].float(), rtol=tol, atol=tol)
    torch.testing.assert_close(a[1].float(), b[1].float(), rtol=tol, atol=tol)
    for u, v, r in zip(a[2:], b[2:], ref):
        assert u.dtype == torch.float32                     # not rounded to the input's dtype
        torch.testing.assert_close(u, r.float(), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(u, v, rtol=tol, atol=tol)
    assert_same_state(ours, theirs, 1e-3, 1e-3)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_nonfinite_input_propagates_like_torch(kind, value):
    """NaN/Inf reach exactly the outputs, grads and running statistics they reach in torch; nothing raises."""
    _, factory, shape = kind
    ours, theirs = _kind_pair(factory, D)
    x = _rand(shape)
    x[(0,) * x.dim()] = value
    a, b = step(ours, theirs, x)
    for u, v in zip(a, b):
        assert torch.equal(torch.isnan(u), torch.isnan(v)), "NaN in other places than torch's"
    assert_same(a, b, 1e-10, 1e-10)
    assert_same_state(ours, theirs)


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_empty_batch_like_torch(kind):
    """N = 0: empty output, zero parameter grads, running statistics as torch leaves them (kept; NaN for
    InstanceNorm, which averages over zero instances), num_batches_tracked + 1."""
    _, factory, shape = kind
    ours, theirs = _kind_pair(factory, D)
    x = torch.empty((0,) + shape[1:], dtype=D)
    if kind[0].startswith("InstanceNorm"):
        # torch 2.13's instance_norm raises IndexError for an empty batch with affine parameters (it
        # repeats them N = 0 times); bnlib gives the empty output and zero grads instead of the crash
        with pytest.raises(IndexError):
            theirs(x.clone().requires_grad_())
        (y, dx, *grads), _ = step(ours, copy.deepcopy(ours), x)
        assert y.shape == dx.shape == x.shape and all(torch.equal(g, torch.zeros_like(g)) for g in grads)
        ours, theirs = (cls(4, track_running_stats=True).double() for cls in (PAIRS[type(theirs)], type(theirs)))
    a, b = step(ours, theirs, x)
    assert a[0].shape == x.shape
    assert_same(a, b, 0, 0)
    for g in a[2:]:
        assert torch.equal(g, torch.zeros_like(g))
    assert_same_state(ours, theirs, 0, 0)


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_eps_zero_in_eval_mode_is_accepted(kind):
    _, factory, shape = kind
    ours, theirs = _kind_pair(factory, D)
    for m in (ours, theirs):
        m.eps = 0.0
        m.eval()
    x = _rand(shape)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-12, atol=1e-12, equal_nan=True)


SPATIAL = [k for k in KINDS if len(k[2]) in (4, 5)]     # channels_last needs 4-D or 5-D input


@pytest.mark.parametrize("kind", SPATIAL, ids=[k[0] for k in SPATIAL])
def test_memory_format_like_torch(kind):
    """channels_last(_3d) inputs: the output keeps the layout exactly when torch's does (BatchNorm,
    GroupNorm), and comes back contiguous when torch's does (InstanceNorm)."""
    _, factory, shape = kind
    fmt = torch.channels_last if len(shape) == 4 else torch.channels_last_3d
    ours, theirs = _kind_pair(factory, D)
    x = _rand(shape).contiguous(memory_format=fmt)
    a, b = step(ours, theirs, x)
    assert_same(a, b, 1e-10, 1e-10)
    for fmt_ in (fmt, torch.contiguous_format):
        assert a[0].is_contiguous(memory_format=fmt_) == b[0].is_contiguous(memory_format=fmt_)


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_double_backward_like_torch(kind):
    """A gradient penalty through the layer: the second-order gradients are torch's (never zero)."""
    _, factory, shape = kind
    ours, theirs = _kind_pair(factory, D)     # (SyncBatchNorm outside a process group is batch norm)
    x = _rand(shape)
    res = []
    for m in (ours, theirs):
        xg = x.clone().requires_grad_()
        y = m(xg)
        (gx,) = torch.autograd.grad((y ** 3).sum(), xg, create_graph=True)
        res.append(torch.autograd.grad((gx ** 2).sum(), (xg, *m.parameters())))
    assert res[0][0].abs().max() > 0
    assert_same(res[0], res[1], 1e-9, 1e-9)


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_forward_mode_ad_like_torch(kind):
    """torch.func.jvp through the module in eval mode (in training mode torch refuses the in-place
    num_batches_tracked update, and so does bnlib)."""
    _, factory, shape = kind
    ours, theirs = _kind_pair(factory, D)
    ours.eval(), theirs.eval()
    x, v = _rand(shape), _rand(shape, seed=3)
    ya, ta = torch.func.jvp(lambda t: ours(t), (x,), (v,))
    yb, tb = torch.func.jvp(lambda t: theirs(t), (x,), (v,))
    torch.testing.assert_close(ya, yb, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ta, tb, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_deepcopy_pickle_and_torch_save(kind):
    _, factory, shape = kind
    ours, _ = _kind_pair(factory, D)
    ours.train()
    ours(_rand(shape))
    buf = io.BytesIO()
    torch.save(ours, buf)
    buf.seek(0)
    copies = [copy.deepcopy(ours), pickle.loads(pickle.dumps(ours)), torch.load(buf, weights_only=False)]
    x = _rand(shape, seed=4)
    ours.eval()
    for c in copies:
        assert type(c) is type(ours)
        assert_same_state(c, ours, 0, 0)
        torch.testing.assert_close(c.eval()(x), ours(x), rtol=0, atol=0)


# (id, module factory (torch or bnlib class), input) -> the same exception type from both
ERRORS = [
    ("BatchNorm2d channels", lambda c: c(3), (2, 4, 3, 3)),
    ("BatchNorm1d channels, no running stats", lambda c: c(3, track_running_stats=False), (2, 4)),
    ("BatchNorm1d rank", lambda c: c(3), (2, 3, 4, 4)),
    ("BatchNorm3d rank", lambda c: c(3), (2, 3, 4, 4)),
    ("BatchNorm1d batch of one", lambda c: c(3), (1, 3)),
    ("BatchNorm2d one value per channel", lambda c: c(3), (1, 3, 1, 1)),
    ("BatchNorm1d eps 0 in training", lambda c: c(3, eps=0.0), (4, 3)),
    ("BatchNorm1d integer input", lambda c: c(3, affine=False, track_running_stats=False), "long"),
    ("BatchNorm1d float64 input, float32 module", lambda c: c(3), "double"),
    ("LayerNorm trailing shape", lambda c: c(5), (2, 4)),
    ("LayerNorm float64 input, float32 module", lambda c: c(4), "double"),
    ("GroupNorm channels", lambda c: c(2, 4), (2, 6, 3)),
    ("GroupNorm one value per group, batch of one", lambda c: c(2, 2), (1, 2)),
    ("GroupNorm one value per group", lambda c: c(2, 2), (2, 2)),
    ("GroupNorm rank 1", lambda c: c(1, 4), (4,)),
    ("InstanceNorm2d channels, affine", lambda c: c(3, affine=True), (2, 4, 3, 3)),
    ("InstanceNorm1d one spatial element", lambda c: c(3), (2, 3, 1)),
    ("InstanceNorm2d rank", lambda c: c(3), (3, 3)),
    ("SyncBatchNorm rank 1", lambda c: c(3), (4,)),
    ("SyncBatchNorm channels", lambda c: c(3), (4, 5, 2)),
]
_ERR_CLS = {"BatchNorm1d": tnn.BatchNorm1d, "BatchNorm2d": tnn.BatchNorm2d, "BatchNorm3d": tnn.BatchNorm3d,
            "LayerNorm": tnn.LayerNorm, "GroupNorm": tnn.GroupNorm, "InstanceNorm1d": tnn.InstanceNorm1d,
            "InstanceNorm2d": tnn.InstanceNorm2d, "SyncBatchNorm": tnn.SyncBatchNorm}


def _outcome(fn):
    try:
        fn()
        return None
    except Exception as e:          # noqa: BLE001 - the type is what is compared
        return e


@pytest.mark.parametrize("case", ERRORS, ids=[e[0] for e in ERRORS])
def test_errors_have_torchs_exception_types(case):
    name, make, shape = case
    torch_cls = _ERR_CLS[name.split()[0]]
    if shape == "long":
        x = torch.ones(4, 3, dtype=torch.long)
    elif shape == "double":
        x = _rand((4, 3) if torch_cls is tnn.BatchNorm1d else (4, 4))
    else:
        x = _rand(shape, torch.float32)
    theirs = _outcome(lambda: make(torch_cls)(x))
    ours = _outcome(lambda: make(PAIRS[torch_cls])(x))
    if theirs is None:
        assert ours is None, f"torch accepts this input, bnlib raised {ours!r}"
    else:
        assert isinstance(ours, type(theirs)), f"torch raises {type(theirs).__name__}, bnlib {ours!r}"


def test_syncbatchnorm_outside_a_process_group_is_batch_norm():
    theirs, ours = tnn.BatchNorm2d(4).double(), bnn.SyncBatchNorm(4).double()
    x = _rand((3, 4, 5, 5))
    a, b = step(ours, theirs, x)
    assert_same(a, b, 1e-12, 1e-12)
    assert_same_state(ours, theirs)


# ----------------------------------------------------------------------------- a whole model
class BasicBlock(tnn.Module):
    expansion = 1

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = tnn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(cout)
        self.relu = tnn.ReLU(inplace=True)
        self.conv2 = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = tnn.Sequential(tnn.Conv2d(cin, cout, 1, stride, bias=False), tnn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ResNet18(tnn.Module):
    """torchvision's resnet18 layout (conv 7x7/2, max-pool, 4 stages of 2 BasicBlocks, avg-pool, fc) at a
    reduced width, plus a LayerNorm, a GroupNorm and an InstanceNorm head so every family member is in it."""

    def __init__(self, width=8, classes=10):
        super().__init__()
        self.conv1 = tnn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = tnn.BatchNorm2d(width)
        self.relu = tnn.ReLU(inplace=True)
        self.maxpool = tnn.MaxPool2d(3, 2, 1)
        layers, cin = [], width
        for i, stride in enumerate((1, 2, 2, 2)):
            cout = width * 2 ** i
            layers.append(tnn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.gn = tnn.GroupNorm(4, cin)
        self.inorm = tnn.InstanceNorm2d(cin, affine=True, track_running_stats=True)
        self.avgpool = tnn.AdaptiveAvgPool2d(1)
        self.ln = tnn.LayerNorm(cin)
        self.fc = tnn.Linear(cin, classes)
        self.bn_head = tnn.BatchNorm1d(classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.inorm(self.gn(x))
        return self.bn_head(self.fc(self.ln(torch.flatten(self.avgpool(x), 1))))


def test_convert_model_on_a_resnet18_train_eval_grads_buffers():
    torch.manual_seed(0)
    reference = ResNet18().double()
    model = copy.deepcopy(reference)
    params = {id(p) for p in model.parameters()}
    converted = bnn.convert_model(model)
    assert converted is model and {id(p) for p in model.parameters()} == params      # the same tensors
    kinds = {type(m) for m in model.modules()}
    assert {bnn.BatchNorm2d, bnn.BatchNorm1d, bnn.GroupNorm, bnn.InstanceNorm2d, bnn.LayerNorm} <= kinds
    assert not kinds & {tnn.BatchNorm2d, tnn.BatchNorm1d, tnn.GroupNorm, tnn.InstanceNorm2d, tnn.LayerNorm}
    for training in (True, True, False):
        model.train(training), reference.train(training)
        x = _rand((4, 3, 64, 64), seed=int(training))
        ya, yb = model(x), reference(x)
        torch.testing.assert_close(ya, yb, rtol=1e-10, atol=1e-10)
        ya.square().sum().backward(), yb.square().sum().backward()
        for (name, pa), pb in zip(model.named_parameters(), reference.parameters()):
            torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-8, atol=1e-10, msg=name)
        model.zero_grad(), reference.zero_grad()
        assert_same_state(model, reference, 1e-10, 1e-10)
    back = bnn.revert_model(model)
    assert not {type(m) for m in back.modules()} & set(PAIRS.values())
    assert {id(p) for p in back.parameters()} == params
    x = _rand((2, 3, 64, 64), seed=7)
    torch.testing.assert_close(back.eval()(x), reference.eval()(x), rtol=1e-10, atol=1e-10)
    sync = bnn.convert_model(copy.deepcopy(reference), sync=True)
    assert sum(isinstance(m, bnn.SyncBatchNorm) for m in sync.modules()) == 21   # 20 BatchNorm2d + 1 BatchNorm1d
    torch.testing.assert_close(sync.eval()(x), reference.eval()(x), rtol=1e-10, atol=1e-10)

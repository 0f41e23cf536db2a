"""bnlib.nn.SyncBatchNorm on a real torch.distributed group: 2 gloo processes on this machine.

Each process holds a slice of one batch (uneven slices, one of them a single sample); the results must be
those of single-process batch norm over the concatenated batch, in float64: outputs, input gradients,
running statistics (the same on every process), and the weight/bias gradients summed over the processes
(torch's SyncBatchNorm leaves them local, for DistributedDataParallel to reduce). Double backward and
forward-mode AD must fail with a clear error.
"""
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import bnlib.nn as bnn

WORLD = 2
# (per-process batch sizes, input shape after N, memory format)
SCENARIOS = [((3, 5), (4, 5, 6), torch.contiguous_format), ((1, 6), (3, 4, 4), torch.channels_last),
             ((7, 2), (5,), torch.contiguous_format)]


def _data(sizes, rest, seed):
    g = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    x = torch.randn((n,) + rest, generator=g, dtype=torch.float64) * 3 + 5
    dy = torch.randn((n,) + rest, generator=g, dtype=torch.float64)
    w = torch.randn(rest[0], generator=g, dtype=torch.float64)
    b = torch.randn(rest[0], generator=g, dtype=torch.float64)
    return x, dy, w, b


def _worker(rank, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    results = []
    try:
        for k, (sizes, rest, fmt) in enumerate(SCENARIOS):
            layer = bnn.SyncBatchNorm(rest[0], momentum=0.3).double()
            steps = []
            for step in range(3):
                x, dy, w, b = _data(sizes, rest, seed=10 * k + step)
                with torch.no_grad():
                    layer.weight.copy_(w), layer.bias.copy_(b)
                start = sum(sizes[:rank])
                xs = x[start:start + sizes[rank]].clone()
                if xs.dim() == 4:
                    xs = xs.contiguous(memory_format=fmt)
                xs.requires_grad_()
                layer.train(step < 2)
                y = layer(xs)
                y.backward(dy[start:start + sizes[rank]])
                steps.append(dict(y=y.detach(), dx=xs.grad, dw=layer.weight.grad.clone(), db=layer.bias.grad.clone(),
                                  rm=layer.running_mean.clone(), rv=layer.running_var.clone(),
                                  nbt=layer.num_batches_tracked.clone(),
                                  channels_last=y.is_contiguous(memory_format=torch.channels_last) and y.dim() == 4))
                layer.weight.grad, layer.bias.grad = None, None
            results.append(steps)
        # refusals: double backward and forward-mode AD
        layer = bnn.SyncBatchNorm(3).double()
        xs = torch.randn(4, 3, 2, dtype=torch.float64, requires_grad=True)
        errors = []
        try:
            (g,) = torch.autograd.grad(layer(xs).pow(3).sum(), xs, create_graph=True)
            errors.append("no error")
        except RuntimeError as e:
            errors.append(str(e))
        try:
            import torch.autograd.forward_ad as fwAD
            with fwAD.dual_level():
                layer(fwAD.make_dual(xs.detach(), torch.ones_like(xs)))
            errors.append("no error")
        except RuntimeError as e:
            errors.append(str(e))
        torch.save(dict(results=results, errors=errors), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("sync")
    mp.spawn(_worker, args=(str(out / "init"), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


def _reference(sizes, rest, k):
    """Single-process torch BatchNorm over the concatenated batch, same steps."""
    ref = torch.nn.BatchNorm1d(rest[0], momentum=0.3).double() if len(rest) < 3 else \
        torch.nn.BatchNorm2d(rest[0], momentum=0.3).double()
    out = []
    for step in range(3):
        x, dy, w, b = _data(sizes, rest, seed=10 * k + step)
        with torch.no_grad():
            ref.weight.copy_(w), ref.bias.copy_(b)
        x.requires_grad_()
        ref.train(step < 2)
        y = ref(x)
        y.backward(dy)
        out.append(dict(y=y.detach(), dx=x.grad, dw=ref.weight.grad.clone(), db=ref.bias.grad.clone(),
                        rm=ref.running_mean.clone(), rv=ref.running_var.clone(), nbt=ref.num_batches_tracked.clone()))
        ref.weight.grad, ref.bias.grad = None, None
    return out


@pytest.mark.parametrize("k", range(len(SCENARIOS)),
                         ids=[f"sizes{s[0]}-{'x'.join(map(str, s[1]))}-{'cl' if s[2] == torch.channels_last else 'nchw'}"
                              for s in SCENARIOS])
def test_sync_batch_norm_equals_single_process_bn_over_the_whole_batch(ranks, k):
    sizes, rest, fmt = SCENARIOS[k]
    ref = _reference(sizes, rest, k)
    for step in range(3):
        r = ref[step]
        parts = [ranks[rank]["results"][k][step] for rank in range(WORLD)]
        torch.testing.assert_close(torch.cat([p["y"] for p in parts]), r["y"], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(torch.cat([p["dx"] for p in parts]), r["dx"], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(sum(p["dw"] for p in parts), r["dw"], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(sum(p["db"] for p in parts), r["db"], rtol=1e-12, atol=1e-12)
        for p in parts:
            for key in ("rm", "rv", "nbt"):
                torch.testing.assert_close(p[key], r[key], rtol=1e-13, atol=1e-14)
            if len(rest) == 3 and fmt == torch.channels_last:
                assert p["channels_last"]


def test_sync_batch_norm_refuses_double_backward_and_forward_ad_clearly(ranks):
    for rank in ranks:
        double, forward = rank["errors"]
        assert "does not support double backward" in double
        assert "does not support forward-mode AD" in forward

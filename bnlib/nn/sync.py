"""SyncBatchNorm: batch statistics over the whole batch that several processes hold, with torch.distributed.

With data parallelism each process (GPU) sees N_r samples; plain BN normalizes with the statistics of its
own N_r, so small per-process batches give noisy statistics (and a different function from the model
trained on one device). SyncBatchNorm reduces the statistics across processes so every process normalizes
with the statistics of the concatenated batch (Ioffe & Szegedy 2015, Algorithm 1, over all N = sum N_r):

* forward: each process computes the count, mean and centred sum of squares of its samples; one
  ``all_gather`` of 2C + 1 numbers; every process merges them with the pairwise update of Chan, Golub &
  LeVeque (1979) in float64 (uneven batch sizes, even empty ones, are exact);
* backward: each process computes sum(dy) and sum(dy * (x - mean)); one ``all_reduce`` of 2C + 1 numbers gives
  the global sums in dx = gamma / sigma * (dy - mean(dy) - xhat * mean(dy * xhat)). The weight and bias
  gradients stay local, as in torch (DistributedDataParallel averages them with the other parameters').

Works with any backend (gloo on CPU, NCCL on GPUs). Double backward and forward-mode AD raise a clear
RuntimeError (the reductions are not differentiated).
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from .. import batch_norm as bn
from .._backend import Affine
from . import functional as F

__all__ = ["SyncBatchNorm", "SyncBatchNormFunction", "sync_batch_norm"]


class SyncBatchNormFunction(torch.autograd.Function):
    """``apply(x, weight, bias, running_mean, running_var, momentum, eps, group) -> (y, mean, invstd)``."""

    @staticmethod
    def forward(x, weight, bias, running_mean, running_var, momentum, eps, group):
        be = F._be()
        cl = be.channels_last(x)
        x3 = be.channels_view(x, cl)
        cdt = be.compute_dtype(x)
        c = x3.shape[1]
        local = torch.zeros(2 * c + 1, dtype=torch.float64, device=x.device)
        if x3.numel():
            n, mean_r, m2_r = bn.moments(be, x3.to(cdt))
            local[0] = n
            local[1:c + 1] = mean_r.reshape(-1)
            local[c + 1:] = m2_r.reshape(-1)
        parts = [torch.empty_like(local) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, local, group=group)
        stats = None
        for p in parts:                                   # merge the processes' moments (Chan et al.)
            if p[0] > 0:
                piece = (float(p[0]), p[1:c + 1].reshape(-1, 1), p[c + 1:].reshape(-1, 1))
                stats = piece if stats is None else bn.merge_moments(stats, piece)
        count = 0 if stats is None else int(stats[0])
        if count == 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {x.size()} "
                             "on one process and none on the others")
        acc = be.acc_dtype(x)
        if count == 0:
            empty = x.new_empty((0, 1), dtype=acc)
            return x.clone(), empty, empty
        mean, var = stats[1].to(acc), (stats[2] / count).to(acc)
        if x3.numel():
            y3, invstd = be.run(bn.eval_forward, x3, mean, var, F._col(weight), F._col(bias), eps)
            y = F._own(be.from_channels(y3, x.shape, cl))
        else:
            y, invstd = x.clone(), 1 / torch.sqrt(var + eps)
        bn.update_running(be, running_mean, running_var, mean, var, count, momentum)
        return y, mean, invstd

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, _, _, _, _, group = inputs
        _, mean, invstd = output
        ctx.mark_non_differentiable(mean, invstd)
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.group, ctx.bias_given = group, bias is not None
        ctx.param_dtype = bn.param_dtype(x, weight, bias)

    @staticmethod
    def backward(ctx, dy, _dmean, _dinvstd):
        if torch.is_grad_enabled():
            raise RuntimeError("bnlib.nn.SyncBatchNorm does not support double backward (create_graph=True): its "
                               "statistics are reduced across processes and the reduction is not differentiated. "
                               "Use bnlib.nn.BatchNorm*d for gradient penalties or Hessian-vector products.")
        x, weight, mean, invstd = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        be = F._be()
        c = x.shape[1]
        if mean.numel() == 0:
            zeros = x.new_zeros(c, dtype=ctx.param_dtype)
            return (dy.clone(), zeros if need_w else None, zeros.clone() if need_b else None) + (None,) * 5
        cl = be.channels_last(x)
        x3, dy3 = be.channels_view(x, cl), be.channels_view(dy, cl)
        cdt, acc = be.compute_dtype(x), be.acc_dtype(x)
        if x3.numel():
            dyc = dy3.to(cdt)
            sums = torch.cat([be.channel_sum(dyc), be.channel_dot(dyc, x3.to(cdt), mean)]).reshape(-1)
        else:
            sums = torch.zeros(2 * c, dtype=acc, device=x.device)
        sum_dy, sum_dy_xmu = sums[:c].reshape(-1, 1).clone(), sums[c:].reshape(-1, 1).clone()  # local
        dx = None
        if need_x:
            count = torch.tensor([float(x3.shape[0] * x3.shape[2])], dtype=torch.float64, device=x.device)
            total = torch.cat([sums.to(torch.float64), count])   # one all_reduce of 2C + 1 numbers
            dist.all_reduce(total, group=ctx.group)
            m = float(total[2 * c])
            g_dy, g_dy_xmu = total[:c].reshape(-1, 1).to(acc), total[c:2 * c].reshape(-1, 1).to(acc)

            def coefficients(_, mean, invstd, weight):
                scale = invstd if weight is None else invstd * weight
                mean_dy, k = g_dy / m, invstd * invstd * g_dy_xmu / m
                # dx = gamma / sigma * (dy - mean(dy) - (x - mu) * mean(dy * xhat) / sigma), global means
                return (), Affine((None, mean), (scale, -scale * k), -scale * mean_dy)

            if x3.numel():
                dx3, _ = be.per_channel((dy3, x3), (mean, invstd, F._col(weight)), coefficients, out_dtype=dy.dtype)
                dx = be.from_channels(dx3, x.shape, cl)
            else:
                dx = dy.clone()
        dweight = (sum_dy_xmu * invstd).reshape(-1).to(ctx.param_dtype) if weight is not None and need_w else None
        dbias = sum_dy.reshape(-1).to(ctx.param_dtype) if ctx.bias_given and need_b else None
        return (dx, dweight, dbias) + (None,) * 5

    @staticmethod
    def jvp(ctx, *tangents):
        raise RuntimeError("bnlib.nn.SyncBatchNorm does not support forward-mode AD (torch.func.jvp, "
                           "torch.autograd.forward_ad): its statistics are reduced across processes. Use "
                           "bnlib.nn.BatchNorm*d.")


def sync_batch_norm(x, *, weight=None, bias=None, running_mean=None, running_var=None, momentum=0.1, eps=1e-5,
                    group=None):
    """Training-mode batch norm with statistics over every process of ``group`` (default: the world).

    Raises:
        ValueError: a single value per channel in the whole batch; eps <= 0.
        RuntimeError: per-channel arrays whose size is not C; mixed dtypes (torch's rule).
    """
    F.check_dtypes(x, weight, bias, running_mean, running_var)
    F.check_channels(x, running_mean=running_mean, running_var=running_var, weight=weight, bias=bias)
    if eps <= 0:
        raise ValueError(f"batch_norm eps must be positive during training, but got {eps}")
    group = dist.group.WORLD if group is None else group
    return SyncBatchNormFunction.apply(x, weight, bias, running_mean, running_var, float(momentum), float(eps),
                                       group)[0]


class SyncBatchNorm(torch.nn.SyncBatchNorm):
    """Drop-in for ``torch.nn.SyncBatchNorm`` (same constructor, state_dict and ``process_group``) that also
    runs on the CPU (gloo): in training mode with an initialized process group of more than one process,
    statistics cover the batch of every process; otherwise it is :class:`bnlib.nn.BatchNorm2d`'s
    computation. Input (N, C, *), N may differ between processes (or be 0 on some)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        self._check_non_zero_input_channels(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / self.num_batches_tracked.item() if self.momentum is None else self.momentum
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        track = not self.training or self.track_running_stats
        running_mean = self.running_mean if track else None
        running_var = self.running_var if track else None
        group = None
        if use_batch_stats and self.training and dist.is_available() and dist.is_initialized():
            group = self.process_group or dist.group.WORLD
            if dist.get_world_size(group) <= 1:
                group = None
        if group is None:
            return F.batch_norm(input, weight=self.weight, bias=self.bias, running_mean=running_mean,
                                running_var=running_var, training=use_batch_stats, momentum=factor, eps=self.eps)
        return sync_batch_norm(input, weight=self.weight, bias=self.bias, running_mean=running_mean,
                               running_var=running_var, momentum=factor, eps=self.eps, group=group)

    @classmethod
    def convert_sync_batchnorm(cls, module, process_group=None):
        """Every BatchNorm*d layer (torch's or bnlib's) of ``module`` becomes a bnlib SyncBatchNorm sharing
        its parameters and buffers (see :func:`bnlib.nn.convert_model` with ``sync=True``)."""
        from .convert import convert_model
        return convert_model(module, sync=True, process_group=process_group)

"""The few array operations where NumPy and PyTorch differ; the maths in bnlib is written once on top.

``ops_for(x)`` returns :data:`NUMPY` for a ``numpy.ndarray`` and :data:`TORCH` for a ``torch.Tensor``
(CPU or CUDA). torch is imported only when a tensor is passed, so NumPy users never pay for it.
"""
from __future__ import annotations

import contextlib
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

_POOL = None


def _pool() -> ThreadPoolExecutor:
    # NumPy's ufuncs release the GIL, so independent blocks run in parallel on the CPU's cores.
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="bnlib")
    return _POOL


class NumpyOps:
    name = "numpy"
    array_type_name = "numpy.ndarray"
    #: elements per block: a (B, C, L) slab of about 256 KiB of float32 stays in L2 between the
    #: operations on it, so each block is read from memory once per pass
    BLOCK = 1 << 16

    def blocks(self, shape):
        """Slices of axis 0 that cut an (N, C, L) array into cache-sized slabs."""
        n, per = shape[0], max(1, shape[1] * shape[2])
        step = max(1, self.BLOCK // per)
        return [slice(i, min(i + step, n)) for i in range(0, n, step)]

    def map(self, fn, arrays, dtype, cdtype):
        """fn(*blocks, out=...) block by block, in parallel, into one new array of ``dtype``.

        When ``dtype`` is the compute dtype, fn writes straight into the output block (``out``);
        otherwise (float16 input) it returns a float32 block that is cast on assignment.
        """
        out = np.empty(arrays[0].shape, dtype=dtype)
        direct = np.dtype(dtype) == np.dtype(cdtype)

        def work(sl):
            if direct:
                fn(*(a[sl] for a in arrays), out=out[sl])
            else:
                out[sl] = fn(*(a[sl] for a in arrays), out=None)
        list(_pool().map(work, self.blocks(arrays[0].shape)))
        return out

    def reduce(self, fn, arrays):
        """Sum over blocks of fn(blocks...), which returns a tuple of per-channel vectors."""
        parts = list(_pool().map(lambda sl: fn(*(a[sl] for a in arrays)), self.blocks(arrays[0].shape)))
        return tuple(sum(p[i] for p in parts) for i in range(len(parts[0])))

    @staticmethod
    def sub(a, b, out=None):
        return np.subtract(a, b, out=out)

    @staticmethod
    def concat(arrays):
        return np.concatenate(arrays, axis=0)

    @staticmethod
    def clip(a, low, high):
        return np.clip(a, low, high)

    # plain 2-D reductions for (R, K) matrices (layer and group norm)
    @staticmethod
    def row_sum(a):
        return a.sum(axis=1)

    @staticmethod
    def row_dot(a, b):
        return np.einsum("rk,rk->r", a, b)

    @staticmethod
    def col_sum(a):
        return a.sum(axis=0)

    @staticmethod
    def mul(a, b, out=None):
        return np.multiply(a, b, out=out)

    def first(self, a):
        return a[self.blocks(a.shape)[0]]

    def per_channel(self, shape):
        """Broadcast a (C,) vector over (B, C, L) blocks as a materialized block-shaped array, so that
        elementwise loops run over whole contiguous blocks (long loops release the GIL and vectorize)."""
        n, c, l = shape
        rows = self.blocks(shape)[0].stop
        if l > 1:
            return lambda v: np.ascontiguousarray(np.broadcast_to(v[None, :, None], (1, c, l)))
        return lambda v: np.ascontiguousarray(np.broadcast_to(v[None, :, None], (rows, c, 1)))

    @staticmethod
    def fit(const, block):
        return const[: block.shape[0]]

    @staticmethod
    def is_array(a) -> bool:
        return isinstance(a, np.ndarray)

    @staticmethod
    def is_float(a) -> bool:
        return a.dtype.type in (np.float16, np.float32, np.float64)

    @staticmethod
    def compute_dtype(a):
        # float16 has too little range and precision for the normalization itself.
        return np.float64 if a.dtype == np.float64 else np.float32

    @staticmethod
    def acc_dtype(a):
        # Statistics accumulate in float64: NumPy's axis-0 reductions add row by row, not pairwise.
        return np.float64

    @staticmethod
    def sum(a, axes, dtype):
        # Within a block: pairwise float32 sums along the contiguous axis L (accurate and fast), then
        # float64 across samples. (N, C) inputs (L = 1) sum rows in float64 directly.
        if a.ndim == 3 and axes == (0, 2) and a.dtype == np.float32:
            if a.shape[2] == 1:  # BLAS matrix-vector product: ~20x faster than a row-by-row sum
                return (np.ones(a.shape[0], np.float32) @ a[:, :, 0]).astype(dtype)
            return a.sum(axis=2).sum(axis=0, dtype=dtype)
        return a.sum(axis=axes, dtype=dtype)

    @staticmethod
    def dot(a, b, axes, dtype):
        # sum(a * b) over (N, L) without materializing the product; a and b are (B, C, L) blocks
        if a.dtype == b.dtype == np.float32:
            if a.shape[2] == 1:
                return (np.ones(a.shape[0], np.float32) @ (a[:, :, 0] * b[:, :, 0])).astype(dtype)
            return np.einsum("ncl,ncl->nc", a, b).sum(axis=0, dtype=dtype)
        return np.einsum("ncl,ncl->c", a, b, dtype=dtype, casting="unsafe")

    @staticmethod
    def astype(a, dtype):
        return a.astype(dtype, copy=False)

    @staticmethod
    def copy_as(a, dtype):
        return a.astype(dtype, copy=True)

    @staticmethod
    def sqrt(a):
        return np.sqrt(a)

    @staticmethod
    def all_finite(a) -> bool:
        return bool(np.all(np.isfinite(a)))

    @staticmethod
    def same_place(a, b) -> bool:
        return True

    @staticmethod
    def place(a) -> str:
        return "cpu"

    @staticmethod
    def channels_last(x) -> bool:
        return False

    @staticmethod
    def no_grad():
        return contextlib.nullcontext()


class TorchOps:
    name = "torch"
    array_type_name = "torch.Tensor"

    def __init__(self):
        import torch
        self.torch = torch

    # torch's kernels are already multi-threaded (CPU) or massively parallel (CUDA): one block.
    def map(self, fn, arrays, dtype, cdtype):
        return fn(*arrays, out=None).to(dtype)

    @staticmethod
    def sub(a, b, out=None):
        return a - b

    def concat(self, arrays):
        return self.torch.cat(arrays, dim=0)

    def clip(self, a, low, high):
        return self.torch.clamp(a, low, high)

    @staticmethod
    def row_sum(a):
        return a.sum(dim=1)

    @staticmethod
    def row_dot(a, b):
        return (a * b).sum(dim=1)

    @staticmethod
    def col_sum(a):
        return a.sum(dim=0)

    @staticmethod
    def mul(a, b, out=None):
        return a * b

    def reduce(self, fn, arrays):
        return fn(*arrays)

    def first(self, a):
        return a

    def per_channel(self, shape):
        return None  # the layout's own view-based broadcast

    @staticmethod
    def fit(const, block):
        return const

    def is_array(self, a) -> bool:
        return isinstance(a, self.torch.Tensor)

    def is_float(self, a) -> bool:
        return a.dtype in (self.torch.float16, self.torch.bfloat16, self.torch.float32, self.torch.float64)

    def compute_dtype(self, a):
        return self.torch.float64 if a.dtype == self.torch.float64 else self.torch.float32

    def acc_dtype(self, a):
        # torch's float32 reductions are cascade-summed (CPU) or tree-shaped (CUDA), accurate enough for
        # the two-pass statistics; float64 accumulation is ~25x slower on the CPU and slow on most GPUs.
        return self.torch.float64 if a.dtype == self.torch.float64 else self.torch.float32

    def sum(self, a, axes, dtype):
        return a.sum(dim=axes, dtype=dtype)

    def dot(self, a, b, axes, dtype):
        return (a * b).sum(dim=axes, dtype=dtype)

    def astype(self, a, dtype):
        return a.to(dtype)

    def copy_as(self, a, dtype):
        return a.to(dtype, copy=True)

    def sqrt(self, a):
        return self.torch.sqrt(a)

    def all_finite(self, a) -> bool:
        return bool(self.torch.isfinite(a).all())

    def same_place(self, a, b) -> bool:
        return a.device == b.device

    def place(self, a) -> str:
        return str(a.device)

    def channels_last(self, x) -> bool:
        return x.ndim == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=self.torch.channels_last)

    def no_grad(self):
        # bnlib computes gradients by hand: record no autograd graph
        return self.torch.no_grad()


NUMPY = NumpyOps()
_TORCH = None


def ops_for(x):
    """The ops for x's array library; TypeError for anything else."""
    if isinstance(x, np.ndarray):
        return NUMPY
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        global _TORCH
        if _TORCH is None:
            _TORCH = TorchOps()
        return _TORCH
    raise TypeError(f"x must be a numpy.ndarray or a torch.Tensor, got {type(x).__module__}.{type(x).__name__}")

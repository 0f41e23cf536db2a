"""The few array operations where NumPy and PyTorch differ; the maths in bnlib is written once on top.

``ops_for(x)`` returns :data:`NUMPY` for a ``numpy.ndarray`` and :data:`TORCH` for a ``torch.Tensor``
(CPU or CUDA). torch is imported only when a tensor is passed, so NumPy users never pay for it.
"""
from __future__ import annotations

import sys

import numpy as np


class NumpyOps:
    name = "numpy"
    array_type_name = "numpy.ndarray"

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
        return a.sum(axis=axes, dtype=dtype)

    @staticmethod
    def dot(a, b, axes, dtype):
        # sum(a * b) over axes without materializing the product; a and b share a layout
        if a.ndim == 3:
            return np.einsum("ncl,ncl->c", a, b, dtype=dtype, casting="unsafe")
        return np.einsum("mc,mc->c", a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1]),
                         dtype=dtype, casting="unsafe")

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
    def float64():
        return np.float64


class TorchOps:
    name = "torch"
    array_type_name = "torch.Tensor"

    def __init__(self):
        import torch
        self.torch = torch

    def is_array(self, a) -> bool:
        return isinstance(a, self.torch.Tensor)

    def is_float(self, a) -> bool:
        return a.dtype in (self.torch.float16, self.torch.bfloat16, self.torch.float32, self.torch.float64)

    def compute_dtype(self, a):
        return self.torch.float64 if a.dtype == self.torch.float64 else self.torch.float32

    def acc_dtype(self, a):
        # CUDA reductions are tree-shaped (accurate in float32) and float64 is slow on most GPUs;
        # on the CPU, float64 accumulation costs little.
        if a.dtype == self.torch.float64 or a.device.type == "cpu":
            return self.torch.float64
        return self.torch.float32

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

    def float64(self):
        return self.torch.float64


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

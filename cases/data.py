"""Data sets that ship inside pip packages (nothing is downloaded at run time), as torch tensors.

Vision (Module 04): scikit-learn's copy of the UCI optical digits, 1,797 grayscale 8x8 images of the
digits 0-9 (Alpaydin & Kaynak 1998; ``sklearn.datasets.load_digits``), split once with a fixed seed.

Extension points. Later case studies register their own loaders here with :func:`register`, returning a
:class:`Split` (or, for environments, their own documented type) so notebooks load every data set the same
way, ``cases.data.load(name, **options)``:

* Module 05 (NLP): ``names``, the first and last names of the ``names`` package's 1990 US census lists
  (``dist.male.first``, ``dist.female.first``, ``dist.all.last``), as padded (N, T) int64 character ids with
  an (N, T) bool mask;
* Module 06 (RL): ``gymnasium``'s classic-control environments (``Pendulum-v1``, ``CartPole-v1``), made with
  a fixed seed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

LOADERS: dict[str, Callable[..., object]] = {}


def register(name: str):
    """Decorator: make a loader available as ``cases.data.load(name, ...)``."""
    def deco(fn):
        LOADERS[name] = fn
        return fn
    return deco


def load(name: str, **options):
    """The data set ``name`` (see :data:`LOADERS`), built by its loader with ``options``."""
    if name not in LOADERS:
        raise KeyError(f"no data set {name!r}; known: {sorted(LOADERS)}")
    return LOADERS[name](**options)


@dataclass(frozen=True)
class Split:
    """A train/test split. Images ``x_*``: float32 (N, C, H, W) with values in [0, 1]; labels ``y_*``: int64 (N,)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    def classes(self, keep, relabel: bool = False) -> "Split":
        """Only the samples whose label is in ``keep`` (e.g. ``range(5)``); with ``relabel`` the labels become
        0..len(keep)-1 in the order of ``keep``."""
        keep = list(keep)
        table = torch.full((int(max(self.y_train.max(), self.y_test.max())) + 1,), -1, dtype=torch.int64)
        table[torch.tensor(keep)] = torch.arange(len(keep)) if relabel else torch.tensor(keep)

        def part(x, y):
            idx = (table[y] >= 0).nonzero().flatten()
            return x[idx], table[y[idx]]
        return Split(*part(self.x_train, self.y_train), *part(self.x_test, self.y_test))

    def __repr__(self) -> str:
        return (f"Split(train {tuple(self.x_train.shape)}, test {tuple(self.x_test.shape)}, "
                f"{int(torch.unique(self.y_train).numel())} classes)")


@register("digits")
def digits(n_train: int = 1437, seed: int = 0) -> Split:
    """scikit-learn's 8x8 digits as (N, 1, 8, 8) float32 images in [0, 1] (pixel counts 0..16 divided by 16).

    The 1,797 images are shuffled with ``torch.randperm`` seeded by ``seed`` and cut after ``n_train``: the
    defaults give the 1,437 / 360 split used since Module 01.
    """
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(d.target, dtype=torch.int64)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    tr, te = perm[:n_train], perm[n_train:]
    return Split(x[tr], y[tr], x[te], y[te])


def batches(x: torch.Tensor, batch_size: int, generator: torch.Generator | None = None, drop_last: bool = True):
    """Index tensors of mini-batches over ``len(x)`` samples: shuffled when ``generator`` is given; the
    last incomplete batch is dropped unless ``drop_last`` is False (BN needs more than one sample)."""
    n = len(x)
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    stop = n - batch_size + 1 if drop_last else n
    return [order[i:i + batch_size] for i in range(0, max(stop, 0), batch_size)]


def to_numpy(x: torch.Tensor) -> np.ndarray:
    """A float32 NumPy copy of a tensor (for the NumPy corruption functions)."""
    return x.detach().cpu().numpy().astype(np.float32, copy=True)


from . import text as _text  # noqa: E402,F401  registers "names" (Module 05's census names, cases/text.py)
from . import rl as _rl  # noqa: E402,F401  registers "Pendulum-v1", "CartPole-v1" (Module 06, cases/rl.py)

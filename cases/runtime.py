"""Repeatable, bounded runs: thread limits, seeds, progress bars, and running one experiment over seeds.

Small models on a CPU run fastest, and repeatably, on one thread; a shared 2-core machine stays usable.
"""
from __future__ import annotations

import os
import random
import time
from contextlib import contextmanager
from typing import Callable, Iterable, Sequence, TypeVar

import numpy as np
import torch

T = TypeVar("T")

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")

QUICK_VARIABLE = "BNCOURSE_QUICK"


def quick() -> bool:
    """True when ``BNCOURSE_QUICK=1``: the test suite's smoke run of every notebook, where each experiment
    runs every line of its code at a small size (fewer seeds, steps, samples). Conclusions are drawn from
    full runs only (``make notebooks``); a quick run does not write results for module pages."""
    return os.environ.get(QUICK_VARIABLE, "") not in ("", "0")


def sized(full: T, small: T) -> T:
    """``full``, or ``small`` in a quick run (:func:`quick`), e.g. ``seeds = sized((0, 1, 2, 3, 4), (0, 1))``."""
    return small if quick() else full


def limit_threads(n: int = 1) -> int:
    """Run torch and NumPy's BLAS on ``n`` threads (1 by default); returns ``n``.

    Sets torch's intra-op threads and, through ``threadpoolctl``, the thread pools of the BLAS/OpenMP
    libraries NumPy and SciPy have already loaded; the ``OMP_NUM_THREADS``-style variables are set too, for
    libraries loaded later and for child processes.
    """
    n = max(1, int(n))
    torch.set_num_threads(n)
    for var in THREAD_VARIABLES:
        os.environ[var] = str(n)
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(limits=n)
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        pass
    return n


def seed_all(seed: int) -> torch.Generator:
    """Seed Python's, NumPy's and torch's global generators; returns a fresh ``torch.Generator`` seeded
    with ``seed`` for code that takes one explicitly (shuffling, noise)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def progress(iterable: Iterable[T], desc: str = "", total: int | None = None, leave: bool = True) -> Iterable[T]:
    """``iterable`` with a progress bar (tqdm: a widget in Jupyter, text elsewhere)."""
    from tqdm.auto import tqdm
    return tqdm(iterable, desc=desc, total=total, leave=leave)


def over_seeds(run: Callable[[int], T], seeds: Sequence[int] = (0, 1, 2), desc: str = "seeds") -> list[T]:
    """``[run(seed) for seed in seeds]``, each run seeded first (:func:`seed_all`), with a progress bar."""
    out = []
    for seed in progress(seeds, desc=desc):
        seed_all(seed)
        out.append(run(seed))
    return out


@contextmanager
def timer():
    """``with timer() as t: ...`` then ``t()`` is the elapsed time in seconds (wall clock)."""
    start = time.perf_counter()
    end = []
    yield lambda: (end[0] if end else time.perf_counter()) - start
    end.append(time.perf_counter())


def median_time(fn: Callable[[], object], repeats: int = 30, warmup: int = 3) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))

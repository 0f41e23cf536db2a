"""Figures of results over several seeds: the mean as a line (or bar) and the range (min to max) around it.

Every function takes a Matplotlib ``Axes`` and labels with units; none calls ``plt.show()``.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def mean_range(ax, x: Sequence[float], runs, label: str | None = None, color=None, marker: str = "o",
               style: str = "-", band: bool = True):
    """Plot ``runs`` (shape (seeds, len(x))) as its mean over seeds against ``x``, with the min..max range
    as a shaded band (``band``) or error bars. NaN entries (diverged runs) are left out of each point."""
    r = np.asarray(runs, dtype=np.float64)
    if r.ndim == 1:
        r = r[None, :]
    with np.errstate(all="ignore"):
        mean, lo, hi = np.nanmean(r, 0), np.nanmin(r, 0), np.nanmax(r, 0)
    if band:
        line, = ax.plot(x, mean, style, marker=marker, color=color, label=label, ms=4)
        ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
    else:
        ax.errorbar(x, mean, yerr=[mean - lo, hi - mean], fmt=style, marker=marker, color=color, label=label,
                    capsize=3, ms=4)
    return ax


def bars_mean_range(ax, groups: Mapping[str, Mapping[str, Sequence[float]]], colors: Sequence | None = None,
                    width: float = 0.8):
    """Grouped bars: ``groups[group][series] = values over seeds``. Each bar is the mean, its error bar the
    min..max range; groups along x, one bar per series (the same series in every group, in order)."""
    names = list(groups)
    series = list(next(iter(groups.values()))) if groups else []
    w = width / max(1, len(series))
    for j, s in enumerate(series):
        vals = [np.asarray(groups[g][s], dtype=np.float64) for g in names]
        mean = np.array([v.mean() for v in vals])
        err = np.array([[m - v.min(), v.max() - m] for m, v in zip(mean, vals)]).T
        x = np.arange(len(names)) + (j - (len(series) - 1) / 2) * w
        ax.bar(x, mean, w, yerr=err, capsize=3, label=s, color=None if colors is None else colors[j])
    ax.set_xticks(np.arange(len(names)), names)
    return ax


def loss_curves(ax, histories: Mapping[str, Sequence], window: int = 10, colors: Sequence | None = None):
    """Training-loss curves: ``histories[label]`` is a list (one per seed) of :class:`cases.train.History`;
    each label is drawn as the mean over seeds of the ``window``-step running mean, with its range. A run
    that diverged ends where it stopped (the others go on)."""
    for i, (label, hs) in enumerate(histories.items()):
        curves = [h.smoothed(window) for h in hs]
        n = max(len(c) for c in curves)
        runs = np.full((len(curves), n), np.nan)
        for j, c in enumerate(curves):
            runs[j, :len(c)] = c
        mean_range(ax, np.arange(n) + window, runs, label=label, marker="",
                   color=None if colors is None else colors[i])
    return ax

"""Average ranks (``scipy.stats.rankdata(x, 'average')``) in numpy.

Rank percentiles of attention (CLAM ``to_percentiles``) and the rank-sum AUC both need them;
importing ``scipy.stats`` for them would cost the torch-free parts (re-render, viewer) 0.6 s and
58 MiB.
"""
from __future__ import annotations

import numpy as np

__all__ = ["average_ranks"]


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x`` ``(N,)``, ties given the mean of their ranks; ``(N,)`` float64 equal
    to ``scipy.stats.rankdata(x, 'average')`` (a run of ``c`` ties starting at sorted position
    ``s`` gets ``s + (c + 1) / 2``, exact in float64)."""
    x = np.asarray(x)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    new = np.r_[True, xs[1:] != xs[:-1]]
    starts = np.flatnonzero(new)
    counts = np.diff(np.r_[starts, len(x)])
    ranks = np.empty(len(x), np.float64)
    ranks[order] = (starts + (counts + 1) / 2.0)[np.cumsum(new) - 1]
    return ranks

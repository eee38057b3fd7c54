"""Patch sampling by attention percentile (CLAM ``sample_rois`` behaviour).

The scores are first turned into rank percentiles within the bag (0-100, see
:func:`vis_utils.percentiles.rank_percentiles`); then one of three modes picks patches:

* ``topk`` - the ``k`` highest percentiles, highest first. Ties keep the order numpy's default
  ``argsort`` (quicksort/introsort, not stable) gives *reversed*, exactly as CLAM does, so the same
  patches come out for the same scores.
* ``reverse_topk`` - the ``k`` lowest percentiles, lowest first (``argsort()[:k]``).
* ``range_sample`` - ``min(k, n)`` patches drawn without replacement, uniformly, from the ``n``
  patches whose percentile ``p`` satisfies ``score_start <= p <= score_end``. Note: like CLAM,
  ``score_start`` / ``score_end`` are compared with the **0-100 percentiles as given** (CLAM's
  defaults 0.45 / 0.55 therefore select percentiles between 0.45 % and 0.55 %, usually nothing;
  write 45 / 55 for the middle of the distribution). The draw is
  ``RandomState(seed).choice(candidates, min(k, n), replace=False)``, identical to CLAM's
  ``np.random.seed(seed); np.random.choice(...)`` without touching numpy's global random state.
  No candidate gives empty arrays (CLAM returned index -1, i.e. silently the last patch).
"""
from __future__ import annotations

import numpy as np

from .percentiles import rank_percentiles

__all__ = ["SAMPLE_MODES", "sample_patches"]

SAMPLE_MODES = ("topk", "reverse_topk", "range_sample")


def sample_patches(
    scores: object,
    coords: object,
    *,
    k: int,
    mode: str,
    seed: int = 1,
    score_start: float = 0,
    score_end: float = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Pick patches by attention percentile.

    Args:
        scores: ``(N,)`` or ``(N, 1)`` attention scores of the bag (any unit).
        coords: ``(N, 2)`` level-0 px top-left ``(x, y)`` of the patches; only its length is
            checked (index ``coords`` with the returned indices).
        k: how many patches to pick (>= 0).
        mode: ``'topk'``, ``'reverse_topk'`` or ``'range_sample'`` (see the module docstring).
        seed: random seed for ``range_sample``.
        score_start, score_end: inclusive percentile window for ``range_sample``, compared with
            the 0-100 percentiles as given (CLAM semantics).

    Returns:
        ``(indices, percentiles)``: ``(k',)`` int64 indices into ``scores``/``coords`` and their
        ``(k',)`` float64 percentiles (0-100), ``k' <= k``.

    Raises:
        ValueError: unknown ``mode`` (the message lists the valid modes), negative ``k``, or
            ``coords`` whose length differs from ``scores``.
    """
    if mode not in SAMPLE_MODES:
        raise ValueError(
            f"unknown sample mode {mode!r}; use one of {', '.join(SAMPLE_MODES)} "
            "in sample_arguments.samples[].mode"
        )
    if k < 0:
        raise ValueError(f"sample k must be >= 0, got {k}")
    percentiles = rank_percentiles(scores)
    n_coords = len(np.asarray(coords))
    if n_coords != percentiles.size:
        raise ValueError(
            f"sample_patches: {percentiles.size} scores but {n_coords} coords; they must match"
        )
    if mode == "topk":
        idx = percentiles.argsort()[::-1][:k]
    elif mode == "reverse_topk":
        idx = percentiles.argsort()[:k]
    else:
        candidates = np.flatnonzero((percentiles >= score_start) & (percentiles <= score_end))
        if candidates.size == 0:
            idx = np.zeros(0, dtype=np.int64)
        else:
            rng = np.random.RandomState(seed)
            idx = rng.choice(candidates, min(k, candidates.size), replace=False)
    idx = np.asarray(idx, dtype=np.int64)
    return idx, percentiles[idx]

"""Attention-score percentiles, the two conventions CLAM's heatmap pipeline uses.

* :func:`rank_percentiles` - the percentile of each score *within its own bag*: scipy
  ``rankdata(scores, 'average') / N * 100`` (CLAM ``to_percentiles``). Used for the blockmap,
  for maps drawn with ``convert_to_percentiles`` and for patch sampling. The average ranks are
  ``wsi_core.ranks.average_ranks`` (numpy, tested equal to ``rankdata``).
* :func:`reference_percentiles` - the percentile of each score *against a reference bag*: scipy
  ``percentileofscore(ref, s, kind='rank')`` for each ``s`` (CLAM ``score2percentile`` with
  ``use_ref_scores``: the fine-grid scores against the blockmap scores). Computed with two
  ``np.searchsorted`` calls on the sorted reference instead of one scipy call per score.

Both return float64 percentiles in 0-100 and accept ``(N,)`` or ``(N, 1)`` input (CLAM stores
attention as ``(N, 1)``; it is flattened, which also avoids CLAM's 2-D percentile crash).
"""
from __future__ import annotations

import numpy as np

from wsi_core.ranks import average_ranks

__all__ = ["rank_percentiles", "reference_percentiles"]


def flat_finite(values: object, name: str) -> np.ndarray:
    """``values`` flattened to (N,) float64.

    Raises:
        ValueError: non-numeric values, or NaN / Inf (the message names ``name``).
    """
    arr = np.asarray(values)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    arr = arr.reshape(-1).astype(np.float64, copy=False)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or Inf; check the model output")
    return arr


def rank_percentiles(scores: object) -> np.ndarray:
    """Rank percentiles of ``scores`` within themselves (CLAM ``to_percentiles``).

    Args:
        scores: ``(N,)`` or ``(N, 1)`` numeric scores (any unit; raw attention logits).

    Returns:
        ``(N,)`` float64 in ``(0, 100]``: ``rankdata(scores, 'average') / N * 100`` - ties get
        the mean of their ranks. Empty input gives an empty array.

    Raises:
        ValueError: non-numeric input, or NaN / Inf among the scores.
    """
    arr = flat_finite(scores, "scores")
    if arr.size == 0:
        return np.zeros(0, dtype=np.float64)
    return average_ranks(arr) / arr.size * 100


def reference_percentiles(scores: object, ref: object) -> np.ndarray:
    """Percentile of each score against a reference set, scipy ``kind='rank'``.

    For one score ``s`` with ``left = #(ref < s)``, ``right = #(ref <= s)`` and ``n = len(ref)``
    scipy's ``percentileofscore(ref, s, kind='rank')`` is
    ``(left + right + (right > left)) * (50 / n)``; this evaluates it for all scores at once with
    two ``np.searchsorted`` calls on the sorted reference (O((N + n) log n)).

    Args:
        scores: ``(N,)`` or ``(N, 1)`` numeric scores.
        ref: ``(n,)`` or ``(n, 1)`` numeric reference scores (CLAM: the blockmap's raw scores).

    Returns:
        ``(N,)`` float64 percentiles in ``[0, 100]``.

    Raises:
        ValueError: the reference is empty, non-numeric input, or NaN / Inf in either.
    """
    s = flat_finite(scores, "scores")
    r = np.sort(flat_finite(ref, "reference scores"))
    if r.size == 0:
        raise ValueError("reference scores are empty; percentiles need at least one reference score")
    left = np.searchsorted(r, s, side="left")
    right = np.searchsorted(r, s, side="right")
    return (left + right + (right > left)) * (50.0 / r.size)  # scipy's exact arithmetic

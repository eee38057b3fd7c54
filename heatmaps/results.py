"""The books of a run: one owner writes every slide's status and numbers.

:class:`ResultsBook` is fed one outcome per slide by the run loop (the parent process) and
rewrites the results CSV (the process list + ``status``, ``bag_size``, ``Pred_c``, ``p_c``)
atomically after each one, so an interrupted batch loses nothing already done. The user's
process list is input only: it is never written (CLAM writes the status back into it).
"""
from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from wsi_core.errors import WsiHeatmapsError

from .pipeline import SlideResult
from .process_list import write_csv

__all__ = ["RunSummary", "ResultsBook", "describe_failure"]

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """What a run did: per-slide results and failures, and where the tables are."""

    results_csv: Path | None = None
    processed: list[SlideResult] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)   # (slide_id, reason)
    n_encoded: int = 0
    seconds: float = 0.0


def describe_failure(slide_id: str, exc: Exception) -> str:
    """The one-line reason of a failed slide (logged, and kept in its status)."""
    if isinstance(exc, WsiHeatmapsError):
        log.error("%s: FAILED: %s", slide_id, exc)
        return str(exc)
    log.error("%s: FAILED with an unexpected error: %s: %s", slide_id, type(exc).__name__, exc)
    log.debug("%s", "".join(traceback.format_exception(exc)))
    return f"{type(exc).__name__}: {exc}"


class ResultsBook:
    """The results table of one config's run (see the module docstring).

    Args:
        table: the selected process-list rows (reset index; row ``i`` = the ``i``-th slide).
        results_csv: where the table goes.
        class_names: class index -> name. n_classes: ``Pred_c`` / ``p_c`` columns written.
    """

    def __init__(self, table: pd.DataFrame, *, results_csv: Path, class_names: dict[int, str], n_classes: int) -> None:
        self.table = table
        self.names, self.n_classes = class_names, n_classes
        self.summary = RunSummary(results_csv=results_csv)

    def record(self, i: int, slide_id: str, outcome: SlideResult | Exception) -> None:
        """Book slide ``i``'s outcome and rewrite the results CSV (and the status) atomically."""
        if isinstance(outcome, SlideResult):
            self.table.loc[i, "bag_size"] = outcome.bag_size
            for c, (name, p) in enumerate(outcome.ranked(self.names)[:self.n_classes]):
                self.table.loc[i, f"Pred_{c}"] = name
                self.table.loc[i, f"p_{c}"] = p
            status = "processed" if not outcome.note else f"processed ({outcome.note})"
            self.summary.processed.append(outcome)
            top, p = outcome.ranked(self.names)[0]
            log.info("%s: bag %d, pred %s (p=%.4f), %.1f s%s", slide_id, outcome.bag_size, top, p, outcome.seconds,
                     " (outputs complete, skipped; --force reruns)" if outcome.skipped else "")
        else:
            reason = describe_failure(slide_id, outcome)
            status = f"failed: {reason}"
            self.summary.failed.append((slide_id, reason))
        status = status.replace("\n", " ")
        self.table.loc[i, "status"] = status
        write_csv(self.table, self.summary.results_csv)

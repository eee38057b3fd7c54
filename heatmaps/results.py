"""The books of a run: one owner writes every slide's status and numbers.

:class:`ResultsBook` is fed one outcome per slide by the run loop of a worker and writes the
slide's state JSON (:mod:`heatmaps.state`); the results CSV (the process list + ``status``,
``bag_size``, ``Pred_c``, ``p_c``) is assembled from the states of every slide - after each slide
in a single-process run, at the end by each worker of a multi-worker run - atomically and under a
lock, so an interrupted batch loses nothing already done and workers never overwrite each other's
rows. The user's process list is input only: it is never written (CLAM writes the status back).
"""
from __future__ import annotations

import logging
import os
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from wsi_core.errors import WsiHeatmapsError

from .claims import HOST, hold_lock, job_id
from .layout import results_lock_path
from .pipeline import SlideResult
from .process_list import write_csv
from .state import SlideState, read_state, write_state

__all__ = ["RunSummary", "ResultsBook", "RunIdentity", "describe_failure"]

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """What a run did: per-slide results and failures, and where the tables are."""

    results_csv: Path | None = None
    processed: list[SlideResult] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)   # (slide_id, reason)
    n_encoded: int = 0
    seconds: float = 0.0
    held_elsewhere: list[str] = field(default_factory=list)   # slides another worker was computing


def describe_failure(slide_id: str, exc: Exception) -> str:
    """The one-line reason of a failed slide (logged, and kept in its status)."""
    if isinstance(exc, WsiHeatmapsError):
        log.error("%s: FAILED: %s", slide_id, exc)
        return str(exc)
    log.error("%s: FAILED with an unexpected error: %s: %s", slide_id, type(exc).__name__, exc)
    log.debug("%s", "".join(traceback.format_exception(exc)))
    return f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class RunIdentity:
    """What every state written by this worker carries (see :class:`heatmaps.state.SlideState`)."""

    run_id: str = ""
    config_sha256: str = ""
    tool_version: str = ""
    model_sha256: str | None = None
    encoder: str | None = None
    encoder_weights: str | None = None


class ResultsBook:
    """The results table of one config's run (see the module docstring).

    Each outcome becomes the slide's state JSON (``state_paths[i]``, written atomically when the
    slide ends); the results CSV is assembled from the states, under its lock, so workers sharing
    a run never overwrite each other's rows: ``assemble_each`` (one process) rewrites it after
    every slide, else :meth:`assemble` does at the end. A slide skipped because its outputs are
    complete keeps its state.

    Args:
        table: the selected process-list rows (reset index; row ``i`` = the ``i``-th slide).
        results_csv: where the table goes. state_paths: row ``i``'s state JSON.
        class_names: class index -> name. n_classes: ``Pred_c`` / ``p_c`` columns written.
        identity: the run, config, tool, checkpoint and encoder every state records.
    """

    def __init__(self, table: pd.DataFrame, *, results_csv: Path, class_names: dict[int, str], n_classes: int,
                 state_paths: list[Path] | None = None, identity: RunIdentity | None = None,
                 assemble_each: bool = True) -> None:
        self.table = table
        self.names, self.n_classes = class_names, n_classes
        self.summary = RunSummary(results_csv=results_csv)
        self.state_paths = state_paths
        self.identity = identity or RunIdentity()
        self.assemble_each = assemble_each
        self._states: list[SlideState | None] | None = None
        self._filled = False      # every row of the table holds its state (then one slide refills one row)

    def _new_state(self, i: int, slide_id: str, outcome: SlideResult | Exception) -> SlideState:
        ident = self.identity
        prev = self._states[i] if self._states is not None else None
        state = SlideState(slide_id=slide_id, status="failed", run_id=ident.run_id, config_sha256=ident.config_sha256,
                           tool_version=ident.tool_version, model_sha256=ident.model_sha256, encoder=ident.encoder,
                           encoder_weights=ident.encoder_weights, host=HOST, pid=os.getpid(), job_id=job_id(),
                           computations=(prev.computations + 1) if prev is not None else 1)
        if isinstance(outcome, SlideResult):
            ranked = outcome.ranked(self.names)
            state.status, state.reason, state.bag_size = "processed", outcome.note, int(outcome.bag_size)
            state.pred, state.probs, state.seconds = int(outcome.pred), [float(p) for p in outcome.probs], outcome.seconds
            state.ranked = [(str(n), float(p)) for n, p in ranked]
        else:
            state.reason = describe_failure(slide_id, outcome)
        return state

    def record(self, i: int, slide_id: str, outcome: SlideResult | Exception) -> None:
        """Book slide ``i``'s outcome: its state JSON, then (``assemble_each``) the results CSV.

        Raises:
            WsiHeatmapsError: the results CSV cannot be written (a state that cannot be written is
            logged: the slide is then redone by a rerun).
        """
        if self.state_paths is not None and self._states is None:
            self._states = [read_state(p) for p in self.state_paths]
        if isinstance(outcome, SlideResult):
            self.summary.processed.append(outcome)
            top, p = outcome.ranked(self.names)[0]
            log.info("%s: bag %d, pred %s (p=%.4f), %.1f s%s", slide_id, outcome.bag_size, top, p, outcome.seconds,
                     " (outputs complete, skipped; --force reruns)" if outcome.skipped else "")
        state = None if isinstance(outcome, SlideResult) and outcome.skipped else self._new_state(i, slide_id, outcome)
        if not isinstance(outcome, SlideResult):
            self.summary.failed.append((slide_id, state.reason))
        if state is not None and self.state_paths is not None:
            try:
                write_state(self.state_paths[i], state)
            except WsiHeatmapsError as exc:
                log.error("%s: %s", slide_id, exc)
        if self._states is not None and state is not None:
            self._states[i] = state
            if self._filled:
                self._fill(i, state)
        elif self._states is None and state is not None:   # no state files: the table is the book
            self._fill(i, state)
        if self.assemble_each:
            self._write(reread=False)

    def _fill(self, i: int, state: SlideState) -> None:
        if state.status == "processed":
            self.table.loc[i, "bag_size"] = state.bag_size
            for c, (name, p) in enumerate(state.ranked[:self.n_classes]):
                self.table.loc[i, f"Pred_{c}"] = name
                self.table.loc[i, f"p_{c}"] = p
        self.table.loc[i, "status"] = state.status_line()

    def _write(self, *, reread: bool) -> Path:
        csv = self.summary.results_csv
        if self.state_paths is None:
            return write_csv(self.table, csv)
        with hold_lock(results_lock_path(csv)):
            if reread or self._states is None:   # the newest of the disk's and ours (ours may not be on disk)
                mine = self._states or [None] * len(self.state_paths)
                disk = [read_state(p) for p in self.state_paths]
                self._states = [d if m is None or (d is not None and d.finished >= m.finished) else m
                                for d, m in zip(disk, mine)]
            if reread or not self._filled:    # else only the row recorded since has changed (filled there)
                for i, state in enumerate(self._states):
                    if state is not None:
                        self._fill(i, state)
                self._filled = True
            return write_csv(self.table, csv)

    def assemble(self) -> Path:
        """Re-read every slide's state and write the results CSV (under its lock); returns its path."""
        return self._write(reread=True)

    def states(self) -> list[SlideState | None]:
        """Every row's state as last read or written."""
        if self._states is None and self.state_paths is not None:
            self._states = [read_state(p) for p in self.state_paths]
        return list(self._states or [])

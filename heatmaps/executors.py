"""How a run's slides are distributed: the :class:`Executor` interface, :class:`SequentialExecutor`
(one process, slides in process-list order) and :class:`ClaimingExecutor` (the same, taking only
the slides it can claim, so any number of workers - processes, GPUs, SLURM array tasks - can run
the same config side by side; :mod:`heatmaps.workers` starts them).

An executor only computes: it calls ``work(item)`` for each item and yields ``(item, outcome)``
pairs as they finish, where the outcome is the work's return value or the exception it raised.
Bookkeeping (per-slide state, results CSV) stays with the run loop's
:class:`heatmaps.results.ResultsBook`, owned by the process that runs the loop; several such
processes share a run through the claims and the states, never through each other's memory.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable, Generic, Iterable, Iterator, TypeVar

from .claims import DEFAULT_LOCK_TIMEOUT, ClaimInfo, try_claim

__all__ = ["Executor", "SequentialExecutor", "ClaimingExecutor", "Outcome"]

T = TypeVar("T")
R = TypeVar("R")
Outcome = object   # the work's return value, or the Exception it raised


class Executor(ABC, Generic[T, R]):
    """Runs ``work`` over items and yields ``(item, result or exception)`` as each finishes."""

    @abstractmethod
    def map(self, work: Callable[[T], R], items: Iterable[T]) -> Iterator[tuple[T, R | Exception]]:
        """Yield ``(item, outcome)`` for every item; an exception raised by ``work`` is the
        outcome of its item (never raised here), so one bad slide never stops the others.
        ``KeyboardInterrupt`` and ``SystemExit`` are not caught."""


class SequentialExecutor(Executor[T, R]):
    """Every item in this process, in order."""

    def map(self, work: Callable[[T], R], items: Iterable[T]) -> Iterator[tuple[T, R | Exception]]:
        for item in items:
            try:
                outcome: R | Exception = work(item)
            except Exception as exc:  # noqa: BLE001 - handed to the books, the batch goes on
                outcome = exc
            yield item, outcome


class ClaimingExecutor(Executor[T, R]):
    """Every item this worker can claim, in order: an item is skipped when ``done(item)`` (another
    worker of this run finished it) or when a live worker holds its claim (``claim_path(item)``,
    see :mod:`heatmaps.claims`). The claim is held while the item is computed *and* booked (until
    the consumer asks for the next item), then released; ``done`` is checked again once claimed,
    so an item finished meanwhile is not redone. Workers pull items dynamically: a slow item
    never stalls the others.

    Args:
        claim_path: item -> its lock file. done: item -> finished in this run (default: never).
        run_id: written into the claims. lock_timeout: s after which a live worker's claim is
        taken over. method: ``auto``, ``link`` or ``excl`` (:data:`heatmaps.claims.LOCK_METHODS`).
        on_takeover: (item, the stale claim) when a dead or timed-out worker's claim is taken over.
    """

    def __init__(self, claim_path: Callable[[T], Path], *, done: Callable[[T], bool] | None = None, run_id: str = "",
                 lock_timeout: float = DEFAULT_LOCK_TIMEOUT, method: str = "auto",
                 on_takeover: Callable[[T, ClaimInfo], None] | None = None) -> None:
        self.claim_path, self.done = claim_path, done or (lambda item: False)
        self.on_takeover = on_takeover
        self.run_id, self.lock_timeout, self.method = run_id, lock_timeout, method
        self.skipped_held: list[T] = []

    def claimed(self, item: T) -> None:
        """Called once ``item`` is claimed, before it is computed (a hook for subclasses)."""

    def took_over(self, item: T, stale: ClaimInfo) -> None:
        """Called when ``item``'s claim replaced the stale claim ``stale`` (default: ``on_takeover``)."""
        if self.on_takeover is not None:
            self.on_takeover(item, stale)

    def map(self, work: Callable[[T], R], items: Iterable[T]) -> Iterator[tuple[T, R | Exception]]:
        for item in items:
            if self.done(item):
                continue
            try:
                claim = try_claim(self.claim_path(item), run_id=self.run_id, lock_timeout=self.lock_timeout,
                                  method=self.method)
            except Exception as exc:  # noqa: BLE001 - e.g. a read-only output folder: this item's outcome
                yield item, exc
                continue
            if claim is None:
                self.skipped_held.append(item)
                continue
            try:
                if self.done(item):
                    continue
                if claim.took_over is not None:
                    self.took_over(item, claim.took_over)
                self.claimed(item)
                try:
                    outcome: R | Exception = work(item)
                except Exception as exc:  # noqa: BLE001 - handed to the books, the batch goes on
                    outcome = exc
                yield item, outcome
            finally:
                claim.release()

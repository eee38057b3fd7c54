"""How a run's slides are distributed: the :class:`Executor` interface and its first
implementation, :class:`SequentialExecutor` (one process, slides in process-list order).

An executor only computes: it calls ``work(item)`` for each item and yields ``(item, outcome)``
pairs as they finish, where the outcome is the work's return value or the exception it raised.
Bookkeeping (status, results CSV, per-slide state) stays with the run loop's
:class:`heatmaps.results.ResultsBook`, owned by the parent process, so parallel, per-GPU or
SLURM executors can be added behind the same interface without touching the pipeline or the books.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, Generic, Iterable, Iterator, TypeVar

__all__ = ["Executor", "SequentialExecutor", "Outcome"]

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

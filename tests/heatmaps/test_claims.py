"""Per-slide claims: exactly one of several workers started at the same instant gets a slide, a
dead or timed-out worker's claim is taken over (once, even when several workers try at once), a
claim is released only by its holder, and an unwritable folder is one clear line."""
from __future__ import annotations

import errno
import json
import logging
import multiprocessing as mp
import os
import subprocess
import time
from pathlib import Path

import pytest

from heatmaps import claims
from heatmaps.claims import HOST, hold_lock, read_claim, try_claim
from wsi_core.errors import WsiHeatmapsError

N_RACERS = 8


def _race(path: str, method: str, barrier, results) -> None:
    barrier.wait()
    claim = try_claim(path, method=method, lock_timeout=3600)
    results.put(claim is not None)
    if claim is not None:
        time.sleep(0.3)          # hold it while the others try
        claim.release()


def _run_racers(path: Path, method: str) -> list[bool]:
    ctx = mp.get_context("fork")
    barrier, results = ctx.Barrier(N_RACERS), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(path), method, barrier, results)) for _ in range(N_RACERS)]
    for p in procs:
        p.start()
    got = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    return got


@pytest.mark.parametrize("method", ["link", "excl", "auto"])
def test_workers_started_on_the_same_slide_at_the_same_instant_one_gets_it(tmp_path, method):
    got = _run_racers(tmp_path / "slide.lock", method)
    assert sum(got) == 1, got
    assert not (tmp_path / "slide.lock").exists()                    # released by its holder
    assert [p.name for p in tmp_path.iterdir()] == []                # no temporary file left


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def _write_lock(path: Path, *, pid: int, started: float, host: str = HOST) -> None:
    path.write_text(json.dumps({"host": host, "pid": pid, "job_id": "local", "run_id": "r0", "started": started,
                                "token": "t0"}))


def test_a_dead_workers_claim_is_taken_over_with_a_log_line(tmp_path, caplog):
    lock = tmp_path / "s.lock"
    dead = _dead_pid()
    _write_lock(lock, pid=dead, started=time.time())
    with caplog.at_level(logging.WARNING, logger="heatmaps.claims"):
        claim = try_claim(lock)
    assert claim is not None and read_claim(lock).pid == os.getpid()
    assert f"taking over the stale claim of {HOST} pid {dead}" in caplog.text and "is gone" in caplog.text
    claim.release()
    assert list(tmp_path.iterdir()) == []


def test_a_live_claim_is_respected_until_lock_timeout(tmp_path, caplog):
    lock = tmp_path / "s.lock"
    _write_lock(lock, pid=os.getppid(), started=time.time() - 100)    # a live process, 100 s ago
    assert try_claim(lock, lock_timeout=3600) is None
    assert read_claim(lock).token == "t0"
    _write_lock(lock, pid=1, started=time.time() - 100, host="other-node")   # another host: only its age counts
    assert try_claim(lock, lock_timeout=3600) is None
    with caplog.at_level(logging.WARNING, logger="heatmaps.claims"):
        claim = try_claim(lock, lock_timeout=50)
    assert claim is not None and "older than --lock_timeout 50 s" in caplog.text


def _takeover_race(path: str, barrier, results) -> None:
    barrier.wait()
    claim = try_claim(path, lock_timeout=3600)
    results.put(None if claim is None else claim.info.token)
    if claim is not None:
        time.sleep(0.5)
        claim.release()


def test_a_stale_claim_is_taken_over_by_exactly_one_of_several_workers(tmp_path):
    lock = tmp_path / "s.lock"
    _write_lock(lock, pid=_dead_pid(), started=time.time())
    ctx = mp.get_context("fork")
    barrier, results = ctx.Barrier(N_RACERS), ctx.Queue()
    procs = [ctx.Process(target=_takeover_race, args=(str(lock), barrier, results)) for _ in range(N_RACERS)]
    for p in procs:
        p.start()
    got = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert sum(t is not None for t in got) == 1, got
    assert list(tmp_path.iterdir()) == []      # no lock, takeover marker or renamed stale lock left


def test_release_leaves_a_claim_taken_over_meanwhile(tmp_path, caplog):
    lock = tmp_path / "s.lock"
    mine = try_claim(lock)
    _write_lock(lock, pid=os.getppid(), started=time.time())      # someone took it over (lock_timeout)
    with caplog.at_level(logging.WARNING, logger="heatmaps.claims"):
        mine.release()
    assert read_claim(lock).token == "t0" and "was taken over" in caplog.text


def test_an_unreadable_claim_counts_as_held_until_it_is_a_minute_old(tmp_path):
    lock = tmp_path / "s.lock"
    lock.write_text("")                          # a worker killed while writing its body (excl)
    assert try_claim(lock) is None
    old = time.time() - 120
    os.utime(lock, (old, old))
    assert try_claim(lock) is not None


def test_an_unwritable_folder_is_one_line(tmp_path, monkeypatch):
    real_open = os.open

    def read_only(path, flags, *a):
        if flags & os.O_CREAT:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *a)

    monkeypatch.setattr(claims.os, "open", read_only)
    with pytest.raises(WsiHeatmapsError, match=r"cannot create the claim .*s\.lock: Read-only file system .*choose a writable raw_save_dir"):
        try_claim(tmp_path / "s.lock")


def test_hold_lock_serialises_and_times_out_with_the_holder_named(tmp_path):
    lock = tmp_path / "results.csv.lock"
    with hold_lock(lock):
        with pytest.raises(WsiHeatmapsError, match=rf"held by {HOST} pid {os.getpid()}"):
            with hold_lock(lock, timeout=0.2):
                pass
    assert not lock.exists()

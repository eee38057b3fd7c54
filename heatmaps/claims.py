"""Per-slide claims: the lock files that let any number of workers (processes, GPUs, SLURM array
tasks, machines sharing the output folder) share one run without computing a slide twice.

A worker claims a slide by *creating* its lock file atomically, so exactly one of several workers
started on the same slide at the same instant gets it:

* ``link`` (default, safe on NFS): the body is written to a unique sibling file, then hard-linked
  onto the lock name; ``link()`` fails with ``EEXIST`` when the lock exists (the NFS-safe idiom of
  ``open(2)``'s manual page). The lock appears with its whole body.
* ``excl``: ``open(O_CREAT | O_EXCL)`` (atomic on local file systems and NFSv3+).
* ``auto``: ``link``, falling back to ``excl`` on a file system without hard links.

The body is JSON: ``host``, ``pid``, ``job_id`` (SLURM job / array task or ``local``), ``run_id``,
``started`` (epoch s) and a random ``token``. A claim is released (its file removed, after checking
the token) when the slide ends, processed or failed. A claim is **stale** when its pid is dead on
this host, or when it is older than ``lock_timeout`` seconds; a stale claim is taken over, with a
log line. The takeover is race-free: the taker first creates ``<lock>.takeover`` exclusively (one
taker at a time), checks that the lock is still the stale one it judged (same inode and body),
renames it to a unique name, deletes that, and claims like anyone else - a worker that created a
fresh lock meanwhile keeps it.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsi_core.errors import WsiHeatmapsError

__all__ = ["Claim", "ClaimInfo", "try_claim", "read_claim", "claim_is_stale", "job_id", "hold_lock",
           "shared_run_id", "new_run_id", "RUN_ID_ENV",
           "create_exclusive", "LOCK_METHODS", "DEFAULT_LOCK_TIMEOUT", "LOCK_SUFFIX"]

log = logging.getLogger(__name__)

LOCK_METHODS = ("auto", "link", "excl")
DEFAULT_LOCK_TIMEOUT = 48 * 3600.0    # s: a claim older than this is taken over even if its worker lives
LOCK_SUFFIX = ".lock"
_TAKEOVER_STALE = 300.0               # s: a takeover marker this old was left by a worker killed mid-takeover
HOST = socket.gethostname()


RUN_ID_ENV = "WSI_HEATMAPS_RUN_ID"


def shared_run_id() -> str | None:
    """The run this worker shares with others: ``$WSI_HEATMAPS_RUN_ID`` (set by the launcher for
    its workers), else ``$SLURM_ARRAY_JOB_ID`` (every task of one array), else None."""
    return os.environ.get(RUN_ID_ENV) or os.environ.get("SLURM_ARRAY_JOB_ID") or None


def new_run_id() -> str:
    """A fresh run id: ``{UTC time}-{8 hex}``."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:8]


def job_id() -> str:
    """This worker's job: ``{SLURM_ARRAY_JOB_ID}_{SLURM_ARRAY_TASK_ID}``, ``SLURM_JOB_ID``, else ``local``."""
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID") or "local"


@dataclass(frozen=True)
class ClaimInfo:
    """What a lock file says: who holds it and since when (``started``: epoch s)."""

    host: str
    pid: int
    job_id: str
    run_id: str
    started: float
    token: str

    @property
    def age(self) -> float:
        """Seconds since the claim was made."""
        return max(0.0, time.time() - self.started)

    def describe(self) -> str:
        return f"{self.host} pid {self.pid} (job {self.job_id}), {self.age:.0f} s ago"


def _write_error(path: Path, exc: OSError) -> WsiHeatmapsError:
    """The one-line error of a lock that cannot be written (read-only or full file system)."""
    hints = {errno.ENOSPC: "the disk is full; free space", errno.EDQUOT: "the disk quota is exceeded; free space",
             errno.EROFS: "the file system is read-only; choose a writable raw_save_dir",
             errno.EACCES: "permission denied; make raw_save_dir writable",
             errno.EPERM: "permission denied; make raw_save_dir writable"}
    hint = hints.get(exc.errno or -1, "check exp_arguments.raw_save_dir")
    return WsiHeatmapsError(f"cannot create the claim {path}: {exc.strerror or exc} (in {path.parent}); {hint}")


def _create_excl(path: Path, body: bytes) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    try:
        os.write(fd, body)
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def _create_link(path: Path, body: bytes) -> bool:
    tmp = path.with_name(f"{path.name}.{HOST}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    try:
        os.write(fd, body)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        if os.stat(tmp).st_nlink == 2:   # NFS: the reply was lost but the link was made
            return True
        raise exc
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def create_exclusive(path: str | os.PathLike[str], body: bytes, *, method: str = "auto") -> bool:
    """Create ``path`` holding ``body`` unless it exists, atomically (see the module docstring).

    Returns:
        True when this call created it, False when it existed.

    Raises:
        WsiHeatmapsError: the folder cannot be written (read-only, full, no permission): one line
            naming the file and the fix.
        ValueError: an unknown ``method``.
    """
    if method not in LOCK_METHODS:
        raise ValueError(f"lock method {method!r}: choose one of {', '.join(LOCK_METHODS)}")
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if method == "excl":
            return _create_excl(path, body)
        try:
            return _create_link(path, body)
        except OSError as exc:
            if method == "auto" and exc.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV):
                return _create_excl(path, body)
            raise
    except OSError as exc:
        raise _write_error(path, exc) from exc


def read_claim(path: str | os.PathLike[str]) -> ClaimInfo | None:
    """The claim in ``path``; None when there is none. A body that cannot be parsed (a worker
    killed while writing it with ``excl``) reads as a claim by nobody, dated by the file's mtime."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return None
    try:
        d = json.loads(raw)
        return ClaimInfo(str(d["host"]), int(d["pid"]), str(d["job_id"]), str(d.get("run_id", "")),
                         float(d["started"]), str(d["token"]))
    except (ValueError, KeyError, TypeError):
        return ClaimInfo("?", -1, "?", "", mtime, "")


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:   # a killed worker not yet reaped by its parent is a zombie: dead for our purpose
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True


def claim_is_stale(info: ClaimInfo, *, lock_timeout: float) -> str | None:
    """Why ``info`` is stale (a one-line reason), or None when its worker may still hold it."""
    if info.host == "?" and info.age > 60.0:
        return f"unreadable claim, {info.age:.0f} s old"
    if info.host == HOST and info.pid > 0 and not _pid_alive(info.pid):
        return f"pid {info.pid} on {info.host} is gone"
    if info.age > lock_timeout:
        return f"older than --lock_timeout {lock_timeout:.0f} s"
    return None


@dataclass
class Claim:
    """A held claim; :meth:`release` removes its lock file (only if it is still ours).
    ``took_over``: the stale claim this one replaced (its worker's temporary files may remain)."""

    path: Path
    info: ClaimInfo
    took_over: ClaimInfo | None = None

    def release(self) -> None:
        now = read_claim(self.path)
        if now is None or now.token != self.info.token:
            log.warning("claim %s was taken over by %s while held; left to it", self.path,
                        now.describe() if now else "nobody")
            return
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def __enter__(self) -> "Claim":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _body(run_id: str) -> tuple[ClaimInfo, bytes]:
    info = ClaimInfo(HOST, os.getpid(), job_id(), run_id, time.time(), uuid.uuid4().hex)
    return info, json.dumps(info.__dict__).encode()


def _take_over(path: Path, stale: ClaimInfo, reason: str, *, method: str) -> bool:
    """Remove the stale lock ``path`` (still the one judged stale) under the takeover marker;
    False when another worker is taking it over or the lock changed."""
    marker = path.with_name(path.name + ".takeover")
    _, body = _body("")
    if not create_exclusive(marker, body, method=method):
        other = read_claim(marker)
        if other is not None and claim_is_stale(other, lock_timeout=_TAKEOVER_STALE) is not None:
            try:      # its taker died in the few ms of a takeover; the next attempt proceeds
                os.unlink(marker)
            except FileNotFoundError:
                pass
        return False
    try:
        now = read_claim(path)
        if now is None:
            return True
        if now != stale:
            return False
        grave = path.with_name(f"{path.name}.stale-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(path, grave)
        except FileNotFoundError:
            return True
        os.unlink(grave)
        log.warning("%s: taking over the stale claim of %s: %s", path.name, stale.describe(), reason)
        return True
    finally:
        try:
            os.unlink(marker)
        except FileNotFoundError:
            pass


def try_claim(path: str | os.PathLike[str], *, run_id: str = "", lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
              method: str = "auto") -> Claim | None:
    """Claim the slide whose lock file is ``path``.

    Returns:
        The :class:`Claim` (release it when the slide ends), or None when a live worker holds it.

    Raises:
        WsiHeatmapsError: the lock cannot be written (read-only or full file system): one line.
    """
    path = Path(path)
    replaced = None
    for _ in range(3):
        info, body = _body(run_id)
        if create_exclusive(path, body, method=method):
            return Claim(path, info, replaced)
        held = read_claim(path)
        if held is None:
            continue                       # released between our attempt and our read: try again
        reason = claim_is_stale(held, lock_timeout=lock_timeout)
        if reason is None:
            log.debug("%s: claimed by %s", path.name, held.describe())
            return None
        if not _take_over(path, held, reason, method=method):
            return None
        replaced = held
    return None


class hold_lock:
    """A short exclusive section between processes (e.g. assembling the results CSV): waits up
    to ``timeout`` s for ``path``, taking over one whose holder is dead or that is older than
    ``stale_after`` s. Use as a context manager.

    Raises (on entry):
        WsiHeatmapsError: still held after ``timeout`` s (the holder is named), or not writable.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 120.0, stale_after: float = 600.0,
                 method: str = "auto") -> None:
        self.path, self.timeout, self.stale_after, self.method = Path(path), timeout, stale_after, method
        self.claim: Claim | None = None

    def __enter__(self) -> "hold_lock":
        deadline = time.monotonic() + self.timeout
        delay = 0.005
        while True:
            self.claim = try_claim(self.path, lock_timeout=self.stale_after, method=self.method)
            if self.claim is not None:
                return self
            if time.monotonic() > deadline:
                raise WsiHeatmapsError(f"{self.path} is held by {read_claim(self.path).describe() if read_claim(self.path) else '?'} "
                                       f"for over {self.timeout:.0f} s; remove it if that process is gone")
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def __exit__(self, *exc: Any) -> None:
        if self.claim is not None:
            self.claim.release()


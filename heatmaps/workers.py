"""Starting the workers of a cohort run: local processes (``--workers N``, ``--gpus 0 1 ...``,
``--executor local``) or one SLURM job array through submitit (``--executor slurm``).

Every worker runs the same command line (with ``--_worker``) and the same code path: the run loop
with a :class:`heatmaps.executors.ClaimingExecutor`, pulling slides through the claims
(:mod:`heatmaps.claims`), so workers can be added, killed or requeued at any time. The launcher
gives them one run id (``$WSI_HEATMAPS_RUN_ID``); the first worker records the effective config's
hash and the others must match it. When they are done the launcher assembles each config's
results CSV from the slide states and prints one summary line per config.

Users with their own ``sbatch`` scripts run one worker per array task with ``--shard i/n`` (or
nothing: ``SLURM_ARRAY_TASK_ID`` / ``SLURM_ARRAY_TASK_COUNT`` are read).
"""
from __future__ import annotations

import logging
import math
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from wsi_core.errors import ConfigError

from .claims import RUN_ID_ENV, new_run_id

__all__ = ["parse_shard", "env_shard", "SlurmOptions", "launch_local", "launch_slurm", "worker_command",
           "slurm_worker", "slurm_minutes", "WORKER_FLAG"]

log = logging.getLogger(__name__)
WORKER_FLAG = "--_worker"


def parse_shard(text: str) -> tuple[int, int]:
    """``'i/n'`` -> ``(i, n)``, 0 <= i < n.

    Raises:
        ConfigError: not ``i/n`` with integers 0 <= i < n.
    """
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if m is None or not int(m.group(1)) < int(m.group(2)):
        raise ConfigError(f"--shard {text!r}: expected i/n with 0 <= i < n, e.g. --shard 0/4")
    return int(m.group(1)), int(m.group(2))


def env_shard() -> tuple[int, int] | None:
    """``(SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN, SLURM_ARRAY_TASK_COUNT)`` inside a user's
    job array; None outside one, or in a worker this package started (those pull dynamically)."""
    env = os.environ
    if env.get(RUN_ID_ENV) or not env.get("SLURM_ARRAY_TASK_ID") or not env.get("SLURM_ARRAY_TASK_COUNT"):
        return None
    i = int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
    n = int(env["SLURM_ARRAY_TASK_COUNT"])
    return (i, n) if 0 <= i < n and n > 1 else None


def worker_command(argv: list[str]) -> list[str]:
    """The command line of one local worker: this Python, ``-m create_heatmaps``, ``argv`` + ``--_worker``."""
    return [sys.executable, "-m", "create_heatmaps", *argv, WORKER_FLAG]


def _threads_each(n: int) -> str:
    return str(max(1, (os.cpu_count() or 1) // n))


def launch_local(argv: list[str], *, workers: int, gpus: list[str] | None = None, run_id: str | None = None) -> tuple[str, list[int]]:
    """Start ``workers`` local worker processes (one per GPU of ``gpus`` when given: its
    ``CUDA_VISIBLE_DEVICES``; more workers than GPUs share them round-robin) and wait for them.
    Without ``OMP_NUM_THREADS`` in the environment each worker gets an equal share of the cores.

    Returns:
        The run id and each worker's exit status (negative: killed by that signal).
    """
    run_id = run_id or new_run_id()
    n = max(workers, len(gpus or []))
    procs = []
    for k in range(n):
        env = dict(os.environ, **{RUN_ID_ENV: run_id})
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(gpus[k % len(gpus)])
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env.setdefault(var, _threads_each(n))
        procs.append(subprocess.Popen(worker_command(argv), env=env))
    log.info("run %s: %d local workers (pids %s)%s", run_id, n, " ".join(str(p.pid) for p in procs),
             f" on GPUs {' '.join(map(str, gpus))}" if gpus else "")
    codes = [p.wait() for p in procs]
    for p, code in zip(procs, codes):
        if code < 0:
            log.error("worker pid %d was killed by signal %d; its slide's claim is stale and is taken over by a rerun "
                      "or another worker", p.pid, -code)
    return run_id, codes


def slurm_minutes(text: str | None) -> int:
    """``--slurm_time``: minutes (``90``), ``HH:MM:SS``, ``MM:SS`` or ``D-HH:MM:SS`` -> whole minutes
    (rounded up; default 60).

    Raises:
        ConfigError: any other form.
    """
    if not text:
        return 60
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if m is None:
        raise ConfigError(f"--slurm_time {text!r}: expected minutes, HH:MM:SS or D-HH:MM:SS")
    d, a, b, c = (int(g) if g else None for g in m.groups())
    if b is None:
        minutes = a
    elif c is None:
        minutes = a + b / 60 if d is None else a * 60 + b
    else:
        minutes = a * 60 + b + c / 60
    return max(1, math.ceil((d or 0) * 1440 + minutes))   # a part minute counts: never below the asked time


@dataclass
class SlurmOptions:
    """The ``--slurm_*`` flags: partition, time limit (minutes), memory (``16G``), GPUs per task,
    array parallelism (max tasks at once) and extra ``#SBATCH`` keys (``KEY=VALUE``)."""

    partition: str | None = None
    minutes: int = 60
    mem: str | None = None
    gpus_per_task: int | None = None
    array_parallelism: int | None = None
    additional: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def parse_additional(items: list[str] | None) -> dict[str, str]:
        """``['account=abc', 'qos=long']`` -> ``{'account': 'abc', 'qos': 'long'}``.

        Raises:
            ConfigError: an item that is not ``KEY=VALUE``.
        """
        out = {}
        for item in items or []:
            if "=" not in item or not item.split("=", 1)[0].strip():
                raise ConfigError(f"--slurm_additional {item!r}: expected KEY=VALUE, e.g. account=mylab")
            key, value = item.split("=", 1)
            out[key.strip().lstrip("-")] = value.strip()
        return out


def slurm_worker(argv: list[str], run_id: str) -> int:
    """One task of the SLURM array (runs on the node): a worker of run ``run_id``."""
    os.environ[RUN_ID_ENV] = run_id
    from create_heatmaps import main

    return int(main([*argv, WORKER_FLAG]))


def launch_slurm(argv: list[str], *, tasks: int, options: SlurmOptions, log_dir: Path,
                 run_id: str | None = None, wait: bool = True) -> tuple[str, list[int]]:
    """Submit one SLURM job array of ``tasks`` workers through submitit; wait for it (``wait``).

    Returns:
        The run id and each task's exit status (1 for a task SLURM failed or cancelled).

    Raises:
        ConfigError: SLURM is not available here (no ``sbatch``) or submitit is not installed.
    """
    if shutil.which("sbatch") is None:
        raise ConfigError("--executor slurm: SLURM is not available here (no sbatch on PATH); run on a SLURM login "
                          "node, or use --executor local")
    try:
        import submitit
    except ImportError:
        raise ConfigError("--executor slurm needs submitit: pip install submitit") from None
    run_id = run_id or new_run_id()
    ex = submitit.AutoExecutor(folder=str(log_dir), cluster="slurm")
    params: dict = {"timeout_min": options.minutes, "slurm_job_name": f"heatmaps-{run_id}"}
    if options.partition:
        params["slurm_partition"] = options.partition
    if options.mem:
        params["slurm_mem"] = options.mem
    if options.gpus_per_task:
        params["slurm_gpus_per_task"] = options.gpus_per_task
    if options.array_parallelism:
        params["slurm_array_parallelism"] = options.array_parallelism
    if options.additional:
        params["slurm_additional_parameters"] = options.additional
    ex.update_parameters(**params)
    jobs = ex.map_array(slurm_worker, [list(argv)] * tasks, [run_id] * tasks)
    log.info("run %s: SLURM job array %s (%d tasks); logs in %s", run_id, jobs[0].job_id.split("_")[0], tasks, log_dir)
    if not wait:
        return run_id, []
    codes = []
    for job in jobs:
        try:
            codes.append(int(job.result()))
        except Exception as exc:  # noqa: BLE001 - a failed / cancelled task: reported, the others count
            log.error("SLURM task %s failed: %s", job.job_id, str(exc).strip().splitlines()[-1] if str(exc).strip() else exc)
            codes.append(1)
    return run_id, codes


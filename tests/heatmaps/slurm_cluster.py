"""A real single-node SLURM cluster on this machine for the tests (Debian's ``slurm-wlm`` and
``munge``, installed by ``.ci/run`` as root): a minimal ``slurm.conf`` for this host on private
ports, ``munged``, ``slurmctld`` and ``slurmd`` started as root, stopped afterwards.

:func:`single_node_slurm` yields the environment (``SLURM_CONF``) the clients need, or raises
:class:`SlurmUnavailable` with the reason (not root, a binary missing, a daemon that does not come
up), which the fixture turns into a skip.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


class SlurmUnavailable(RuntimeError):
    """Why a single-node SLURM cannot run here."""


def _node_line() -> str:
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, timeout=30).stdout
    line = next((x for x in out.splitlines() if x.startswith("NodeName=")), None)
    if line is None:
        raise SlurmUnavailable(f"slurmd -C printed no node line: {out!r}")
    return line + " NodeAddr=127.0.0.1 State=UNKNOWN"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(cond, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.25)
    return False


@contextmanager
def single_node_slurm(root: Path) -> Iterator[dict[str, str]]:
    """Run munged, slurmctld and slurmd for this host from ``root``; yields the client environment.

    Raises:
        SlurmUnavailable: the reason it cannot run here.
    """
    if os.geteuid() != 0:
        raise SlurmUnavailable("needs root to start slurmd")
    missing = [b for b in ("munged", "slurmctld", "slurmd", "sbatch", "sinfo") if shutil.which(b) is None]
    if missing:
        raise SlurmUnavailable(f"{', '.join(missing)} not installed (apt-get install slurm-wlm munge)")
    host = socket.gethostname()
    root.mkdir(parents=True, exist_ok=True)
    for d in ("state", "spool", "munge", "log"):
        (root / d).mkdir(exist_ok=True)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    sock = root / "munge" / "munge.socket"
    conf = root / "slurm.conf"
    node = _node_line().replace(f"NodeName={host}", f"NodeName={host}", 1)
    conf.write_text("\n".join([
        "ClusterName=wsitest", f"SlurmctldHost={host}(127.0.0.1)", "AuthType=auth/munge", "CredType=cred/munge",
        f"AuthInfo=socket={sock}", "SlurmUser=root", "SlurmdUser=root",
        f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
        f"StateSaveLocation={root / 'state'}", f"SlurmdSpoolDir={root / 'spool'}",
        f"SlurmctldPidFile={root / 'slurmctld.pid'}", f"SlurmdPidFile={root / 'slurmd.pid'}",
        f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}", f"SlurmdLogFile={root / 'log' / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "MpiDefault=none",
        "SchedulerType=sched/builtin", "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
        "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
        "ReturnToService=2", "SlurmctldTimeout=30", "SlurmdTimeout=30", "MaxArraySize=1000",
        node, f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4", ""]))
    env = dict(os.environ, SLURM_CONF=str(conf))
    procs: list[subprocess.Popen] = []
    try:
        procs.append(subprocess.Popen(["munged", "-F", "--force", f"--key-file={key}", f"--socket={sock}",
                                       f"--pid-file={root / 'munge' / 'munged.pid'}", f"--log-file={root / 'log' / 'munged.log'}",
                                       f"--seed-file={root / 'munge' / 'seed'}"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        if not _wait(sock.exists, 10):
            raise SlurmUnavailable(f"munged did not start: {(root / 'log' / 'munged.log').read_text() if (root / 'log' / 'munged.log').exists() else ''}")
        for daemon in ("slurmctld", "slurmd"):
            procs.append(subprocess.Popen([daemon, "-D", "-f", str(conf)], env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

        def node_idle() -> bool:
            for p in procs:
                if p.poll() is not None:
                    raise SlurmUnavailable(f"{p.args[0]} exited with {p.returncode}: see {root / 'log'}")
            r = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True, timeout=10)
            return r.returncode == 0 and r.stdout.strip() in ("idle", "mix", "alloc")

        if not _wait(node_idle, 60):
            logs = " | ".join(p.read_text()[-300:] for p in (root / "log").glob("slurm*.log"))
            raise SlurmUnavailable(f"the SLURM node did not come up in 60 s: {logs}")
        yield env
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

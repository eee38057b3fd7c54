"""Cohort runs shared by several workers: every slide computed exactly once, one results table
assembled from the per-slide states, the process list untouched, nothing left behind; a worker
killed mid-slide costs nothing but its slide's redo; the faults of the issue each say so in one
line. Tiny synthetic slides with pre-extracted features (tests/heatmaps/tiny_cohort.py)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from heatmaps.config import load_config
from heatmaps.executors import ClaimingExecutor
from heatmaps.run import WorkerOptions, run_config
from heatmaps.state import read_state
from heatmaps.workers import env_shard, parse_shard, slurm_minutes
from wsi_core.errors import ConfigError

from .tiny_cohort import make_tiny_cohort, output_files, variant

REPO = Path(__file__).resolve().parents[2]
N = 8


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """The tiny cohort's config (8 slides) and, beside it, a single-process reference run in ``ref/``."""
    root = tmp_path_factory.mktemp("cohort")
    config = make_tiny_cohort(root, N)
    ref = variant(config, "ref")
    summary = run_config(load_config(ref), source="ref", progress=False)
    assert len(summary.processed) == N and not summary.failed
    return config


def _cli(args: list[str], *, env: dict | None = None, **kw) -> subprocess.Popen:
    env = dict(env or os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return subprocess.Popen([sys.executable, "-m", "create_heatmaps", *args, "--quiet"], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _states(out: Path) -> dict[str, dict]:
    return {p.name[:-len("_state.json")]: json.loads(p.read_text()) for p in out.rglob("*_state.json")}


def _leftovers(out: Path) -> list[str]:
    return [str(p) for p in out.rglob("*") if p.is_file() and (".lock" in p.name or ".tmp" in p.name
                                                               or ".takeover" in p.name or ".stale-" in p.name)]


def _same_outputs(ref: Path, out: Path) -> None:
    a, b = output_files(ref), output_files(out)
    assert sorted(a) == sorted(b)
    config = "raw/TINY/config.yaml"          # names its own output folders
    assert a.pop(config).replace(str(ref).encode(), str(out).encode()) == b.pop(config)
    different = [name for name in a if a[name] != b[name]]
    assert not different, different


@pytest.mark.slow
def test_four_concurrent_workers_compute_every_slide_once(cohort):
    config = variant(cohort, "four")
    out = cohort.parent / "four"
    process_list = cohort.parent / "process_list.csv"
    before = process_list.read_bytes()
    proc = _cli(["--config", str(config), "--workers", "4"])
    stdout, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    states = _states(out)
    assert sorted(states) == [f"tiny_{k:02d}" for k in range(N)]
    assert {s["computations"] for s in states.values()} == {1}                  # exactly once
    assert len({s["run_id"] for s in states.values()}) == 1
    # how the slides spread over the 4 pids depends on the machine's load (a worker that starts first
    # may take them all on 2 busy cores); exclusivity under real races is tests/heatmaps/test_claims.py
    results = pd.read_csv(out / "results" / "process_list.csv")
    assert len(results) == N and list(results["status"]) == ["processed"] * N
    assert process_list.read_bytes() == before                                  # input only
    assert _leftovers(out) == []
    assert "8 processed, 0 failed, 0 running, 0 pending" in stdout              # the summary line
    _same_outputs(cohort.parent / "ref", out)
    status = subprocess.run([sys.executable, "-m", "create_heatmaps", "status", str(out / "raw" / "TINY")],
                            capture_output=True, text=True, cwd=REPO, timeout=300)
    assert status.returncode == 0 and status.stdout.startswith("8 processed, 0 failed, 0 running, 0 pending")


@pytest.mark.slow
def test_a_worker_killed_mid_slide_is_redone_by_a_rerun(cohort):
    config = variant(cohort, "killed")
    out = cohort.parent / "killed"
    proc = _cli(["--config", str(config), "--workers", "4"])
    victim = None
    deadline = time.monotonic() + 300
    while victim is None and time.monotonic() < deadline and proc.poll() is None:
        for lock in out.rglob("tiny_*.lock"):
            try:
                victim = json.loads(lock.read_text())
            except (OSError, ValueError):
                continue
            os.kill(victim["pid"], signal.SIGKILL)                # mid-slide: it holds the claim
            break
        time.sleep(0.005)
    _, err = proc.communicate(timeout=600)
    assert victim is not None, "no worker was caught holding a slide"
    assert proc.returncode == 1 and "was killed by signal 9" in err
    rerun = _cli(["--config", str(config)])
    _, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err
    states = _states(out)
    assert len(states) == N and all(s["status"] == "processed" for s in states.values())
    assert {s["computations"] for s in states.values()} == {1}     # the killed slide wrote no state
    assert list(pd.read_csv(out / "results" / "process_list.csv")["status"]) == ["processed"] * N
    assert _leftovers(out) == []
    _same_outputs(cohort.parent / "ref", out)


@pytest.mark.slow
def test_a_config_list_runs_in_order_with_three_local_workers(cohort):
    a, b = variant(cohort, "list_a"), variant(cohort, "list_b", heatmap_arguments={"alpha": 0.5})
    proc = _cli(["--config", str(a), str(b), "--executor", "local", "--workers", "3"])
    stdout, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    for name in ("list_a", "list_b"):
        out = cohort.parent / name
        assert list(pd.read_csv(out / "results" / "process_list.csv")["status"]) == ["processed"] * N
        assert {s["computations"] for s in _states(out).values()} == {1}
        assert _leftovers(out) == []
    assert stdout.count("8 processed, 0 failed, 0 running, 0 pending") == 2


def test_a_config_changed_between_workers_of_one_run_is_refused(cohort):
    a = load_config(variant(cohort, "changed"))
    b = load_config(variant(cohort, "changed", heatmap_arguments={"alpha": 0.9}))
    rows = pd.read_csv(cohort.parent / "process_list.csv").head(1)
    run_config(a, source="first", progress=False, worker=WorkerOptions(run_id="R1", multi=True), process_list=rows)
    with pytest.raises(ConfigError, match=r"second: the effective config differs from the one the first worker of run R1 "
                                          r"started with .*the config changed between workers"):
        run_config(b, source="second", progress=False, worker=WorkerOptions(run_id="R1", multi=True), process_list=rows)


class _Vanishing(ClaimingExecutor):
    """Deletes a slide's file right after claiming it (before its worker reads it)."""

    def __init__(self, *a, victim: Path, **kw):
        super().__init__(*a, **kw)
        self.victim = victim

    def claimed(self, job) -> None:
        if job.slide_id == self.victim.stem:
            self.victim.unlink()


def test_a_slide_that_vanishes_between_claim_and_read_fails_alone(tmp_path):
    config = make_tiny_cohort(tmp_path, 3)
    cfg = load_config(config)
    ex = _Vanishing(lambda j: j.claim, victim=tmp_path / "slides" / "tiny_01.tiff")
    summary = run_config(cfg, progress=False, executor=ex)
    assert [s for s, _ in summary.failed] == ["tiny_01"] and len(summary.processed) == 2
    status = list(pd.read_csv(tmp_path / "out" / "results" / "process_list.csv")["status"])
    assert status[0] == status[2] == "processed"
    assert status[1].startswith("failed: slide tiny_01: file not found:") and "check data_arguments.data_dir" in status[1]
    state = read_state(tmp_path / "out/raw/TINY/lesion/tiny_01/tiny_01_state.json")
    assert state.status == "failed" and "file not found" in state.reason
    assert _leftovers(tmp_path / "out") == []


@pytest.fixture
def read_only_dir(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(d)], capture_output=True).returncode:
        pytest.skip("cannot mount a read-only tmpfs here (needs root and CAP_SYS_ADMIN)")
    yield d
    subprocess.run(["umount", str(d)], check=False)


def test_a_read_only_output_folder_is_one_line(cohort, read_only_dir, capsys):
    from heatmaps.cli import main as cli_main

    config = variant(cohort, "ro_run")
    text = config.read_text().replace(str(cohort.parent / "ro_run"), str(read_only_dir / "out"))
    config.write_text(text)
    assert cli_main(["--config", str(config), "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Read-only file system" in err[0] and "choose another output directory" in err[0]


@pytest.fixture
def full_dir(tmp_path):
    d = tmp_path / "full"
    d.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(d)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root and CAP_SYS_ADMIN)")
    yield d
    subprocess.run(["umount", str(d)], check=False)


def test_a_full_output_folder_fails_the_slides_with_the_reason(cohort, full_dir):
    """The raw outputs go to a 64 KiB file system: once it is full the slides fail with 'disk is
    full' (their states cannot be written either: the results CSV, elsewhere, still says so), the
    batch goes on, and no temporary file is left on the full disk."""
    config = variant(cohort, "full_run")
    config.write_text(config.read_text().replace(str(cohort.parent / "full_run" / "raw"), str(full_dir)))
    summary = run_config(load_config(config), progress=False)
    assert len(summary.failed) >= N - 1 and len(summary.processed) + len(summary.failed) == N   # the first may fit
    assert all("No space left on device" in r and "the disk is full" in r for _, r in summary.failed)
    status = pd.read_csv(cohort.parent / "full_run" / "results" / "process_list.csv")["status"]
    assert status.str.contains("the disk is full").sum() == len(summary.failed)
    assert _leftovers(full_dir) == []


def test_executor_slurm_without_slurm_says_so_in_one_line(cohort, monkeypatch, capsys, tmp_path):
    from heatmaps.cli import main as cli_main

    monkeypatch.setenv("PATH", str(tmp_path))              # no sbatch
    assert cli_main(["--config", str(variant(cohort, "noslurm")), "--executor", "slurm", "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --executor slurm: SLURM is not available here (no sbatch on PATH); run on a SLURM login "
                   "node, or use --executor local"]


def test_status_shows_running_with_host_and_age_and_failures_with_reasons(tmp_path, capsys):
    from heatmaps.cohort_status import main as status_main

    config = make_tiny_cohort(tmp_path, 3)
    cfg = load_config(config)
    (tmp_path / "slides" / "tiny_02.tiff").unlink()
    run_config(cfg, progress=False)
    raw = tmp_path / "out" / "raw" / "TINY"
    (raw / "normal/tiny_00/tiny_00_state.json").unlink()          # tiny_00: pending
    (raw / "lesion/tiny_01/tiny_01_state.json").unlink()          # tiny_01: running elsewhere
    (raw / "lesion/tiny_01/tiny_01.lock").write_text(json.dumps(
        {"host": "node7", "pid": 4242, "job_id": "991_3", "run_id": "r", "started": time.time() - 125, "token": "x"}))
    assert status_main([str(raw)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "0 processed, 1 failed, 1 running, 1 pending"
    assert lines[1].startswith("  running tiny_01: node7 pid 4242 (job 991_3), 12") and "s ago" in lines[1]
    assert lines[2].startswith("  failed  tiny_02: slide tiny_02: file not found:")
    assert status_main([str(tmp_path / "nowhere")]) == 1
    assert "no config.yaml here" in capsys.readouterr().err


def test_shards_split_the_rows(tmp_path, monkeypatch):
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "x", "1/"):
        with pytest.raises(ConfigError, match="expected i/n with 0 <= i < n"):
            parse_shard(bad)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "1")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "4")
    monkeypatch.delenv("WSI_HEATMAPS_RUN_ID", raising=False)
    assert env_shard() == (2, 4)
    monkeypatch.setenv("WSI_HEATMAPS_RUN_ID", "r")         # a worker this package started pulls dynamically
    assert env_shard() is None
    assert [slurm_minutes(t) for t in ("90", "01:30:00", "1-00:00:00", "10:30")] == [90, 90, 1440, 11]
    config = make_tiny_cohort(tmp_path, 4)
    summary = run_config(load_config(config), progress=False, worker=WorkerOptions(shard=(1, 2)))
    assert sorted(r.slide_id for r in summary.processed) == ["tiny_01", "tiny_03"]
    status = pd.read_csv(tmp_path / "out" / "results" / "process_list.csv")["status"]
    assert status.tolist() == ["tbp", "processed", "tbp", "processed"]      # CLAM's "to be processed"


@pytest.fixture
def slurm_env(tmp_path):
    """A real single-node SLURM on this machine (tests/heatmaps/slurm_cluster.py); skips with the
    reason where its daemons cannot start."""
    from .slurm_cluster import SlurmUnavailable, single_node_slurm

    try:
        with single_node_slurm(tmp_path / "slurm") as env:
            yield env
    except SlurmUnavailable as exc:
        pytest.skip(f"no single-node SLURM here: {exc}")


@pytest.mark.slow
def test_executor_slurm_runs_one_job_array_on_a_real_slurm(cohort, slurm_env):
    config = variant(cohort, "slurm_run")
    out = cohort.parent / "slurm_run"
    proc = _cli(["--config", str(config), "--executor", "slurm", "--workers", "2", "--slurm_time", "10",
                 "--slurm_partition", "debug", "--slurm_additional", "comment=wsi-heatmaps-test"], env=slurm_env)
    stdout, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert "8 processed, 0 failed, 0 running, 0 pending" in stdout
    states = _states(out)
    assert len(states) == N and {s["computations"] for s in states.values()} == {1}
    jobs = {s["job_id"] for s in states.values()}
    assert all("_" in j for j in jobs) and len({j.split("_")[0] for j in jobs}) == 1     # one array: {job}_{task}
    assert len({s["run_id"] for s in states.values()}) == 1
    assert list(pd.read_csv(out / "results" / "process_list.csv")["status"]) == ["processed"] * N
    assert _leftovers(out) == []
    assert list((out / "raw" / "TINY" / "slurm").rglob("*_submission.sh")), "submitit's job scripts"


def test_a_dead_workers_claim_and_temporary_files_are_cleaned_up(tmp_path, caplog):
    """What ``kill -9`` mid-slide leaves (its claim, half-written ``*.tmp-<pid>`` files, a blockmap
    without a state) is taken over, removed and recomputed, never taken for a finished slide."""
    config = make_tiny_cohort(tmp_path, 2)
    dead = subprocess.Popen(["true"])
    dead.wait()
    raw = tmp_path / "out/raw/TINY/normal/tiny_00"
    prod = tmp_path / "out/prod/TINY/normal"
    raw.mkdir(parents=True)
    prod.mkdir(parents=True)
    from heatmaps.claims import HOST

    (raw / "tiny_00.lock").write_text(json.dumps({"host": HOST, "pid": dead.pid, "job_id": "local", "run_id": "old",
                                                 "started": time.time(), "token": "x"}))
    left = [raw / f"tiny_00_blockmap.h5.tmp-{dead.pid}", prod / f"tiny_00_0.0_roi_0_blur_0.png.tmp-{dead.pid}"]
    for p in left:
        p.write_bytes(b"half")
    summary = run_config(load_config(config), progress=False)
    assert sorted(r.slide_id for r in summary.processed) == ["tiny_00", "tiny_01"]
    assert not any(r.skipped for r in summary.processed)
    assert not any(p.exists() for p in left) and _leftovers(tmp_path / "out") == []
    assert f"taking over the stale claim of {HOST} pid {dead.pid}" in caplog.text


def test_one_worker_per_gpu_each_with_its_cuda_visible_devices(monkeypatch):
    from heatmaps import workers

    started = []

    class FakeProc:
        def __init__(self, cmd, env):
            started.append((cmd, env))
            self.pid = 1000 + len(started)

        def wait(self):
            return 0

    monkeypatch.setattr(workers.subprocess, "Popen", FakeProc)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    run_id, codes = workers.launch_local(["--config", "c.yaml"], workers=1, gpus=["2", "5"])
    assert codes == [0, 0]
    assert [env["CUDA_VISIBLE_DEVICES"] for _, env in started] == ["2", "5"]
    assert {env["WSI_HEATMAPS_RUN_ID"] for _, env in started} == {run_id}
    assert all(cmd[-4:] == ["create_heatmaps", "--config", "c.yaml", "--_worker"] for cmd, _ in started)
    assert all(env["OMP_NUM_THREADS"] == str(max(1, (os.cpu_count() or 1) // 2)) for _, env in started)


def test_rows_repeating_a_slide_keep_their_own_state(tmp_path):
    config = make_tiny_cohort(tmp_path, 1)
    pl = tmp_path / "process_list.csv"
    rows = pd.read_csv(pl)
    bad = rows.copy()
    bad["features_path"] = str(tmp_path / "missing.h5")
    pd.concat([bad, rows]).to_csv(pl, index=False)
    summary = run_config(load_config(config), progress=False)
    assert len(summary.failed) == 1 and len(summary.processed) == 1
    status = list(pd.read_csv(tmp_path / "out" / "results" / "process_list.csv")["status"])
    assert status[0].startswith("failed:") and "missing.h5" in status[0] and status[1] == "processed"
    raw = tmp_path / "out/raw/TINY/normal/tiny_00"
    assert read_state(raw / "tiny_00_state.json").status == "failed"
    assert read_state(raw / "tiny_00_repeat1_state.json").status == "processed"

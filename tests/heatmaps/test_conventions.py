"""Command-line conventions: ``--version``, ``python -m heatmaps`` = ``create-heatmaps``, progress
output without terminal escape sequences where stderr is not a terminal (or ``NO_COLOR`` is set)."""
from __future__ import annotations

import configparser
import os
import pty
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def _setup_cfg_version() -> str:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    return cfg["metadata"]["version"]


def test_version_flag(capsys):
    """``python -m heatmaps --version`` (a fresh interpreter) and the script's parser in-process."""
    proc = subprocess.run([sys.executable, "-m", "heatmaps", "--version"], cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-500:]
    assert proc.stdout.strip() == f"create-heatmaps {_setup_cfg_version()}"
    import create_heatmaps

    with pytest.raises(SystemExit) as exit_:
        create_heatmaps.main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == proc.stdout.strip()


def test_version_falls_back_to_setup_cfg(monkeypatch):
    from importlib import metadata

    from heatmaps import version

    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(version.metadata, "version", not_installed)
    assert version.package_version() == _setup_cfg_version()
    monkeypatch.setattr(version, "SETUP_CFG", REPO / "no-such-setup.cfg")
    assert version.package_version() == "unknown"


def test_python_m_heatmaps_is_the_console_script(capsys):
    """``python -m heatmaps --help`` prints create-heatmaps' help; no arguments: its usage error, exit 2."""
    helped = subprocess.run([sys.executable, "-m", "heatmaps", "--help"], cwd=REPO, env=_env(),
                            capture_output=True, text=True, timeout=300)
    assert helped.returncode == 0 and helped.stdout.startswith("usage: create-heatmaps")
    assert "--tiff_background" in helped.stdout and "--version" in helped.stdout
    import create_heatmaps          # what heatmaps/__main__.py runs (its exit status: the runpy test below)

    assert create_heatmaps.main([]) == 2 and "create-heatmaps: error: give --config" in capsys.readouterr().err


def _probe(argv: list[str]) -> int:
    print("probe got", argv)
    return 7


def test_python_m_heatmaps_dispatches_the_subcommand_table(monkeypatch, capsys):
    import create_heatmaps

    monkeypatch.setitem(create_heatmaps.SUBCOMMANDS, "probe", f"{__name__}:_probe")
    monkeypatch.setattr(sys, "argv", ["heatmaps", "probe", "--x", "1"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_module("heatmaps", run_name="__main__", alter_sys=True)
    assert exit_.value.code == 7
    assert "probe got ['--x', '1']" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------ progress

def test_fancy_terminal_needs_a_tty_and_no_no_color(monkeypatch):
    from models.encode import fancy_terminal

    master, slave = pty.openpty()
    try:
        with os.fdopen(slave, "w") as tty:
            monkeypatch.delenv("NO_COLOR", raising=False)
            monkeypatch.setenv("TERM", "xterm")
            assert fancy_terminal(tty)
            monkeypatch.setenv("NO_COLOR", "1")
            assert not fancy_terminal(tty)
            monkeypatch.setenv("NO_COLOR", "")          # no-color.org: only a non-empty value counts
            assert fancy_terminal(tty)
            monkeypatch.setenv("TERM", "dumb")
            assert not fancy_terminal(tty)
    finally:
        os.close(master)
    with open(os.devnull, "w") as pipe_like:
        assert not fancy_terminal(pipe_like)


PROGRESS = """
import logging, sys
from models.encode import progress_bar
import models.encode as E
E.PROGRESS_LOG_SECONDS = 0.0
logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
slides = progress_bar(2, True, "slides (exp)", unit="slide")
for _ in range(2):
    bar = progress_bar(100, True, "features a.svs")
    for _ in range(4):
        bar.update(25)
    bar.close()
    slides.update(1)
slides.close()
"""


def test_progress_without_a_terminal_is_plain_log_lines():
    """stderr a pipe: no bar, no carriage return, no escape sequence; plain lines that say how far."""
    proc = subprocess.run([sys.executable, "-c", PROGRESS], cwd=REPO, env=_env(TERM="xterm"), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-800:]
    assert "\x1b[" not in proc.stderr and "\r" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert re.fullmatch(r"features a\.svs: 100/100 patch \(100 %\), [\d.]+ patch/s", lines[-2])
    assert re.fullmatch(r"slides \(exp\): 2/2 slide \(100 %\), [\d.]+ slide/s", lines[-1])
    assert sum("features a.svs: 25/100 patch (25 %)" in line for line in lines) == 2


@pytest.mark.slow
def test_a_model_run_with_stderr_not_a_tty_has_no_escape_sequences(shared_dir, tmp_path):
    """``python -m heatmaps --checkpoint …`` with progress on (no --quiet) and stderr captured."""
    ref = shared_dir / "clam_reference" / "checkpoints"
    argv = ["--checkpoint", str(ref / "ckpt_clam_sb_seed0.pt"), "--slide", str(shared_dir / "slides/CMU-1-Small-Region.svs"),
            "--output", str(tmp_path / "cmu.jpg"), "--encoder_weights", str(ref / "resnet50_trunc_seed0.safetensors"),
            "--set", "encoder_arguments.target_img_size=32", "--overlap", "0.5", "--vis_level", "0"]
    proc = subprocess.run([sys.executable, "-m", "heatmaps", *argv], cwd=REPO, env=_env(TERM="xterm"),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-800:]
    out = proc.stdout + proc.stderr
    assert "\x1b[" not in out and "\r" not in out
    assert re.search(r"features CMU-1-Small-Region\.svs: (\d+)/\1 patch \(100 %\)", proc.stderr), proc.stderr[-800:]

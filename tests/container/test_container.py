"""The container (Containerfile, container/): the entry point's mount check, the Containerfile's
promises (targets, mounts, non-root user, documented *_CKPT_PATH variables), and its install and
entry-point steps run in a fresh virtual environment (where no image can be built)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENTRY = REPO / "container" / "entrypoint.py"


def _mountinfo(tmp_path: Path, *points: str) -> Path:
    """A /proc/self/mountinfo with ``/`` and ``points`` mounted."""
    lines = [f"{20 + i} 1 0:{30 + i} / {p} rw,relatime - ext4 /dev/vda1 rw" for i, p in enumerate(["/", *points])]
    f = tmp_path / "mountinfo"
    f.write_text("\n".join(lines) + "\n")
    return f


def _entry(tmp_path: Path, argv: list[str], *points: str, python: str = sys.executable, drop: tuple[str, ...] = (),
           **env: str):
    e = {**{k: v for k, v in os.environ.items() if k not in drop},
         "WSI_HEATMAPS_MOUNTINFO": str(_mountinfo(tmp_path, *points)), "WSI_HEATMAPS_COMMAND": "echo", **env}
    return subprocess.run([python, str(ENTRY), *argv], capture_output=True, text=True, env=e, timeout=300,
                          cwd=tmp_path)


def test_a_missing_mount_is_named_with_the_flag_that_adds_it(tmp_path):
    p = _entry(tmp_path, ["--config", "/weights/c.yaml"], "/output", "/cache")
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.splitlines() == [
        "error: /slides is not mounted (the slides (and feature files) to read); add -v /path/to/slides:/slides:ro "
        "to podman/docker run",
        "error: /weights is not mounted (MIL checkpoints and encoder weights); add -v /path/to/weights:/weights:ro "
        "to podman/docker run"]
    p = _entry(tmp_path, ["--demo"], "/slides")
    assert p.returncode == 2 and p.stderr.startswith("error: /output is not mounted")


def test_the_mounts_a_command_needs_then_create_heatmaps_runs(tmp_path):
    p = _entry(tmp_path, ["--demo"], "/output")                         # the demo needs /output only
    assert p.returncode == 0 and p.stdout.strip() == "--demo" and "/cache is not mounted" in p.stderr
    p = _entry(tmp_path, ["--scores", "/output/a.h5", "--slide", "/slides/a.svs", "--output", "/output/a.tiff"],
               "/output", "/slides")                                    # a re-render runs no model: no /weights
    assert p.returncode == 0 and p.stderr == ""
    p = _entry(tmp_path, ["--config", "/output/c.yaml"], "/output", "/slides", "/weights", "/cache")
    assert p.returncode == 0 and p.stderr == "" and p.stdout.strip() == "--config /output/c.yaml"
    assert _entry(tmp_path, ["--help"]).returncode == 0                 # help needs no mount
    assert _entry(tmp_path, ["--config", "c.yaml"], WSI_HEATMAPS_SKIP_MOUNT_CHECK="1").returncode == 0


def test_the_containerfile_keeps_its_promises():
    text = (REPO / "Containerfile").read_text()
    assert re.findall(r"^FROM \S+ AS (\w+)", text, re.M) == ["cpu", "cuda", "devel"]
    assert text.count('ENTRYPOINT ["python", "/opt/wsi-heatmaps/src/container/entrypoint.py"]') == 2
    assert "USER heatmaps" in text and "useradd" in text                # not root
    assert "HF_HOME=/cache/huggingface" in text and "WORKDIR /output" in text
    assert text.count("container/install.sh") >= 2                      # one recipe for every target
    assert "--shm-size" in text


def test_every_ckpt_path_variable_of_the_code_is_documented():
    from models.encoders import encoder_info, list_encoders

    names = {v for n in list_encoders() for v in encoder_info(n).env_vars}
    assert {"UNI_V2_CKPT_PATH", "RESNET50_TRUNC_CKPT_PATH"} <= names
    readme = (REPO / "README.md").read_text().split("### In a container", 1)[1].split("\n## ", 1)[0]
    containerfile = (REPO / "Containerfile").read_text()
    assert not {v for v in names if v not in containerfile or v not in readme}


@pytest.mark.slow
def test_install_and_entry_point_steps_in_a_fresh_venv(tmp_path):
    """container/install.sh (the image's RUN step) into a new venv, then the entry point; no image is
    built in CI (no registry for a base image). The venv gets this interpreter's site-packages as a
    plain path (a ``.pth`` line, appended after its own) so that torch (200 MB CPU, 3 GB CUDA from
    PyPI) is not installed again; unlike ``--system-site-packages`` this does not run the editable
    install's import hook, which would otherwise map ``heatmaps`` back to the repository. What runs is
    the recipe's venv creation, the project's non-editable install from a copy of the tree and its
    console script behind the entry point; tests/heatmaps/test_light.py installs from nothing."""
    import sysconfig
    import venv as venv_mod

    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", "build", "demo",
                                                              ".pytest_cache", "venv", ".venv"))
    vdir = tmp_path / "venv"
    venv_mod.create(vdir, with_pip=True)
    py = vdir / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], env=env,
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "system-site.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    proc = subprocess.run(["sh", str(REPO / "container" / "install.sh")], env={**env, "SRC": str(src), "VENV": str(vdir)},
                          timeout=600, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-1500:]
    where = subprocess.run([str(py), "-c", "import heatmaps, torch; print(heatmaps.__file__)"], capture_output=True,
                           text=True, cwd=tmp_path, env=env, check=True).stdout
    assert where.startswith(site)                                       # the venv's copy, not the repository
    run_env = {"PATH": f"{vdir / 'bin'}:{os.environ['PATH']}", "WSI_HEATMAPS_COMMAND": "create-heatmaps"}
    p = _entry(tmp_path, ["--demo"], "/slides", python=str(py), drop=("PYTHONPATH",), **run_env)
    assert p.returncode == 2 and p.stderr.startswith("error: /output is not mounted")
    p = _entry(tmp_path, ["--help"], python=str(py), drop=("PYTHONPATH",), **run_env)
    assert p.returncode == 0 and "usage: create-heatmaps" in p.stdout
    p = _entry(tmp_path, ["--config", "/output/missing.yaml"], "/output", "/slides", "/weights", "/cache",
               python=str(py), drop=("PYTHONPATH",), **run_env)          # mounts there: create-heatmaps answers
    assert p.returncode == 1 and p.stderr.startswith("error:") and "missing.yaml" in p.stderr, p.stderr[-800:]

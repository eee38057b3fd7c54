"""The light install (heatmaps.light, packaging/render): its paths never import torch, a model
command on it says to install the full package in one line, and the wsi-heatmaps-render wheel
re-renders and exports in a fresh virtual environment that has no torch."""
from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from heatmaps.light import FULL_ONLY, LIGHT_MODULES

REPO = Path(__file__).resolve().parents[2]
BLOCK = ("import importlib.abc, sys\n"          # the model stack cannot be imported, as on the light install
         "class NoModelStack(importlib.abc.MetaPathFinder):\n"
         "    def find_spec(self, name, path=None, target=None):\n"
         f"        if name.split('.')[0] in {FULL_ONLY!r}:\n"
         "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
         "sys.meta_path.insert(0, NoModelStack())\n")


def _python(code: str, *args: str, cwd: Path = REPO, python: str = sys.executable, timeout: int = 120):
    return subprocess.run([python, "-c", code, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout)


def test_light_modules_never_import_torch():
    code = ("import importlib, importlib.util, json, pkgutil, sys\n"
            f"mods = list({LIGHT_MODULES!r})\n"
            "if importlib.util.find_spec('viewer') is not None:   # the viewer, where this tree has it\n"
            "    import viewer\n"
            "    mods += ['viewer'] + [f'viewer.{m.name}' for m in pkgutil.iter_modules(viewer.__path__)]\n"
            "for m in mods: importlib.import_module(m)\n"
            f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {FULL_ONLY!r})))")
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr[-800:]
    assert json.loads(proc.stdout) == []


MODEL_COMMANDS = [("create_heatmaps", ["--demo"]), ("create_heatmaps", ["--config", "heatmaps/configs/config_template.yaml"]),
                  ("create_heatmaps", ["--checkpoint", "s_0.pt", "--slide", "s.svs", "--output", "o.png"]),
                  ("generate_heatmaps_highres", ["--checkpoint", "s_0.pt", "--slide", "s.svs", "--output", "o.png"]),
                  ("heatmaps.cohort_cli", ["--checkpoint", "c.pt", "--h5_dir", ".", "--slide_dir", ".", "--output_dir", "o"]),
                  ("heatmaps.marugoto_cli", ["-m", "m.pt", "-o", "o", "-t", "LUAD", "s.svs"])]


def test_a_model_command_on_the_light_install_is_one_line():
    """Every command line that runs a model, with the model stack unimportable: exit 1, one line."""
    code = BLOCK + ("import contextlib, importlib, io, json\n"
                    "out = []\n"
                    f"for mod, argv in {MODEL_COMMANDS!r}:\n"
                    "    m = importlib.import_module(mod)\n"
                    "    main = m.main\n"
                    "    err = io.StringIO()\n"
                    "    with contextlib.redirect_stderr(err):\n"
                    "        if mod == 'generate_heatmaps_highres':\n"
                    "            sys.argv = ['generate-heatmaps-highres', *argv]; rc = main()\n"
                    "        else:\n"
                    "            rc = main(argv)\n"
                    "    out.append([mod, argv, rc, err.getvalue()])\n"
                    "print(json.dumps(out))")
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr[-800:]
    for mod, argv, rc, err in json.loads(proc.stdout):
        lines = err.strip().splitlines()
        assert rc == 1 and len(lines) == 1, (mod, argv, rc, err[-600:])
        assert "runs a model" in lines[0] and lines[0].endswith("install the full package: pip install wsi-heatmaps")


LIGHT_RUN = r"""
import json, subprocess, sys
from pathlib import Path
import numpy as np
from heatmaps.demo import make_demo_slide
from wsi_core.formats import write_scores
from wsi_core.synthetic import grid_coords
out = Path(sys.argv[1])
demo = make_demo_slide(out / "slide.tiff", seed=3, size=(1024, 768))
coords = grid_coords(demo, patch_size=128, step=128)
write_scores(out / "s_blockmap.h5", np.linspace(-1, 1, len(coords)), coords, attrs={"patch_size": 128})
bin_ = Path(sys.executable).parent
rerender = subprocess.run([bin_ / "create-heatmaps", "--scores", out / "s_blockmap.h5", "--slide", out / "slide.tiff",
                           "--output", out / "map.tiff", "--vis_level", "0", "--geojson", "--dsa", "--quiet"],
                          capture_output=True, text=True)
demo_run = subprocess.run([bin_ / "create-heatmaps", "--demo"], capture_output=True, text=True, cwd=out)
try:
    import torch  # noqa: F401
    has_torch = True
except ImportError:
    has_torch = False
print(json.dumps({"n": len(coords), "has_torch": has_torch, "rerender": [rerender.returncode, rerender.stderr[-600:]],
                  "demo": [demo_run.returncode, demo_run.stderr],
                  "files": sorted(p.name for p in out.iterdir())}))
"""


@pytest.mark.slow
def test_the_render_wheel_in_a_fresh_venv_without_torch(tmp_path):
    """Build wsi-heatmaps-render, install it in a new venv (no system site-packages; its
    requirements from the index or pip's cache), re-render a TIFF with QuPath and DSA exports,
    and refuse --demo in one line. Takes about 30 s with a warm pip cache (75 s cold)."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    str(REPO / "packaging" / "render"), "-w", str(wheels)], check=True, timeout=300)
    (wheel,) = wheels.glob("wsi_heatmaps_render-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", str(wheel)], check=True, timeout=600)
    out = tmp_path / "run"
    out.mkdir()
    proc = _python(LIGHT_RUN, str(out), python=str(py), cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-800:]
    r = json.loads(proc.stdout)
    assert r["has_torch"] is False
    assert r["rerender"][0] == 0, r["rerender"][1]
    assert {"map.tiff", "map_tiles.geojson", "map_dsa_annotation.json"} <= set(r["files"])
    assert r["demo"][0] == 1 and r["demo"][1].strip().endswith("install the full package: pip install wsi-heatmaps")


def test_the_light_distribution_drops_exactly_the_model_stack():
    """packaging/render/setup.py cannot import heatmaps at build time; its list must be heatmaps.light's."""
    import ast

    tree = ast.parse((REPO / "packaging" / "render" / "setup.py").read_text())
    (value,) = [n.value for n in ast.walk(tree) if isinstance(n, ast.Assign)
                and any(getattr(t, "id", None) == "FULL_ONLY" for t in n.targets)]
    assert ast.literal_eval(value) == FULL_ONLY

"""``wsi-heatmaps-render``: the light install of wsi-heatmaps (no torch, torchvision, timm, safetensors).

The same source folders as the full distribution (the repository root's ``setup.cfg``), with its
requirements minus the model stack, so re-rendering (``create-heatmaps --scores``), the pyramidal
TIFF, the viewer and the QuPath / DSA exports run on a laptop without a 6 GB PyTorch install.
Nothing is copied: the package folders are read from the repository root two levels up, and
the requirements from its ``setup.cfg`` (one list to keep). Install with
``pip install ./packaging/render`` (not editable; the root's ``pip install -e .`` is the full one).
Never install both: they provide the same modules (tests/test_packaging.py fails when two
distributions do).
"""
from __future__ import annotations

import atexit
import configparser
import os
import shutil
import tempfile
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
#: the model stack the light install leaves out (heatmaps/light.py names the same modules)
FULL_ONLY = ("torch", "torchvision", "timm", "safetensors")

cfg = configparser.ConfigParser()
cfg.read(ROOT / "setup.cfg")
opts = cfg["options"]


def _lines(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def _name(req: str) -> str:
    return req.split(";")[0].split("[")[0].split("<")[0].split(">")[0].split("=")[0].split("!")[0].split("~")[0].strip()


#: a fresh build folder each time, removed at exit: an in-tree build/ would keep modules deleted from
#: the sources and put them into the next wheel
BUILD_BASE = tempfile.mkdtemp(prefix="wsi-heatmaps-render-build-")
atexit.register(shutil.rmtree, BUILD_BASE, True)

requires = [r for r in _lines(opts["install_requires"]) if _name(r).lower() not in FULL_ONLY]
root = os.path.relpath(ROOT, HERE)
packages = find_packages(where=str(ROOT), include=_lines(cfg["options.packages.find"]["include"]))
package_data = {k: [p.strip() for p in v.split(",")] for k, v in cfg["options.package_data"].items()}
scripts = _lines(cfg["options.entry_points"]["console_scripts"])

setup(
    name="wsi-heatmaps-render",
    version=cfg["metadata"]["version"],
    description="wsi-heatmaps without the model stack: re-render, TIFF, viewer and QuPath/DSA export (no torch)",
    license=cfg["metadata"]["license"],
    python_requires=opts["python_requires"],
    package_dir={"": root},
    packages=packages,
    py_modules=_lines(opts["py_modules"]),
    package_data=package_data,
    include_package_data=False,
    install_requires=requires,
    entry_points={"console_scripts": scripts},
    options={"egg_info": {"egg_base": str(HERE)}, "build": {"build_base": BUILD_BASE}},   # never an egg-info in the root (it would shadow the full one)
)

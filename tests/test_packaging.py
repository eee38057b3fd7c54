"""Our top-level import names (``models``, ``heatmaps``, ...) are generic; keep them ours.

The folders stay top-level (CLAM users' layout: ``python create_heatmaps.py`` from the repository,
``heatmaps/configs``), so instead of a namespace this test fails when another installed
distribution provides one of our names (it would overwrite or shadow our modules), when both the
full and the light distribution are installed (they own the same files), and when an import of
one of our names resolves outside this repository (a foreign package earlier on ``sys.path``).
"""
from __future__ import annotations

import configparser
import importlib.metadata
import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OURS = {"wsi-heatmaps", "wsi-heatmaps-render"}


def top_level_names() -> set[str]:
    """The top-level packages and modules setup.cfg installs (``packages.find`` include, ``py_modules``)."""
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    pkgs = {p.strip().rstrip("*") for p in cfg["options.packages.find"]["include"].split() if p.strip()}
    mods = {m.strip() for m in cfg["options"]["py_modules"].split() if m.strip()}
    return pkgs | mods


def clashes(owners: dict[str, list[str]], names: set[str]) -> dict[str, list[str]]:
    """``name -> distributions`` for each of ``names`` owned by a foreign distribution or by both of ours."""
    return {n: sorted(owners[n]) for n in sorted(names) if n in owners
            and (set(owners[n]) - OURS or set(owners[n]) >= OURS)}


def test_the_clash_check_flags_a_foreign_or_doubled_owner():
    names = {"models", "heatmaps", "wsi_core"}
    assert clashes({"models": ["wsi-heatmaps", "some-other-dist"], "heatmaps": ["wsi-heatmaps"]}, names) == \
        {"models": ["some-other-dist", "wsi-heatmaps"]}
    assert clashes({"wsi_core": ["wsi-heatmaps", "wsi-heatmaps-render"]}, names) == \
        {"wsi_core": ["wsi-heatmaps", "wsi-heatmaps-render"]}
    assert clashes({"wsi_core": ["wsi-heatmaps-render"], "numpy": ["numpy"]}, names) == {}


def test_no_other_distribution_provides_our_names():
    found = clashes(importlib.metadata.packages_distributions(), top_level_names())
    assert not found, (f"top-level names provided by more than one distribution: {found}; uninstall the "
                         "other one (wsi-heatmaps and wsi-heatmaps-render must not be installed together)")


def test_our_names_resolve_to_this_repository():
    for name in sorted(top_level_names()):
        spec = importlib.util.find_spec(name)
        if spec is None:            # a folder another branch adds (viewer) is not in every tree
            continue
        where = Path(spec.origin or next(iter(spec.submodule_search_locations))).resolve()
        assert REPO in where.parents, f"import {name} resolves to {where}, outside {REPO}: another package shadows it"


def test_the_names_we_check_are_the_packages_in_this_tree():
    names = top_level_names()
    assert {"wsi_core", "vis_utils", "models", "heatmaps", "create_heatmaps"} <= names
    assert all((REPO / n).is_dir() or (REPO / f"{n}.py").is_file() for n in names if n != "viewer")

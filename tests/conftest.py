"""Shared fixtures.

Real data lives in ``../shared`` beside the repository (read-only, never copied in). Every test
that needs it asks for the ``shared_dir`` fixture, which skips cleanly when it is absent.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("WSI_HEATMAPS_SHARED", REPO_ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` (or ``$WSI_HEATMAPS_SHARED``); skips the test when it is absent."""
    if not (SHARED_DIR / "slides").is_dir():
        pytest.skip(f"shared data not found at {SHARED_DIR}")
    return SHARED_DIR


@pytest.fixture(scope="session")
def slides_dir(shared_dir: Path) -> Path:
    return shared_dir / "slides"


@pytest.fixture(scope="session")
def mil_dir(shared_dir: Path) -> Path:
    return shared_dir / "mil"


@pytest.fixture(scope="session")
def clam_reference_dir(shared_dir: Path) -> Path:
    return shared_dir / "clam_reference"


def pytest_collection_modifyitems(config, items) -> None:  # noqa: ANN001 - pytest hook
    """Every test that reads ../shared (through ``shared_dir`` or a fixture built on it) carries
    the ``shared`` marker, so ``-m "not shared"`` never touches the real data."""
    for item in items:
        if "shared_dir" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("shared"):
            item.add_marker(pytest.mark.shared)

"""models/__init__.py: every public name resolves (loaded on first use), unknown names fail."""
from __future__ import annotations

import pytest

import models


def test_every_public_name_resolves() -> None:
    from models.encode import encode_image_patches
    from models.mil import list_mil_models

    for name in models.__all__:
        assert getattr(models, name) is not None, name
    assert models.list_mil_models is list_mil_models and models.encode_image_patches is encode_image_patches
    assert set(models.__all__) <= set(dir(models))
    assert models.list_mil_models() == ["abmil", "clam_mb", "clam_sb", "dsmil", "transmil"]


def test_unknown_name() -> None:
    with pytest.raises(AttributeError, match="module 'models' has no attribute 'nope'"):
        models.nope  # noqa: B018
    from models import extract  # submodules still import as usual

    assert extract.extract_features is models.extract_features

"""CITATION.cff: valid Citation File Format 1.2.0 keys, the package's version, and a reference for
every registered MIL architecture and patch encoder (its registry name in a reference's ``notes``)."""
from __future__ import annotations

import configparser
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _cff() -> dict:
    return yaml.safe_load((REPO / "CITATION.cff").read_text(encoding="utf-8"))


def test_citation_has_the_required_cff_keys_and_our_version():
    cff = _cff()
    assert cff["cff-version"] == "1.2.0"
    assert cff["message"].strip() and cff["title"].startswith("wsi-heatmaps")
    assert cff["authors"] and all(("name" in a) or ("family-names" in a) for a in cff["authors"])
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    assert str(cff["version"]) == setup["metadata"]["version"]
    assert cff["license"] == setup["metadata"]["license"]
    for ref in cff["references"]:                     # the keys CFF 1.2.0 requires of a reference
        assert ref["type"] and ref["title"] and ref["authors"], ref.get("title")
        assert ref.get("doi") or ref.get("url"), ref["title"]
        if "doi" in ref:
            assert re.fullmatch(r"10\.\d{4,9}/\S+", ref["doi"]), ref["doi"]


def test_every_registered_model_and_encoder_has_a_reference():
    from models.encoders import list_encoders
    from models.mil import list_mil_models

    notes = " ".join(r.get("notes", "") for r in _cff()["references"])
    missing = [n for n in [*list_mil_models(), *list_encoders()] if not re.search(rf"\b{re.escape(n)}\b", notes)]
    assert not missing, f"CITATION.cff has no reference naming {missing}"

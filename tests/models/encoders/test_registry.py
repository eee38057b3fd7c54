"""models.encoders.registry: the entries' facts, everything derived from them, and adding an entry."""
from __future__ import annotations

import subprocess
import sys

import pytest

from models.encoders import (EncoderInfo, TransformSpec, create_encoder, dim_label, encoder_for_dim, encoder_info,
                             encoders_by_dim, fully_conv_encoders, list_encoders, register_encoder)
from models.encoders import registry
from wsi_core.errors import CheckpointError


def test_registry_entries() -> None:
    assert list_encoders() == ["resnet50_trunc", "uni_v1", "uni_v2", "conch_v1", "ctranspath", "virchow2"]
    got = {n: (i.dim, i.input_size, i.hub_id, i.is_cnn, i.env_vars) for n in list_encoders() if (i := encoder_info(n))}
    assert got == {
        "resnet50_trunc": (1024, 224, "timm/resnet50.tv_in1k", True, ("RESNET50_TRUNC_CKPT_PATH",)),
        "uni_v1": (1024, 224, "hf-hub:MahmoodLab/UNI", False, ("UNI_V1_CKPT_PATH", "UNI_CKPT_PATH")),
        "uni_v2": (1536, 224, "hf-hub:MahmoodLab/UNI2-h", False, ("UNI_V2_CKPT_PATH", "UNI2_CKPT_PATH")),
        "conch_v1": (512, 448, "hf_hub:MahmoodLab/conch", False, ("CONCH_V1_CKPT_PATH", "CONCH_CKPT_PATH")),
        "ctranspath": (768, 224, "MahmoodLab/hest-bench/fm_v1/ctranspath/CHIEF_CTransPath.pth", False,
                       ("CTRANSPATH_CKPT_PATH",)),
        "virchow2": (2560, 224, "hf-hub:paige-ai/Virchow2", False, ("VIRCHOW2_CKPT_PATH",)),
    }
    labels = {n: encoder_info(n).label for n in list_encoders()}
    assert labels == {"resnet50_trunc": "ResNet-50", "uni_v1": "UNI", "uni_v2": "UNI2-h", "conch_v1": "CONCH",
                      "ctranspath": "CTransPath", "virchow2": "Virchow2"}
    transforms = {n: (t.interpolation, t.center_crop, t.mean[0]) for n in list_encoders()
                  if (t := encoder_info(n).transform)}
    assert transforms == {"resnet50_trunc": ("bilinear", False, 0.485), "uni_v1": ("bilinear", True, 0.485),
                          "uni_v2": ("bilinear", True, 0.485), "conch_v1": ("bicubic", True, 0.48145466),
                          "ctranspath": ("bilinear", False, 0.485), "virchow2": ("bicubic", True, 0.485)}
    assert all(encoder_info(n).builder is not None for n in list_encoders())


def test_derived_width_table_and_labels() -> None:
    assert encoders_by_dim() == {1024: ["resnet50_trunc", "uni_v1"], 1536: ["uni_v2"], 512: ["conch_v1"],
                                 768: ["ctranspath"], 2560: ["virchow2"]}
    assert [dim_label(d) for d in (1024, 1536, 768, 512, 2560, 384)] == \
        ["ResNet-50 or UNI", "UNI2-h", "CTransPath", "CONCH", "Virchow2", None]


def test_fully_conv_eligibility() -> None:
    assert fully_conv_encoders() == ["resnet50_trunc"]
    assert [n for n in list_encoders() if encoder_info(n).fully_conv] == ["resnet50_trunc"]


def test_encoder_for_dim() -> None:
    assert [encoder_for_dim(d) for d in (1536, 1024, 768, 512, 2560)] == \
        ["uni_v2", "resnet50_trunc", "ctranspath", "conch_v1", "virchow2"]
    assert encoder_for_dim(1024, prefer="uni_v1") == "uni_v1"
    assert encoder_for_dim(1536, prefer="uni_v1") == "uni_v2"  # prefer only breaks ties
    with pytest.raises(CheckpointError) as info:
        encoder_for_dim(384)
    assert str(info.value) == (
        "checkpoint expects 384-d features; no registered encoder gives that (1024: resnet50_trunc/uni_v1, "
        "1536: uni_v2, 512: conch_v1, 768: ctranspath, 2560: virchow2); give pre-extracted features of "
        "that width (features_path) or use a checkpoint trained on one of these encoders")


def test_unknown_name() -> None:
    with pytest.raises(CheckpointError) as info:
        encoder_info("uni_v9")
    assert str(info.value) == ("unknown encoder_arguments.model_name 'uni_v9'; available: resnet50_trunc, uni_v1, "
                               "uni_v2, conch_v1, ctranspath, virchow2")


def test_adding_an_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    """One EncoderInfo with a builder is all an encoder needs: listed, built, derived tables follow."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    calls = []

    def build(info, *, target_img_size=None, weights_path=None):
        calls.append((info.name, target_img_size, weights_path))
        return registry.Encoder(name=info.name, model=None, transform=None, dim=info.dim, weights_source="here")

    info = register_encoder(EncoderInfo(name="toy", dim=384, input_size=112, hub_id="hf-hub:x/toy",
                                        env_vars=("TOY_CKPT_PATH",), label="Toy", transform=TransformSpec(),
                                        builder=build))
    assert list_encoders()[-1] == "toy" and encoder_info("toy") is info
    assert encoder_for_dim(384) == "toy" and dim_label(384) == "Toy" and "toy" not in fully_conv_encoders()
    enc = create_encoder("toy", target_img_size=64, precision="bf16")
    assert (enc.name, enc.dim, enc.precision, calls) == ("toy", 384, "bf16", [("toy", 64, None)])


def test_listing_is_torch_free() -> None:
    """The command line and the config list the encoders without loading torch."""
    code = ("import sys, models; from models.encoders import list_encoders, encoder_info; "
            "names = models.list_encoders(); assert names == list_encoders() and len(names) == 6; "
            "assert encoder_info('uni_v2').dim == 1536; import heatmaps.config; "
            "sys.exit(10 * ('torch' in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-800:]


def test_config_choices_come_from_the_registries() -> None:
    from heatmaps.config import EncoderArguments, ModelArguments
    from models import list_mil_models

    desc = EncoderArguments.model_fields["model_name"].description
    assert ", ".join(list_encoders()) in desc and "auto" in desc
    assert EncoderArguments.model_json_schema()["properties"]["model_name"]["enum"] == [*list_encoders(), "auto"]
    assert ModelArguments.model_json_schema()["properties"]["model_type"]["enum"] == list_mil_models()

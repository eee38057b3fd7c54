"""Pathology foundation-model encoders (ViT / Swin): UNI, UNI2-h, CONCH, CTransPath, Virchow2.

Each entry reproduces the architecture, evaluation transform and embedding published with the
model (model cards of MahmoodLab/UNI, MahmoodLab/UNI2-h, paige-ai/Virchow2, MahmoodLab/CONCH;
TransPath's ``ctran.py``; TRIDENT's encoder factory, which agrees with them):

* ``uni_v1`` - timm ``vit_large_patch16_224`` (img 224, patch 16, LayerScale 1e-5), class
  token -> 1024-d. Transform: Resize(224) (bilinear), CenterCrop(224), ToTensor, ImageNet norm.
* ``uni_v2`` - UNI2-h: timm ``vit_giant_patch14_224`` with depth 24, 24 heads, width 1536,
  SwiGLU MLP (ratio 2.66667*2, SiLU), 8 register tokens, no class-token position embedding;
  class token -> 1536-d. Transform as uni_v1.
* ``conch_v1`` - needs the ``conch`` package; ``encode_image(proj_contrast=False,
  normalize=False)`` -> 512-d. Transform: Resize(448, bicubic), CenterCrop(448), ToTensor,
  OpenAI-CLIP norm.
* ``ctranspath`` - Swin-T (timm ``swin_tiny_patch4_window7_224``) whose patch embedding is
  TransPath's convolutional stem; average-pooled last stage -> 768-d; 224 px only.
  Transform: Resize(224) (bilinear), ToTensor, ImageNet norm. TransPath/timm-0.5 checkpoints
  (``{'model': ...}``, patch merging at the end of a stage, ``attn_mask`` buffers) are converted.
* ``virchow2`` - timm ``vit_huge_patch14_224`` (LayerScale 1e-5, SwiGLU ratio 5.3375, SiLU,
  4 register tokens, no pooling); embedding = concat(class token, mean of the 256 patch tokens,
  register tokens excluded) -> 2560-d. Transform: the model's timm data config
  (Resize(224, bicubic), CenterCrop(224), ToTensor, ImageNet norm).

ViTs are built on the meta device and take the weights' tensors (no random initialisation of
hundreds of millions of parameters); the hub path goes through ``timm.create_model(hub_id,
pretrained=True)``. A ``target_img_size`` other than the published one keeps the published
position-embedding grid and interpolates it at run time (timm ``dynamic_img_size``).
torch and timm are imported by the builders, not by this module.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from wsi_core.errors import CheckpointError, ConfigError

from .registry import (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, Encoder, EncoderInfo, TransformSpec,
                       register_encoder, resolve_target_size)
from .transforms import build_transform
from .weights import entry_hub_error, load_strict, local_weights, read_weights, strip_prefixes

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

__all__ = ["VIT_ARCHS", "vit_kwargs", "build_vit", "build_ctranspath", "convert_transpath_state_dict",
           "CTRANSPATH_HUB", "CONCH_INSTALL", "UNI_V1", "UNI_V2", "CONCH_V1", "CTRANSPATH", "VIRCHOW2"]

#: TRIDENT's copy of the CTransPath weights: (repo_id, repo_type, filename)
CTRANSPATH_HUB = ("MahmoodLab/hest-bench", "dataset", "fm_v1/ctranspath/CHIEF_CTransPath.pth")
CONCH_INSTALL = "pip install git+https://github.com/Mahmoodlab/CONCH.git"

_SWIGLU = {"mlp_layer": "SwiGLUPacked", "act_layer": "SiLU"}
#: registry name -> (timm architecture, keyword arguments as published; see vit_kwargs)
VIT_ARCHS: dict[str, tuple[str, dict[str, Any]]] = {
    "uni_v1": ("vit_large_patch16_224", dict(img_size=224, patch_size=16, init_values=1e-5,
                                             num_classes=0, dynamic_img_size=True)),
    "uni_v2": ("vit_giant_patch14_224", dict(img_size=224, patch_size=14, depth=24, num_heads=24,
                                             init_values=1e-5, embed_dim=1536, mlp_ratio=2.66667 * 2,
                                             num_classes=0, no_embed_class=True, reg_tokens=8,
                                             dynamic_img_size=True, **_SWIGLU)),
    "virchow2": ("vit_huge_patch14_224", dict(img_size=224, init_values=1e-5, num_classes=0,
                                              reg_tokens=4, mlp_ratio=5.3375, global_pool="",
                                              dynamic_img_size=True, **_SWIGLU)),
}


def vit_kwargs(name: str, **overrides: Any) -> dict[str, Any]:
    """timm keyword arguments of ``VIT_ARCHS[name]`` with layer names resolved to classes.

    ``overrides`` replace entries (tests use ``depth=1`` to shape-check cheaply).
    """
    import timm.layers
    from torch import nn

    kw = {**VIT_ARCHS[name][1], **overrides}
    if kw.get("mlp_layer") == "SwiGLUPacked":
        kw["mlp_layer"] = timm.layers.SwiGLUPacked
    if kw.get("act_layer") == "SiLU":
        kw["act_layer"] = nn.SiLU
    return kw


def build_vit(name: str, *, device: str | torch.device | None = None, pretrained_id: str | None = None,
              **overrides: Any) -> nn.Module:
    """timm model of entry ``name``: random weights on ``device`` ('meta': no memory, no init),
    or the hub weights of ``pretrained_id`` (``timm.create_model(id, pretrained=True)``)."""
    import timm
    import torch

    arch = VIT_ARCHS[name][0]
    kw = vit_kwargs(name, **overrides)
    if pretrained_id is not None:
        return timm.create_model(pretrained_id, pretrained=True, **kw)
    with torch.device(device or "cpu"):
        return timm.create_model(arch, pretrained=False, **kw)


def _drop_head(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """A classifier head is not part of an encoder (num_classes=0): drop 'head.*' keys."""
    return {k: v for k, v in sd.items() if not k.startswith("head.")}


def _timm_vit(info: EncoderInfo, target_img_size: int | None, weights_path: Any,
              wrap: Callable[[nn.Module], nn.Module] | None = None) -> Encoder:
    """A :data:`VIT_ARCHS` entry from local weights (strict, meta device) or its hub id."""
    size = resolve_target_size(info, target_img_size)
    local = local_weights(info, weights_path)
    if local is not None:
        sd, source = local
        net = build_vit(info.name, device="meta")
        load_strict(net, _drop_head(sd), source=source, label=info.label, assign=True)
    else:
        source = info.hub_id
        try:
            net = build_vit(info.name, pretrained_id=info.hub_id)
        except Exception as exc:  # gated repo, offline, no cache, ...
            raise entry_hub_error(info, exc) from exc
    model = (wrap(net) if wrap else net).eval()
    return Encoder(name=info.name, model=model, transform=build_transform(info.transform, size),
                   dim=info.dim, weights_source=source, hub_id=info.hub_id, input_size=size,
                   is_cnn=info.is_cnn)


def build_class_token_vit(info: EncoderInfo, *, target_img_size: int | None = None,
                          weights_path: str | os.PathLike[str] | None = None) -> Encoder:
    """UNI / UNI2-h: the class token of a :data:`VIT_ARCHS` ViT.

    Raises:
        CheckpointError: unreadable or mismatching local weights, unreachable hub.
        ConfigError: a target size that is not a multiple of the patch size.
    """
    return _timm_vit(info, target_img_size, weights_path)


def build_virchow2(info: EncoderInfo, *, target_img_size: int | None = None,
                   weights_path: str | os.PathLike[str] | None = None) -> Encoder:
    """Virchow2: concat(class token, mean patch token) (:class:`~models.encoders.nets.ClsMeanTokens`).

    Raises: as :func:`build_class_token_vit`.
    """
    from .nets import ClsMeanTokens

    return _timm_vit(info, target_img_size, weights_path, wrap=ClsMeanTokens)


# ---------------------------------------------------------------------------------------------
# conch_v1 (the CONCH package builds the CoCa model)
# ---------------------------------------------------------------------------------------------

def _conch_model(create: Callable, source: str, force: int | None, *, hub: bool, info: EncoderInfo) -> nn.Module:
    try:
        return create("conch_ViT-B-16", checkpoint_path=source, force_image_size=force,
                      return_transform=False)
    except Exception as exc:
        if hub:
            raise entry_hub_error(info, exc) from exc
        raise CheckpointError(f"cannot load CONCH weights {source}: {type(exc).__name__}: "
                              f"{str(exc)[:160]}") from exc


def build_conch(info: EncoderInfo, *, target_img_size: int | None = None,
                weights_path: str | os.PathLike[str] | None = None) -> Encoder:
    """CONCH (512-d) through the ``conch`` package; local weights or hf_hub:MahmoodLab/conch.

    The package is not a dependency: the tests drive this path through a stand-in for its
    documented loader (``create_model_from_pretrained``), not the real CoCa. A ``target_img_size``
    other than 448 goes to CONCH's ``force_image_size`` (position embeddings resized).

    Raises:
        CheckpointError: the package is missing (names the install command), the weights do not
            load or do not fit, the hub cannot be reached.
        ConfigError: a target size that is not a multiple of 16.
    """
    try:
        from conch.open_clip_custom import create_model_from_pretrained
    except ImportError as exc:
        raise CheckpointError(
            f"conch_v1 needs the 'conch' package ({CONCH_INSTALL}); install it, or give "
            "pre-extracted 512-d CONCH features (features_path)"
        ) from exc
    from .nets import ConchImage

    size = resolve_target_size(info, target_img_size)
    local = local_weights(info, weights_path)
    force = None if size == info.input_size else size
    if local is not None:
        sd, source = local
        coca = _conch_model(create_model_from_pretrained, source, force, hub=False, info=info)
        if force is None:  # CONCH loads non-strictly: check the file fits the model
            load_strict(coca, sd, source=source, label=info.label)
    else:
        source = info.hub_id
        coca = _conch_model(create_model_from_pretrained, source, force, hub=True, info=info)
    return Encoder(name=info.name, model=ConchImage(coca).eval(), transform=build_transform(info.transform, size),
                   dim=info.dim, weights_source=source, hub_id=info.hub_id, input_size=size)


# ---------------------------------------------------------------------------------------------
# ctranspath (Swin-T with TransPath's convolutional stem)
# ---------------------------------------------------------------------------------------------

def build_ctranspath(*, random_init: bool = True) -> nn.Module:
    """Swin-T (timm ``swin_tiny_patch4_window7_224``, no head) with TransPath's
    :class:`~models.encoders.nets.ConvStem`: (B, 3, 224, 224) -> (B, 768).

    ``random_init=False`` skips timm's weight initialisation (weights about to be loaded). Built
    on the CPU, not the meta device: Swin's relative-position index and shift masks are
    non-persistent buffers no state dict restores."""
    import timm

    from .nets import ConvStem

    return timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=0,
                             embed_layer=ConvStem, weight_init="" if random_init else "skip")


_OLD_DOWNSAMPLE = re.compile(r"^layers\.(\d+)\.downsample\.")


def convert_transpath_state_dict(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """TransPath (timm 0.5) Swin state dict -> timm >= 0.9 layout.

    Drops the ``attn_mask`` / ``relative_position_index`` buffers and any ``head.*``; when the
    patch merging sits at the end of a stage (``layers.0.downsample.*`` present) it moves to the
    start of the next stage (``layers.{i+1}.downsample.*``), as timm now builds it.
    """
    old = any(k.startswith("layers.0.downsample.") for k in sd)
    out: dict[str, Tensor] = {}
    for k, v in sd.items():
        if k.endswith(("attn_mask", "relative_position_index")) or k.startswith("head."):
            continue
        if old:
            k = _OLD_DOWNSAMPLE.sub(lambda m: f"layers.{int(m.group(1)) + 1}.downsample.", k)
        out[k] = v
    return out


def _ctranspath_hub_file(info: EncoderInfo) -> str:
    import huggingface_hub

    repo_id, repo_type, filename = CTRANSPATH_HUB
    try:
        return huggingface_hub.hf_hub_download(repo_id=repo_id, repo_type=repo_type, filename=filename)
    except Exception as exc:
        raise entry_hub_error(info, exc, what=f"{repo_id} ({repo_type}) {filename}") from exc


def build_ctranspath_encoder(info: EncoderInfo, *, target_img_size: int | None = None,
                             weights_path: str | os.PathLike[str] | None = None) -> Encoder:
    """CTransPath (768-d), 224 px; weights from the argument, $CTRANSPATH_CKPT_PATH, or
    TRIDENT's copy on the hub (dataset MahmoodLab/hest-bench).

    Raises:
        ConfigError: a target size other than 224.
        CheckpointError: unreadable or mismatching weights, unreachable hub.
    """
    if target_img_size is not None and int(target_img_size) != info.input_size:
        raise ConfigError(f"encoder_arguments.target_img_size {target_img_size} does not fit "
                          "ctranspath (Swin windows fixed at 224 px); use 224 or leave it unset")
    local = local_weights(info, weights_path)
    if local is None:
        path = _ctranspath_hub_file(info)
        local = strip_prefixes(read_weights(Path(path), env=info.env_vars[0])), path
    sd, source = local
    model = build_ctranspath(random_init=False)
    load_strict(model, convert_transpath_state_dict(sd), source=source, label=info.label)
    return Encoder(name=info.name, model=model.eval(), transform=build_transform(info.transform, info.input_size),
                   dim=info.dim, weights_source=source, hub_id=info.hub_id, input_size=info.input_size,
                   is_cnn=info.is_cnn)


# ---------------------------------------------------------------------------------------------
# The entries, in registration order
# ---------------------------------------------------------------------------------------------

_VIT_CROP = TransformSpec(interpolation="bilinear", center_crop=True)
_BICUBIC_CROP = TransformSpec(interpolation="bicubic", center_crop=True)

UNI_V1 = register_encoder(EncoderInfo(
    name="uni_v1", dim=1024, input_size=224, hub_id="hf-hub:MahmoodLab/UNI",
    env_vars=("UNI_V1_CKPT_PATH", "UNI_CKPT_PATH"), label="UNI", patch_size=16, transform=_VIT_CROP,
    builder=build_class_token_vit))
UNI_V2 = register_encoder(EncoderInfo(
    name="uni_v2", dim=1536, input_size=224, hub_id="hf-hub:MahmoodLab/UNI2-h",
    env_vars=("UNI_V2_CKPT_PATH", "UNI2_CKPT_PATH"), label="UNI2-h", patch_size=14, transform=_VIT_CROP,
    builder=build_class_token_vit))
CONCH_V1 = register_encoder(EncoderInfo(
    name="conch_v1", dim=512, input_size=448, hub_id="hf_hub:MahmoodLab/conch",
    env_vars=("CONCH_V1_CKPT_PATH", "CONCH_CKPT_PATH"), label="CONCH", patch_size=16,
    transform=TransformSpec(interpolation="bicubic", center_crop=True, mean=OPENAI_CLIP_MEAN,
                            std=OPENAI_CLIP_STD),
    builder=build_conch))
CTRANSPATH = register_encoder(EncoderInfo(
    name="ctranspath", dim=768, input_size=224, hub_id=f"{CTRANSPATH_HUB[0]}/{CTRANSPATH_HUB[2]}",
    env_vars=("CTRANSPATH_CKPT_PATH",), label="CTransPath", transform=TransformSpec(),
    builder=build_ctranspath_encoder))
VIRCHOW2 = register_encoder(EncoderInfo(
    name="virchow2", dim=2560, input_size=224, hub_id="hf-hub:paige-ai/Virchow2",
    env_vars=("VIRCHOW2_CKPT_PATH",), label="Virchow2", patch_size=14, transform=_BICUBIC_CROP,
    builder=build_virchow2))

"""Pathology foundation-model encoders: UNI, UNI2-h, Virchow2, CTransPath, CONCH.

Each entry reproduces the architecture, evaluation transform and embedding published with the
model (model cards of MahmoodLab/UNI, MahmoodLab/UNI2-h, paige-ai/Virchow2, MahmoodLab/CONCH;
TransPath's ``ctran.py``; TRIDENT's encoder factory, which agrees with them):

* ``uni_v1`` - timm ``vit_large_patch16_224`` (img 224, patch 16, LayerScale 1e-5), class
  token -> 1024-d. Transform: Resize(224) (bilinear), CenterCrop(224), ToTensor, ImageNet norm.
* ``uni_v2`` - UNI2-h: timm ``vit_giant_patch14_224`` with depth 24, 24 heads, width 1536,
  SwiGLU MLP (ratio 2.66667*2, SiLU), 8 register tokens, no class-token position embedding;
  class token -> 1536-d. Transform as uni_v1.
* ``virchow2`` - timm ``vit_huge_patch14_224`` (LayerScale 1e-5, SwiGLU ratio 5.3375, SiLU,
  4 register tokens, no pooling); embedding = concat(class token, mean of the 256 patch tokens,
  register tokens excluded) -> 2560-d. Transform: the model's timm data config
  (Resize(224, bicubic), CenterCrop(224), ToTensor, ImageNet norm).
* ``ctranspath`` - Swin-T (timm ``swin_tiny_patch4_window7_224``) whose patch embedding is
  TransPath's convolutional stem; average-pooled last stage -> 768-d; 224 px only.
  Transform: Resize(224) (bilinear), ToTensor, ImageNet norm. TransPath/timm-0.5 checkpoints
  (``{'model': ...}``, patch merging at the end of a stage, ``attn_mask`` buffers) are converted.
* ``conch_v1`` - needs the ``conch`` package; ``encode_image(proj_contrast=False,
  normalize=False)`` -> 512-d. Transform: Resize(448, bicubic), CenterCrop(448), ToTensor,
  OpenAI-CLIP norm.

ViTs are built on the meta device and take the weights' tensors (no random initialisation of
hundreds of millions of parameters); the hub path goes through ``timm.create_model(hub_id,
pretrained=True)``. A ``target_img_size`` other than the published one keeps the published
position-embedding grid and interpolates it at run time (timm ``dynamic_img_size``).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

import torch
from PIL import Image
from torch import Tensor, nn

from wsi_core.errors import CheckpointError, ConfigError

from .encoders import (IMAGENET_MEAN, IMAGENET_STD, Encoder, EncoderInfo, hub_error, load_strict,
                       read_weights, register_encoder, resolve_target_size, resolve_weights_path,
                       strip_prefixes)

__all__ = ["VIT_ARCHS", "vit_kwargs", "build_vit", "ClsMeanTokens", "ConvStem", "build_ctranspath",
           "convert_transpath_state_dict", "vit_transform", "ctranspath_transform", "conch_transform",
           "OPENAI_CLIP_MEAN", "OPENAI_CLIP_STD", "CTRANSPATH_HUB", "CONCH_INSTALL"]

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
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

    arch = VIT_ARCHS[name][0]
    kw = vit_kwargs(name, **overrides)
    if pretrained_id is not None:
        return timm.create_model(pretrained_id, pretrained=True, **kw)
    with torch.device(device or "cpu"):
        return timm.create_model(arch, pretrained=False, **kw)


class ClsMeanTokens(nn.Module):
    """Virchow embedding: (B, 3, H, W) -> (B, 2 D) = concat(class token, mean patch token).

    ``vit`` must return all tokens (timm ``global_pool=''``): (B, P + N, D), P = 1 class token
    + register tokens (excluded from the mean), N patch tokens.
    """

    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        self.vit = vit
        self.n_prefix = int(vit.num_prefix_tokens)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.vit(x)
        return torch.cat([tokens[:, 0], tokens[:, self.n_prefix:].mean(dim=1)], dim=-1)


def vit_transform(size: int, *, interpolation: str = "bilinear", mean=IMAGENET_MEAN, std=IMAGENET_STD,
                  center_crop: bool = True) -> Callable[[Image.Image], Tensor]:
    """Resize(size, shorter side), [CenterCrop(size)], ToTensor, Normalize: PIL -> (3, s, s)."""
    from torchvision import transforms
    from torchvision.transforms import InterpolationMode

    steps: list[Callable] = [transforms.Resize(size, interpolation=InterpolationMode(interpolation))]
    if center_crop:
        steps.append(transforms.CenterCrop(size))
    steps += [transforms.ToTensor(), transforms.Normalize(mean, std)]
    return transforms.Compose(steps)


def ctranspath_transform(size: int = 224) -> Callable[[Image.Image], Tensor]:
    """TransPath's evaluation transform: Resize(224), ToTensor, ImageNet Normalize."""
    return vit_transform(size, center_crop=False)


def conch_transform(size: int = 448) -> Callable[[Image.Image], Tensor]:
    """CONCH's preprocess: Resize(size, bicubic), CenterCrop(size), ToTensor, OpenAI-CLIP norm."""
    return vit_transform(size, interpolation="bicubic", mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD)


def _local_or_none(info: EncoderInfo, weights_path) -> tuple[dict[str, Tensor], str] | None:
    """(state dict without wrapper prefixes, source path) from the argument/env, else None."""
    found = resolve_weights_path(info, weights_path)
    if found is None:
        return None
    path, how = found
    env = how[1:] if how.startswith("$") else info.env_vars[0]
    return strip_prefixes(read_weights(path, env=env)), str(path)


def _drop_head(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """A classifier head is not part of an encoder (num_classes=0): drop 'head.*' keys."""
    return {k: v for k, v in sd.items() if not k.startswith("head.")}


def _vit_entry(info: EncoderInfo, *, wrap: Callable[[nn.Module], nn.Module] | None,
               transform: Callable[[int], Callable]) -> Callable[..., Encoder]:
    def factory(*, target_img_size: int | None = None, weights_path=None) -> Encoder:
        size = resolve_target_size(info, target_img_size)
        local = _local_or_none(info, weights_path)
        if local is not None:
            sd, source = local
            net = build_vit(info.name, device="meta")
            load_strict(net, _drop_head(sd), source=source, label=info.label, assign=True)
        else:
            source = info.hub_id
            try:
                net = build_vit(info.name, pretrained_id=info.hub_id)
            except Exception as exc:  # gated repo, offline, no cache, ...
                raise hub_error(info, exc) from exc
        model = (wrap(net) if wrap else net).eval()
        return Encoder(name=info.name, model=model, transform=transform(size), dim=info.dim,
                       weights_source=source, hub_id=info.hub_id, input_size=size, is_cnn=False)

    factory.__name__ = info.name
    factory.__doc__ = f"{info.label} ({info.dim}-d) from local weights or {info.hub_id}."
    return factory


UNI_V1 = EncoderInfo(name="uni_v1", dim=1024, input_size=224, hub_id="hf-hub:MahmoodLab/UNI",
                     env_vars=("UNI_V1_CKPT_PATH", "UNI_CKPT_PATH"), label="UNI", patch_size=16)
UNI_V2 = EncoderInfo(name="uni_v2", dim=1536, input_size=224, hub_id="hf-hub:MahmoodLab/UNI2-h",
                     env_vars=("UNI_V2_CKPT_PATH", "UNI2_CKPT_PATH"), label="UNI2-h", patch_size=14)
CONCH_V1 = EncoderInfo(name="conch_v1", dim=512, input_size=448, hub_id="hf_hub:MahmoodLab/conch",
                       env_vars=("CONCH_V1_CKPT_PATH", "CONCH_CKPT_PATH"), label="CONCH", patch_size=16)
CTRANSPATH = EncoderInfo(name="ctranspath", dim=768, input_size=224,
                         hub_id=f"{CTRANSPATH_HUB[0]}/{CTRANSPATH_HUB[2]}",
                         env_vars=("CTRANSPATH_CKPT_PATH",), label="CTransPath")
VIRCHOW2 = EncoderInfo(name="virchow2", dim=2560, input_size=224, hub_id="hf-hub:paige-ai/Virchow2",
                       env_vars=("VIRCHOW2_CKPT_PATH",), label="Virchow2", patch_size=14)

register_encoder("uni_v1", UNI_V1)(_vit_entry(UNI_V1, wrap=None, transform=vit_transform))
register_encoder("uni_v2", UNI_V2)(_vit_entry(UNI_V2, wrap=None, transform=vit_transform))


# ---------------------------------------------------------------------------------------------
# conch_v1 (the CONCH package builds the CoCa model)
# ---------------------------------------------------------------------------------------------

class _ConchImage(nn.Module):
    """CONCH image tower as CLAM/TRIDENT use it: (B, 3, s, s) -> (B, 512), no projection."""

    def __init__(self, coca: nn.Module) -> None:
        super().__init__()
        self.coca = coca

    def forward(self, x: Tensor) -> Tensor:
        return self.coca.encode_image(x, proj_contrast=False, normalize=False)


@register_encoder("conch_v1", CONCH_V1)
def conch_v1(*, target_img_size: int | None = None, weights_path=None) -> Encoder:
    """CONCH (512-d) through the ``conch`` package; local weights or hf_hub:MahmoodLab/conch.

    The package is not a dependency: the tests drive this path through a stand-in for its
    documented loader (``create_model_from_pretrained``), not the real CoCa. A ``target_img_size``
    other than 448 goes to CONCH's ``force_image_size`` (position embeddings resized).
    """
    try:
        from conch.open_clip_custom import create_model_from_pretrained
    except ImportError as exc:
        raise CheckpointError(
            f"conch_v1 needs the 'conch' package ({CONCH_INSTALL}); install it, or give "
            "pre-extracted 512-d CONCH features (features_path)"
        ) from exc
    size = resolve_target_size(CONCH_V1, target_img_size)
    local = _local_or_none(CONCH_V1, weights_path)
    force = None if size == CONCH_V1.input_size else size
    if local is not None:
        sd, source = local
        try:
            coca = create_model_from_pretrained("conch_ViT-B-16", checkpoint_path=source,
                                                force_image_size=force, return_transform=False)
        except Exception as exc:
            raise CheckpointError(f"cannot load CONCH weights {source}: {type(exc).__name__}: "
                                  f"{str(exc)[:160]}") from exc
        if force is None:  # CONCH loads non-strictly: check the file fits the model
            load_strict(coca, sd, source=source, label="CONCH")
    else:
        source = CONCH_V1.hub_id
        try:
            coca = create_model_from_pretrained("conch_ViT-B-16", checkpoint_path=source,
                                                force_image_size=force, return_transform=False)
        except Exception as exc:
            raise hub_error(CONCH_V1, exc) from exc
    return Encoder(name="conch_v1", model=_ConchImage(coca).eval(), transform=conch_transform(size),
                   dim=512, weights_source=source, hub_id=CONCH_V1.hub_id, input_size=size)


# ---------------------------------------------------------------------------------------------
# ctranspath (Swin-T with TransPath's convolutional stem)
# ---------------------------------------------------------------------------------------------

class ConvStem(nn.Module):
    """TransPath's patch embedding: two 3x3 stride-2 conv-BN-ReLU blocks and a 1x1 conv.

    (B, 3, H, W) -> (B, H/4, W/4, embed_dim) (``output_fmt='NHWC'``, timm >= 0.9 Swin) or
    (B, H/4 * W/4, embed_dim) tokens; then the optional norm. Channels: 3 -> E/8 -> E/4 -> E.
    Accepts timm's PatchEmbed keyword arguments.
    """

    def __init__(self, img_size: int = 224, patch_size: int = 4, in_chans: int = 3, embed_dim: int = 96,
                 norm_layer: Callable | None = None, output_fmt: str | None = None,
                 strict_img_size: bool = True, device=None, dtype=None, **_: Any) -> None:
        super().__init__()
        if patch_size != 4 or embed_dim % 8:
            raise ValueError("ConvStem needs patch_size 4 and embed_dim divisible by 8")
        self.img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.patch_size = (4, 4)
        self.grid_size = (self.img_size[0] // 4, self.img_size[1] // 4)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.output_fmt = output_fmt
        self.strict_img_size = strict_img_size
        dd = {"device": device, "dtype": dtype}
        layers: list[nn.Module] = []
        cin, cout = in_chans, embed_dim // 8
        for _i in range(2):
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False, **dd),
                       nn.BatchNorm2d(cout, **dd), nn.ReLU(inplace=True)]
            cin, cout = cout, cout * 2
        layers.append(nn.Conv2d(cin, embed_dim, 1, **dd))
        self.proj = nn.Sequential(*layers)
        self.norm = norm_layer(embed_dim, **dd) if norm_layer else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        if self.strict_img_size and tuple(x.shape[-2:]) != self.img_size:
            raise ValueError(f"ctranspath takes {self.img_size[0]}-px images, got {tuple(x.shape[-2:])}")
        x = self.proj(x)
        x = x.permute(0, 2, 3, 1) if self.output_fmt == "NHWC" else x.flatten(2).transpose(1, 2)
        return self.norm(x)


def build_ctranspath(*, random_init: bool = True) -> nn.Module:
    """Swin-T (timm ``swin_tiny_patch4_window7_224``, no head) with :class:`ConvStem`:
    (B, 3, 224, 224) -> (B, 768). ``random_init=False`` skips timm's weight initialisation
    (weights about to be loaded). Built on the CPU, not the meta device: Swin's
    relative-position index and shift masks are non-persistent buffers no state dict restores."""
    import timm

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


def _ctranspath_hub_file() -> str:
    import huggingface_hub

    repo_id, repo_type, filename = CTRANSPATH_HUB
    try:
        return huggingface_hub.hf_hub_download(repo_id=repo_id, repo_type=repo_type, filename=filename)
    except Exception as exc:
        raise hub_error(CTRANSPATH, exc, what=f"{repo_id} ({repo_type}) {filename}") from exc


@register_encoder("ctranspath", CTRANSPATH)
def ctranspath(*, target_img_size: int | None = None, weights_path=None) -> Encoder:
    """CTransPath (768-d), 224 px; weights from the argument, $CTRANSPATH_CKPT_PATH, or
    TRIDENT's copy on the hub (dataset MahmoodLab/hest-bench)."""
    if target_img_size is not None and int(target_img_size) != 224:
        raise ConfigError(f"encoder_arguments.target_img_size {target_img_size} does not fit "
                          "ctranspath (Swin windows fixed at 224 px); use 224 or leave it unset")
    local = _local_or_none(CTRANSPATH, weights_path)
    if local is None:
        path = _ctranspath_hub_file()
        local = strip_prefixes(read_weights(Path(path))), path
    sd, source = local
    model = build_ctranspath(random_init=False)
    load_strict(model, convert_transpath_state_dict(sd), source=source, label="CTransPath")
    return Encoder(name="ctranspath", model=model.eval(), transform=ctranspath_transform(224), dim=768,
                   weights_source=source, hub_id=CTRANSPATH.hub_id, input_size=224, is_cnn=False)


# ---------------------------------------------------------------------------------------------
# virchow2
# ---------------------------------------------------------------------------------------------

def _virchow2_transform(size: int) -> Callable[[Image.Image], Tensor]:
    """Virchow2's timm data config: Resize(size, bicubic), CenterCrop(size), ImageNet norm."""
    return vit_transform(size, interpolation="bicubic")


register_encoder("virchow2", VIRCHOW2)(_vit_entry(VIRCHOW2, wrap=ClsMeanTokens, transform=_virchow2_transform))

"""The torch modules the encoder entries build (imported by the builders, not by the registry).

* :class:`ResNet50Trunc` - CLAM's ``resnet50_trunc``: a ResNet-50 (timm ``resnet50``) run
  through ``layer3``, then global average pooling: (B, 3, H, W) -> (B, 1024).
* :class:`ClsMeanTokens` - Virchow's embedding: concat(class token, mean patch token).
* :class:`ConvStem` - TransPath's convolutional patch embedding of CTransPath's Swin-T.
* :class:`ConchImage` - CONCH's image tower as CLAM and TRIDENT use it (no projection).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

__all__ = ["ResNet50Trunc", "ClsMeanTokens", "ConvStem", "ConchImage"]


class ResNet50Trunc(nn.Module):
    """ResNet-50 stem + layer1..layer3 + global average pooling: (B, 3, H, W) -> (B, 1024).

    Submodule names equal torchvision/timm ResNet names, so their state dicts load directly
    (and :func:`models.fully_conv.feature_map` finds the trunk by them).
    """

    dim = 1024

    def __init__(self) -> None:
        super().__init__()
        import timm  # imported lazily: heavy, and only needed to encode

        net = timm.create_model("resnet50", pretrained=False, num_classes=0)
        self.conv1, self.bn1, self.act1, self.maxpool = net.conv1, net.bn1, net.act1, net.maxpool
        self.layer1, self.layer2, self.layer3 = net.layer1, net.layer2, net.layer3
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return torch.flatten(self.pool(x), 1)


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


class ConvStem(nn.Module):
    """TransPath's patch embedding: two 3x3 stride-2 conv-BN-ReLU blocks and a 1x1 conv.

    (B, 3, H, W) -> (B, H/4, W/4, embed_dim) (``output_fmt='NHWC'``, timm >= 0.9 Swin) or
    (B, H/4 * W/4, embed_dim) tokens; then the optional norm. Channels: 3 -> E/8 -> E/4 -> E.
    Accepts timm's PatchEmbed keyword arguments.

    Raises:
        ValueError: ``patch_size`` other than 4 or ``embed_dim`` not divisible by 8; at run
            time an image of another size when ``strict_img_size``.
    """

    def __init__(self, img_size: int = 224, patch_size: int = 4, in_chans: int = 3, embed_dim: int = 96,
                 norm_layer: Callable | None = None, output_fmt: str | None = None,
                 strict_img_size: bool = True, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None, **_: Any) -> None:
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


class ConchImage(nn.Module):
    """CONCH image tower as CLAM/TRIDENT use it: (B, 3, s, s) -> (B, 512), no projection."""

    def __init__(self, coca: nn.Module) -> None:
        super().__init__()
        self.coca = coca

    def forward(self, x: Tensor) -> Tensor:
        return self.coca.encode_image(x, proj_contrast=False, normalize=False)

"""TransMIL (Shao et al., "TransMIL: Transformer based Correlated Multiple Instance Learning for
whole slide image classification", NeurIPS 2021), inference and training, in the state-dict layouts
of the authors' ``szc19990412/TransMIL`` (``models/TransMIL.py``) and of ``mahmoodlab/MIL-Lab``
(``src/models/transmil.py``). Written from the paper and the documented behaviour of both (no code
copied); Nystrom attention is re-implemented here because ``nystrom_attention`` is not a
dependency (:class:`NystromAttention`, parameterised like that package).

Layouts (``D`` = ``in_dim``, ``E`` = ``embed_dim`` (512), ``h`` = ``num_heads`` (8),
``d = E // h`` (64), ``K`` = residual kernel (33), ``C`` = ``n_classes``):

* original: ``_fc1.0`` Linear(D, E) + ReLU; ``cls_token`` (1, 1, E); ``layer1``, ``layer2`` =
  TransLayer: ``norm`` LayerNorm(E), ``attn`` = NystromAttention (``to_qkv`` Linear(E, 3hd, no
  bias), ``to_out.0`` Linear(hd, E) + Dropout(0.1), ``res_conv`` Conv2d(h, h, (K, 1), groups=h,
  no bias)); ``pos_layer`` = PPEG (``proj``/``proj1``/``proj2`` depthwise Conv2d(E, E, 7/5/3));
  ``norm`` LayerNorm(E); ``_fc2`` Linear(E, C).
* MIL-Lab: ``patch_embed`` (ABMIL's MLP, ``patch_embed.0`` ...), ``blocks.{i}.norm`` and
  ``blocks.{i}.attention.*`` for ``num_layers`` blocks, ``pos_layer``, ``cls_token``, ``norm``,
  ``classifier`` Linear(E, C). MIL-Lab's Hugging Face wrapper prefix ``model.`` is stripped by the
  loader, and so is a Lightning checkpoint's ``state_dict`` / ``model.`` wrapping of the original.

Forward on a bag (N, D): h = fc1(h) (N, E); the sequence is padded to S*S tokens, S = ceil(sqrt N),
by appending copies of its first S*S - N tokens; the class token is prepended; layer 1; PPEG on the
S x S grid (tokens row-major; the class token passes through); the remaining layer(s); LayerNorm;
logits = fc2(cls token) (1, C); probs = softmax.

Attention for heatmaps (``attention_kind = "probability"``): the LAST layer's class-token row of
its Nystrom-approximated attention matrix, averaged over heads. With q/k the scaled queries/keys
of that layer's (left-zero-padded) sequence, q~/k~ their landmarks (means of consecutive groups),
the row is ``softmax(q_cls k~^T) @ pinv(softmax(q~ k~^T)) @ softmax(q~ k^T)`` (per head; pinv =
6 Moore-Penrose iterations), restricted to the columns of the N real instance tokens (zero
padding, the class token itself and the square-padding copies dropped), in input order. It is a
post-softmax attention *probability*, not a logit: the approximation may make entries slightly
negative, and the row over real instances sums to less than 1 because the unmasked zero padding
(up to m - 1 tokens, as in the reference) and the square-padding copies take a share. It leaves
out the depthwise-conv residual path of the values. Tokens are never reordered, so column i is
input instance i. Shape (1, N).

Instance scores (``instance_scores``, (N, C)): ``fc2(norm(token_i))`` of the final-layer token of
each real instance: the bag head applied to instance tokens. TransMIL mixes instances, so both
maps depend on the whole bag (``instance_independent = False``): score a bag whole, never sliced.
"""
from __future__ import annotations

import math
import re
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .abmil import patch_embed_mlp
from .mil import MILModel, register_mil_model

__all__ = ["NystromAttention", "TransLayer", "PPEG", "TransMIL", "moore_penrose_pinv",
           "infer_transmil_config"]

LAYOUTS = ("original", "mil_lab")


def moore_penrose_pinv(x: Tensor, iters: int = 6) -> Tensor:
    """Iterative Moore-Penrose pseudo-inverse of (..., m, m) ``x`` (Razavi et al. iteration).

    Start z = x^T / (max row abs-sum * max column abs-sum) over the whole tensor, then ``iters``
    times z <- z (13 I - xz (15 I - xz (7 I - xz))) / 4 with xz = x z.
    """
    a = x.abs()
    z = x.transpose(-1, -2) / (a.sum(dim=-1).max() * a.sum(dim=-2).max())
    eye = torch.eye(x.shape[-1], device=x.device, dtype=x.dtype)
    for _ in range(iters):
        xz = x @ z
        z = 0.25 * z @ (13 * eye - xz @ (15 * eye - xz @ (7 * eye - xz)))
    return z


class NystromAttention(nn.Module):
    """Nystromformer self-attention (Xiong et al. 2021) as parameterised by ``nystrom_attention``.

    (B, n, dim) -> (B, n, dim). The sequence is zero-padded at the front to a multiple of
    ``num_landmarks`` (m); landmarks are the means of m consecutive groups of ceil(n / m) scaled
    queries / keys; out = softmax(q k~^T) (pinv(softmax(q~ k~^T)) (softmax(q~ k^T) v)) per head,
    plus a depthwise conv over the sequence of v (``res_conv``, kernel (K, 1)) when ``residual``;
    heads merged, ``to_out`` (Linear + Dropout), the last n positions kept. The reference
    multiplies the first two factors first: the same product up to float32 rounding (tested to
    1e-5), but n m^2 instead of n m d operations. Computed one head at a time, so the (n x m)
    scratch matrices of a 100k-token bag take ~0.4 GB instead of ~3 GB.
    """

    def __init__(self, dim: int, *, dim_head: int = 64, heads: int = 8, num_landmarks: int = 256,
                 pinv_iterations: int = 6, residual: bool = True, residual_conv_kernel: int = 33,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.heads, self.dim_head = int(heads), int(dim_head)
        self.num_landmarks, self.pinv_iterations = int(num_landmarks), int(pinv_iterations)
        self.scale = dim_head ** -0.5
        inner = heads * dim_head
        self.to_qkv = nn.Linear(dim, inner * 3, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout))
        self.residual = bool(residual)
        if residual:
            k = int(residual_conv_kernel)
            self.res_conv = nn.Conv2d(heads, heads, (k, 1), padding=(k // 2, 0), groups=heads,
                                      bias=False)

    def forward(self, x: Tensor, *, cls_index: int | None = None) -> tuple[Tensor, Tensor | None]:
        """x (B, n, dim) -> (out (B, n, dim), attention row (B, n) of token ``cls_index`` or None).

        The row is the head-averaged approximated attention of token ``cls_index`` (an index into
        the unpadded sequence) to every token of the unpadded sequence.
        """
        B, n, _ = x.shape
        m, h, d = self.num_landmarks, self.heads, self.dim_head
        pad = (-n) % m
        if pad:
            x = F.pad(x, (0, 0, pad, 0))
        n_p = n + pad
        q, k, v = (t.reshape(B, n_p, h, d).transpose(1, 2) for t in self.to_qkv(x).chunk(3, dim=-1))
        q = q * self.scale
        group = n_p // m  # = ceil(n / m)
        q_l = q.reshape(B, h, m, group, d).sum(dim=3) / group
        k_l = k.reshape(B, h, m, group, d).sum(dim=3) / group
        attn2_inv = moore_penrose_pinv(F.softmax(q_l @ k_l.transpose(-1, -2), dim=-1),
                                       self.pinv_iterations)
        outs, rows = [], []
        for i in range(h):  # one head at a time bounds the (n x m) scratch matrices
            attn1 = F.softmax(q[:, i] @ k_l[:, i].transpose(-1, -2), dim=-1)   # (B, n_p, m)
            attn3 = F.softmax(q_l[:, i] @ k[:, i].transpose(-1, -2), dim=-1)   # (B, m, n_p)
            outs.append(attn1 @ (attn2_inv[:, i] @ (attn3 @ v[:, i])))
            if cls_index is not None:
                rows.append((attn1[:, pad + cls_index, None] @ attn2_inv[:, i]) @ attn3)
        out = torch.stack(outs, dim=1)
        if self.residual:
            out = out + self.res_conv(v)
        out = self.to_out(out.transpose(1, 2).reshape(B, n_p, h * d))[:, -n:]
        row = torch.cat(rows, dim=1).mean(dim=1)[:, pad:] if cls_index is not None else None
        return out, row


class TransLayer(nn.Module):
    """Pre-norm residual Nystrom attention block: x + attn(norm(x)). Keys ``norm``, ``{attn_name}``."""

    def __init__(self, dim: int, *, heads: int, num_landmarks: int, residual_conv_kernel: int = 33,
                 dropout: float = 0.1, attn_name: str = "attn") -> None:
        super().__init__()
        self.attn_name = attn_name
        self.norm = nn.LayerNorm(dim)
        setattr(self, attn_name, NystromAttention(
            dim, dim_head=dim // heads, heads=heads, num_landmarks=num_landmarks, pinv_iterations=6,
            residual=True, residual_conv_kernel=residual_conv_kernel, dropout=dropout))

    def forward(self, x: Tensor, *, cls_index: int | None = None) -> tuple[Tensor, Tensor | None]:
        """x (B, n, dim) -> (x + attention (B, n, dim), class-token attention row (B, n) or None)."""
        out, row = getattr(self, self.attn_name)(self.norm(x), cls_index=cls_index)
        return x + out, row


class PPEG(nn.Module):
    """Pyramid position encoding: depthwise convs 7/5/3 on the S x S token grid, plus identity."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(dim, dim, 7, 1, 3, groups=dim)
        self.proj1 = nn.Conv2d(dim, dim, 5, 1, 2, groups=dim)
        self.proj2 = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: Tensor, side: int) -> Tensor:
        """x (B, 1 + side*side, dim) (class token first) -> same shape."""
        B, _, C = x.shape
        # (B, C, S, S) as a channels-last view: token 1 + r*S + c is grid cell (r, c)
        grid = x[:, 1:].reshape(B, side, side, C).permute(0, 3, 1, 2)
        grid = self.proj(grid) + grid + self.proj1(grid) + self.proj2(grid)
        return torch.cat([x[:, :1], grid.permute(0, 2, 3, 1).reshape(B, side * side, C)], dim=1)


class TransMIL(MILModel):
    """TransMIL; see the module docstring for the layouts, the attention map and instance scores.

    attention (1, N): last-layer class-token Nystrom attention probability, head mean.
    instance_scores (N, C): ``fc2(norm(token_i))`` of the final-layer instance tokens (logits).
    """

    instance_independent = False
    attention_kind = "probability"

    def __init__(self, *, n_classes: int, in_dim: int = 1024, embed_dim: int = 512,
                 num_heads: int = 8, num_landmarks: int | None = None, num_layers: int = 2,
                 residual_conv_kernel: int = 33, layout: str = "original", num_fc_layers: int = 1,
                 dropout: float = 0.1) -> None:
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        if layout == "original" and (num_layers != 2 or num_fc_layers != 1):
            raise ValueError("the original TransMIL layout has num_layers=2 and num_fc_layers=1")
        self.n_classes, self.in_dim, self.n_branches = int(n_classes), int(in_dim), 1
        self.layout, self.embed_dim = layout, int(embed_dim)
        landmarks = int(num_landmarks) if num_landmarks is not None else embed_dim // 2
        block = dict(heads=num_heads, num_landmarks=landmarks,
                     residual_conv_kernel=residual_conv_kernel, dropout=dropout)
        self.pos_layer = PPEG(embed_dim)
        self.cls_token = nn.Parameter(torch.randn(1, 1, embed_dim))
        self.norm = nn.LayerNorm(embed_dim)
        if layout == "original":
            self._fc1 = nn.Sequential(nn.Linear(in_dim, embed_dim), nn.ReLU())
            self.layer1 = TransLayer(embed_dim, **block)
            self.layer2 = TransLayer(embed_dim, **block)
            self._fc2 = nn.Linear(embed_dim, n_classes)
        else:
            self.patch_embed = patch_embed_mlp(in_dim, embed_dim, num_fc_layers, dropout)
            self.blocks = nn.ModuleList(TransLayer(embed_dim, attn_name="attention", **block)
                                        for _ in range(num_layers))
            self.classifier = nn.Linear(embed_dim, n_classes)

    # the two layouts differ only in names
    def _embed(self) -> nn.Module:
        return self._fc1 if self.layout == "original" else self.patch_embed

    def _layers(self) -> list[TransLayer]:
        return [self.layer1, self.layer2] if self.layout == "original" else list(self.blocks)

    def _head(self) -> nn.Linear:
        return self._fc2 if self.layout == "original" else self.classifier

    def encode(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """h (B, N, D) or (N, D) -> (final normed tokens (B, 1 + N, E), attention (B, N)).

        Token 0 is the class token, tokens 1..N the real instances in input order (padding
        copies dropped); attention = the last layer's class-token row, head mean, instances only.
        """
        if h.dim() == 2:
            h = h.unsqueeze(0)
        n = h.shape[1]
        if n == 0:
            raise ValueError("TransMIL needs a non-empty bag")
        x = self._embed()(h)
        side = math.isqrt(n - 1) + 1
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x, x[:, :side * side - n]], dim=1)
        layers = self._layers()
        row = None
        for i, layer in enumerate(layers):
            x, row = layer(x, cls_index=0 if i == len(layers) - 1 else None)
            if i == 0:
                x = self.pos_layer(x, side)
        return self.norm(x)[:, :1 + n], row[:, 1:1 + n]

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        tokens, A = self.encode(self._as_bag(h))
        logits = self._head()(tokens[:, 0])
        return logits, F.softmax(logits, dim=1), A

    def attention_scores(self, h: Tensor) -> Tensor:
        """Class-token attention probability (1, N) of the whole bag ``h`` (N, D)."""
        return self.encode(self._as_bag(h))[1]

    def instance_scores(self, h: Tensor) -> Tensor:
        """(N, C) logits ``fc2(norm(token_i))`` of the final-layer instance tokens (whole bag)."""
        return self._head()(self.encode(self._as_bag(h))[0][0, 1:])


# --------------------------------------------------------------------------- layout inference

def _block_indices(sd: Mapping[str, Tensor]) -> list[int]:
    pat = re.compile(r"blocks\.(\d+)\.norm\.weight$")
    return sorted(int(m.group(1)) for k in sd if (m := pat.match(k)))


def infer_transmil_config(sd: Mapping[str, Tensor]) -> dict[str, Any] | None:
    """Builder kwargs of a TransMIL state dict (original or MIL-Lab layout), or None.

    Reads D and E from the first Linear, C from the head, the heads and the residual kernel from
    ``res_conv`` (h, 1, K, 1), the number of blocks (MIL-Lab). ``num_landmarks`` is not stored in
    the weights; both reference implementations use E // 2 (256), which the builder defaults to.
    """
    if "_fc1.0.weight" in sd and "layer1.attn.res_conv.weight" in sd and "_fc2.weight" in sd:
        layout, first, head, res = "original", "_fc1.0.weight", "_fc2.weight", "layer1.attn.res_conv.weight"
        extra: dict[str, Any] = {}
    elif "patch_embed.0.weight" in sd and "blocks.0.attention.res_conv.weight" in sd \
            and "classifier.weight" in sd:
        layout, first, head, res = "mil_lab", "patch_embed.0.weight", "classifier.weight", \
            "blocks.0.attention.res_conv.weight"
        blocks = _block_indices(sd)
        fcs = sorted(int(m.group(1)) for k in sd if (m := re.match(r"patch_embed\.(\d+)\.weight$", k)))
        if not blocks or blocks != list(range(len(blocks))) or fcs != list(range(0, 3 * len(fcs), 3)):
            return None
        extra = {"num_layers": len(blocks), "num_fc_layers": len(fcs)}
    else:
        return None
    if "cls_token" not in sd or sd[res].dim() != 4:
        return None
    E, D = (int(s) for s in sd[first].shape)
    heads, kernel = int(sd[res].shape[0]), int(sd[res].shape[2])
    if E % heads:
        return None
    return {"n_classes": int(sd[head].shape[0]), "in_dim": D, "embed_dim": E, "num_heads": heads,
            "residual_conv_kernel": kernel, "layout": layout, **extra}


@register_mil_model("transmil", infer=infer_transmil_config,
                    key_hint="_fc1.0.weight, cls_token, layer1.attn.to_qkv.weight, _fc2.weight",
                    variants=({"layout": "original"}, {"layout": "mil_lab"}))
def transmil(*, n_classes: int, in_dim: int = 1024, **kw: Any) -> TransMIL:
    """TransMIL; kw: embed_dim, num_heads, num_landmarks, num_layers, residual_conv_kernel,
    layout ('original'|'mil_lab'), num_fc_layers, dropout."""
    return TransMIL(n_classes=n_classes, in_dim=in_dim, **kw)

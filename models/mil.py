"""The MIL interface every architecture implements, the model registry, and bag inference.

Every multiple-instance-learning (MIL) model in this package is a :class:`MILModel`:

* ``forward(h)`` takes one bag of patch features ``h`` (N, D) float32 and returns
  ``(logits (1, C), probs (1, C), attention (K, N))`` where ``attention`` is the attention of
  every instance for each of the K attention branches (K = 1 for CLAM-SB / single-head ABMIL /
  TransMIL, K = n_classes for CLAM-MB and DSMIL): the **raw, pre-softmax** logit, except for
  TransMIL whose class-token attention is a probability (see ``attention_kind``).
* ``attention_scores(h)`` returns only that (K, N) attention. For ``instance_independent``
  models (CLAM, ABMIL) each instance is scored on its own, so slicing a bag is exact; bag-level
  models (TransMIL, DSMIL: ``instance_independent = False``) are always scored on the whole bag.
  ``attention_kind`` says what the numbers are: ``"logit"`` (raw pre-softmax, CLAM's
  convention, also DSMIL) or ``"probability"`` (TransMIL's class-token attention).
* ``instance_scores(h)`` returns per-instance class evidence (N, C) logits ("class score maps",
  Marugoto-style high-resolution heatmaps): the bag head applied to each instance embedding;
  each architecture's docstring says exactly what.
* ``heatmap_row(attention, cls)`` picks the (N,) row a heatmap shows for class ``cls``.

Architectures register themselves with :func:`register_mil_model` (timm style); build one with
:func:`create_mil_model`; :func:`list_mil_models` names them. The built-in ones (``abmil``, ``clam_sb``, ``clam_mb``, ``dsmil``,
``transmil``) are imported on first use of the registry, whatever :mod:`models` imports.
"""
from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from wsi_core.errors import CheckpointError, FeatureFileError

__all__ = [
    "BagPrediction",
    "MILModel",
    "MILSpec",
    "MIL_MODELS",
    "register_mil_model",
    "create_mil_model",
    "get_mil_spec",
    "predict_bag",
    "attention_for_class",
    "instance_scores_for",
    "list_mil_models",
]


@dataclass
class BagPrediction:
    """Slide-level output of one MIL model on one bag.

    logits: (C,) float32; probs: (C,) float32 softmax of the logits (per-class sigmoid for
    multi-label models, ``MILModel.multi_label``: DSMIL);
    attention: (K, N) float32 attention (K = 1, or n_classes for clam_mb / dsmil); raw
    pre-softmax logits unless the model's ``attention_kind`` is ``"probability"`` (TransMIL).
    """

    logits: np.ndarray
    probs: np.ndarray
    attention: np.ndarray

    @property
    def pred(self) -> int:
        """Index of the most probable class (CLAM's ``Y_hat``)."""
        return int(np.argmax(self.logits))


class MILModel(nn.Module):
    """Base class of every MIL architecture (see the module docstring for the contract).

    Subclasses set ``n_classes`` (C), ``in_dim`` (D, the patch-feature width) and
    ``n_branches`` (K) and implement :meth:`attention_scores`, :meth:`instance_scores` and
    :meth:`forward`. Class flags: ``instance_independent`` (True: an instance's attention and
    scores do not depend on the other instances, so bags may be scored in slices),
    ``attention_kind`` (``"logit"`` | ``"probability"``), ``multi_label`` (probs are per-class
    sigmoids instead of a softmax).
    """

    n_classes: int
    in_dim: int
    n_branches: int = 1
    instance_independent: ClassVar[bool] = True
    attention_kind: ClassVar[str] = "logit"
    multi_label: bool = False  # per instance: DSMIL sets it from its checkpoint layout

    def attention_scores(self, h: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Attention (K, N) float32 of a bag ``h`` (N, D) (any slice of one when
        ``instance_independent``)."""
        raise NotImplementedError

    def instance_scores(self, h: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Per-instance class evidence (N, C) float32 logits of a bag ``h`` (N, D)."""
        raise NotImplementedError

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:  # pragma: no cover
        """``h`` (N, D) -> (logits (1, C), probs (1, C), raw attention (K, N))."""
        raise NotImplementedError

    def heatmap_row(self, attention: Tensor, cls: int) -> Tensor:
        """The (N,) attention a heatmap of class ``cls`` shows, from raw attention (K, N).

        Default: the single branch (K = 1) or, for several heads not tied to classes, their
        mean. Class-specific architectures (CLAM-MB) override this to return row ``cls``.
        """
        if attention.shape[0] == 1:
            return attention[0]
        return attention.mean(dim=0)

    @staticmethod
    def _as_bag(h: Tensor) -> Tensor:
        """Accept (N, D) or (1, N, D); return (N, D)."""
        if h.dim() == 3 and h.shape[0] == 1:
            h = h[0]
        if h.dim() != 2:
            raise ValueError(f"expected a bag of shape (N, D), got {tuple(h.shape)}")
        return h


@dataclass(frozen=True)
class MILSpec:
    """A registry entry.

    builder: ``builder(*, n_classes, in_dim, **kw) -> MILModel``.
    infer: ``infer(state_dict) -> dict | None``: the builder keyword arguments (always with
    ``n_classes`` and ``in_dim``) read from the tensor shapes of a state dict in this
    architecture's layout, or None when the keys are not this layout.
    key_hint: a few characteristic state-dict keys, quoted in error messages.
    variants: builder keyword sets whose state-dict key names together cover the layouts this
    entry reads (e.g. gated / ungated), used to find the closest model_type of an unknown file.
    """

    name: str
    builder: Callable[..., MILModel]
    infer: Callable[[Mapping[str, Tensor]], dict[str, Any] | None]
    key_hint: str
    variants: tuple[dict[str, Any], ...] = ({},)


MIL_MODELS: dict[str, MILSpec] = {}

#: Modules of the built-in architectures, imported (and so registered) on first registry use.
BUILTIN_MODULES = ("clam", "abmil", "transmil", "dsmil")


def _ensure_builtins() -> None:
    """Import the built-in architecture modules once so that the registry is complete."""
    for mod in BUILTIN_MODULES:
        importlib.import_module(f"{__package__}.{mod}")


def register_mil_model(
    name: str, *, infer: Callable[[Mapping[str, Tensor]], dict[str, Any] | None], key_hint: str,
    variants: tuple[dict[str, Any], ...] = ({},),
) -> Callable[[Callable[..., MILModel]], Callable[..., MILModel]]:
    """Decorator: register ``builder`` under ``name`` with its state-dict layout reader."""

    def deco(builder: Callable[..., MILModel]) -> Callable[..., MILModel]:
        MIL_MODELS[name] = MILSpec(name=name, builder=builder, infer=infer, key_hint=key_hint,
                                   variants=tuple(variants))
        return builder

    return deco


def list_mil_models() -> list[str]:
    """Sorted names of every registered architecture, built-ins included
    (``['abmil', 'clam_mb', 'clam_sb', 'dsmil', 'transmil']``)."""
    _ensure_builtins()
    return sorted(MIL_MODELS)


def get_mil_spec(name: str) -> MILSpec:
    """Registry entry of ``name``.

    Raises:
        CheckpointError: unknown name; the message lists the valid names and the closest one.
    """
    _ensure_builtins()
    try:
        return MIL_MODELS[name]
    except KeyError:
        valid = sorted(MIL_MODELS)
        close = difflib.get_close_matches(str(name), valid, n=1, cutoff=0.3)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise CheckpointError(
            f"unknown model_arguments.model_type '{name}'; valid names: {', '.join(valid)}{hint}"
        ) from None


def create_mil_model(name: str, *, n_classes: int, in_dim: int, **kw: Any) -> MILModel:
    """Build the registered MIL architecture ``name`` (randomly initialised, eval mode).

    ``n_classes``: C; ``in_dim``: D, the patch-feature width; other keyword arguments go to the
    architecture's builder (e.g. ``model_size``, ``gate``, ``dropout`` for CLAM).

    Raises:
        CheckpointError: unknown ``name`` (lists the valid names and the closest one).
    """
    model = get_mil_spec(name).builder(n_classes=n_classes, in_dim=in_dim, **kw)
    return model.eval()


# --------------------------------------------------------------------------- inference

def _features_tensor(model: MILModel, features: np.ndarray | Tensor, device: str | torch.device) -> Tensor:
    """(N, D) float32 tensor on ``device``; FeatureFileError for a wrong shape or width."""
    t = torch.as_tensor(features)
    if t.dim() == 3 and t.shape[0] == 1:
        t = t[0]
    if t.dim() != 2 or t.shape[0] == 0:
        raise FeatureFileError(
            f"features must be a non-empty (N, D) array, got shape {tuple(t.shape)}; "
            "check the features file or the patch grid"
        )
    if t.shape[1] != model.in_dim:
        raise FeatureFileError(
            f"features are {t.shape[1]}-d but the model expects {model.in_dim}-d; "
            "use features from the encoder the checkpoint was trained on"
        )
    return t.to(device=device, dtype=torch.float32)


def predict_bag(
    model: MILModel, features: np.ndarray | Tensor, *, device: str | torch.device = "cpu"
) -> BagPrediction:
    """Run ``model`` on one bag (N, D) in eval mode, float32, ``torch.inference_mode``.

    Returns a :class:`BagPrediction` (logits/probs (C,), raw attention (K, N), float32 numpy).

    Raises:
        FeatureFileError: empty bag, or a feature width other than ``model.in_dim``.
    """
    model.eval()
    model.to(device)
    with torch.inference_mode():
        h = _features_tensor(model, features, device)
        logits, probs, attention = model(h)
    return BagPrediction(
        logits=logits[0].float().cpu().numpy(),
        probs=probs[0].float().cpu().numpy(),
        attention=attention.float().cpu().numpy(),
    )


def attention_for_class(
    model: MILModel,
    features: np.ndarray | Tensor,
    *,
    cls: int,
    device: str | torch.device = "cpu",
    batch_size: int = 4096,
) -> np.ndarray:
    """Attention (N,) float32 of the branch a heatmap of class ``cls`` shows.

    That is row ``cls`` for clam_mb / dsmil and the single branch otherwise (see
    :meth:`MILModel.heatmap_row`); raw logits, or probabilities for ``attention_kind ==
    "probability"`` (TransMIL). ``instance_independent`` models are scored in slices of
    ``batch_size`` instances (exact); bag-level ones (TransMIL, DSMIL) on the whole bag at once,
    because an instance's attention depends on the others.

    Raises:
        FeatureFileError: empty bag, or a feature width other than ``model.in_dim``.
        ValueError: ``cls`` outside 0..C-1 or ``batch_size`` < 1.
    """
    _check_cls_and_batch(model, cls, batch_size)
    return _batched(model, features, device, batch_size,
                    lambda chunk: model.heatmap_row(model.attention_scores(chunk), cls))


def instance_scores_for(
    model: MILModel,
    features: np.ndarray | Tensor,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 4096,
) -> np.ndarray:
    """Per-instance class evidence (N, C) float32 logits (:meth:`MILModel.instance_scores`).

    A "class score map" per class: column c scores every patch for class c (Marugoto-style
    high-resolution heatmaps; a softmax over C per row gives per-patch class probabilities).
    Batched by ``batch_size`` for ``instance_independent`` models, the whole bag otherwise.

    Raises:
        FeatureFileError: empty bag, or a feature width other than ``model.in_dim``.
        ValueError: ``batch_size`` < 1.
    """
    _check_cls_and_batch(model, 0, batch_size)
    return _batched(model, features, device, batch_size, model.instance_scores)


def _check_cls_and_batch(model: MILModel, cls: int, batch_size: int) -> None:
    if not 0 <= cls < model.n_classes:
        raise ValueError(f"cls must be in 0..{model.n_classes - 1}, got {cls}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def _batched(model: MILModel, features: np.ndarray | Tensor, device: str | torch.device,
             batch_size: int, fn: Callable[[Tensor], Tensor]) -> np.ndarray:
    """Concatenate ``fn`` (per-instance results along dim 0) over slices of the bag, in eval
    mode under ``torch.inference_mode``; one slice holding the whole bag for bag-level models."""
    model.eval()
    model.to(device)
    h = _features_tensor(model, features, "cpu")
    step = batch_size if model.instance_independent else h.shape[0]
    parts = []
    with torch.inference_mode():
        for start in range(0, h.shape[0], step):
            parts.append(fn(h[start:start + step].to(device)).float().cpu())
    return torch.cat(parts, dim=0).numpy().astype(np.float32, copy=False)

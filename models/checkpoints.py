"""Load trained MIL checkpoints (CLAM, MIL-Lab, TransMIL, DSMIL layouts) and check them against
the features.

Accepted files (``torch.load(map_location='cpu', weights_only=True)``, zip or legacy pickle,
CUDA tensors mapped to the CPU):

* a bare state dict, or a dict holding one under ``model`` / ``state_dict`` / ``model_state_dict``;
* keys containing ``instance_loss_fn`` (a CLAM training buffer) are dropped;
* DataParallel prefixes are undone: a leading ``module.`` on every key, and CLAM's legacy
  ``attention_net.module.`` -> ``attention_net.``. No other ``.module.`` is touched: the ungated
  attention net has a sub-module literally named ``module``;
* a leading ``model.`` on every key (MIL-Lab's Hugging Face wrapper, a Lightning module's
  ``self.model`` as in the TransMIL authors' checkpoints) is stripped.

Layouts per model_type: ``clam_sb`` / ``clam_mb`` (CLAM), ``abmil`` (MIL-Lab), ``transmil`` (the
authors' ``_fc1``/``layer1``/``_fc2`` and MIL-Lab's ``patch_embed``/``blocks``/``classifier``),
``dsmil`` (the authors' aggregators ``i_classifier.fc.0``/``b_classifier.*``). The architecture's
sizes (feature width, hidden sizes, classes, gating, branches, heads) are read from the tensor
shapes, compared with the config, and the state dict is loaded strictly. A file whose keys fit no
layout is reported with the closest model_type: the registered layout sharing the largest
fraction of key names (Jaccard index over names), e.g. "closest: dsmil (4 of 8 expected keys;
missing b_classifier.fcc.bias, ...)".
"""
from __future__ import annotations

import functools
import os
import pickle
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from wsi_core.errors import CheckpointError

from .encoders import dim_label
from .mil import MIL_MODELS, MILModel, get_mil_spec, list_mil_models

__all__ = ["load_mil_checkpoint", "check_feature_dim", "read_state_dict", "normalise_state_dict",
           "closest_model_type"]

_WRAPPER_KEYS = ("model", "state_dict", "model_state_dict")
_LEGACY_PREFIX = ("attention_net.module.", "attention_net.")


def read_state_dict(path: str | os.PathLike[str], *, config_key: str = "model_arguments.ckpt_path") -> dict[str, Tensor]:
    """Read a state dict (name -> tensor, CPU) from a torch checkpoint file.

    Raises:
        CheckpointError: the file is missing (names ``config_key``), cannot be read by
            ``torch.load(weights_only=True)``, or holds no state dict.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}; set {config_key} to an existing file")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"cannot read checkpoint {p}: {reason[:200]}; it must be a torch state dict "
            "(torch.save(model.state_dict()))"
        ) from exc
    return _unwrap(obj, p)


def _unwrap(obj: Any, path: Path) -> dict[str, Tensor]:
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()
    ):
        found = list(obj)[:5] if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(
            f"checkpoint {path} holds no state dict of tensors (found {found}); save it with "
            "torch.save(model.state_dict())"
        )
    return dict(obj)


def _strip_common(sd: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    if sd and all(k.startswith(prefix) for k in sd):
        return {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def normalise_state_dict(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Undo wrapper prefixes and drop ``instance_loss_fn`` keys (see the module docstring)."""
    out = {k: v for k, v in sd.items() if "instance_loss_fn" not in k}
    out = _strip_common(out, "module.")
    out = _strip_common(out, "model.")
    old, new = _LEGACY_PREFIX
    return {(new + k[len(old):] if k.startswith(old) else k): v for k, v in out.items()}


@functools.lru_cache(maxsize=None)
def _expected_keys(name: str) -> tuple[frozenset[str], ...]:
    """State-dict key names of each registered layout variant of ``name`` (2 classes, 8-d input)."""
    spec = get_mil_spec(name)
    return tuple(frozenset(spec.builder(n_classes=2, in_dim=8, **kw).state_dict())
                 for kw in spec.variants)


def closest_model_type(sd: Mapping[str, Tensor]) -> tuple[str, int, int, list[str]] | None:
    """The registered layout closest to the key names of ``sd``.

    Returns (model_type, matching key count, expected key count, sorted missing key names) of
    the layout variant with the highest Jaccard index between its key names and those of ``sd``,
    or None when no registered layout shares a single key name.
    """
    found = set(sd)
    best: tuple[float, str, int, int, list[str]] | None = None
    for name in list_mil_models():
        for keys in _expected_keys(name):
            hit = len(found & keys)
            score = hit / len(found | keys)
            if hit and (best is None or score > best[0]):
                best = (score, name, hit, len(keys), sorted(keys - found))
    return None if best is None else best[1:]


def _layout_error(path: Path, model_type: str, sd: Mapping[str, Tensor]) -> CheckpointError:
    """A wrong-model_type error when another registered layout matches, else unknown layout
    with the closest model_type (key-name overlap) and the keys found."""
    others = [n for n in list_mil_models() if n != model_type and MIL_MODELS[n].infer(sd) is not None]
    if others:
        return CheckpointError(
            f"checkpoint {path.name} has a {others[0]} layout but model_arguments.model_type is "
            f"{model_type}; set model_type: {others[0]}"
        )
    keys = ", ".join(list(sd)[:4]) + (", ..." if len(sd) > 4 else "")
    near = closest_model_type(sd)
    if near is None:
        closest = "closest: none (no key name of any model_type)"
    else:
        name, hit, total, missing = near
        miss = f"; missing {', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}" if missing else ""
        closest = f"closest: {name} ({hit} of {total} expected keys{miss})"
    return CheckpointError(
        f"checkpoint {path} has an unknown layout for model_type {model_type} and matches no "
        f"model_type; {closest}; keys found: {keys}; expected keys like "
        f"{get_mil_spec(model_type).key_hint}"
    )


def _check_config(path: Path, inferred: Mapping[str, Any], requested: Mapping[str, Any]) -> None:
    """CheckpointError naming both values when the config disagrees with the checkpoint."""
    names = {"n_classes": "exp_arguments.n_classes", "model_size": "model_arguments.model_size",
             "in_dim": "model_arguments.embed_dim"}
    for key, cfg_key in names.items():
        want = requested.get(key)
        if want is None or key not in inferred or inferred[key] == want:
            continue
        short = cfg_key.rsplit(".", 1)[1]
        raise CheckpointError(
            f"checkpoint {path.name} has {short}={inferred[key]} but the config sets "
            f"{cfg_key}={want}; set it to {inferred[key]} or use the matching checkpoint"
        )


def load_mil_checkpoint(
    path: str | os.PathLike[str],
    *,
    model_type: str,
    n_classes: int | None = None,
    model_size: str | None = None,
    drop_out: float = 0.0,
    embed_dim: int | None = None,
    device: str | torch.device = "cpu",
    model_kwargs: Mapping[str, Any] | None = None,
) -> MILModel:
    """Build the ``model_type`` architecture with the sizes read from the checkpoint and load it.

    ``n_classes``, ``model_size`` ('small'|'big', CLAM only) and ``embed_dim`` (the feature
    width D) are optional expectations from the config; ``drop_out`` only shapes CLAM's ungated
    attention net when the checkpoint does not tell. ``model_kwargs``: builder options the
    weights cannot tell, e.g. ``{"combine": "mean"}`` (dsmil: average the bag and max-instance
    probabilities) or ``{"num_landmarks": 256}`` (transmil). Returns the model in eval mode on
    ``device``.

    Raises:
        CheckpointError: unknown ``model_type`` (lists the valid names and the closest one);
            missing or unreadable file; keys matching no known layout (names the file, the
            closest model_type and a few keys); a layout of another model_type (names the one
            to set); config values disagreeing with the checkpoint (both values named); a
            ``model_kwargs`` option the architecture rejects; a strict load failing.
    """
    spec = get_mil_spec(model_type)
    p = Path(path)
    sd = normalise_state_dict(read_state_dict(p))
    inferred = spec.infer(sd)
    if inferred is None:
        raise _layout_error(p, model_type, sd)
    _check_config(p, inferred, {"n_classes": n_classes, "model_size": model_size, "in_dim": embed_dim})
    kwargs = {k: v for k, v in inferred.items() if v is not None}
    kwargs.update(model_kwargs or {})
    try:
        model = spec.builder(dropout=float(drop_out), **kwargs)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f"cannot build {model_type} for checkpoint {p.name} with options "
            f"{dict(model_kwargs or {})}: {str(exc).splitlines()[0]}"
        ) from None
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise CheckpointError(f"checkpoint {p} does not load into {model_type}: {detail}") from exc
    return model.eval().to(device)


def check_feature_dim(model: MILModel, dim: int, *, encoder_name: str,
                      ckpt_path: str | os.PathLike[str]) -> None:
    """Raise unless the features (``dim`` wide, from ``encoder_name``) fit the model's input.

    The hint in parentheses names the registered encoders of the model's width
    (:func:`models.encoders.dim_label`).

    Raises:
        CheckpointError: e.g. "checkpoint s_0.pt expects 1536-d features (UNI2-h); encoder
            resnet50_trunc gives 1024-d features; set encoder_arguments.model_name to a
            matching encoder".
    """
    want = int(model.in_dim)
    if int(dim) == want:
        return
    typical = dim_label(want)  # the published names of the registered encoders of that width
    hint = f" ({typical})" if typical else ""
    raise CheckpointError(
        f"checkpoint {Path(ckpt_path).name} expects {want}-d features{hint}; encoder "
        f"{encoder_name} gives {int(dim)}-d features; set encoder_arguments.model_name to a "
        "matching encoder"
    )

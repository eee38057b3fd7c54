"""Encoder weights: where a local file is, reading it, loading it strictly, hub errors.

Weight source of an entry (:class:`~models.encoders.EncoderInfo`), first found wins:

1. the ``weights_path`` argument (config ``encoder_arguments.weights_path``);
2. the entry's environment variables (``{NAME}_CKPT_PATH``, then the names CLAM users already
   set: ``UNI_CKPT_PATH``, ``UNI2_CKPT_PATH``, ``CONCH_CKPT_PATH``);
3. its hub id (needs network access or a Hugging Face cache); when that fails a
   :class:`CheckpointError` names the hub id, ``encoder_arguments.weights_path`` and the variables.

A local file is ``.safetensors`` or a torch ``.pth/.pt/.bin`` state dict (read with
``weights_only=True``), optionally under a ``state_dict`` / ``model`` / ``model_state_dict`` key;
a folder (a Hugging Face snapshot) resolves to the first of ``model.safetensors``,
``pytorch_model.bin``, ``pytorch_model.pth``, ``model.pth`` inside it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from wsi_core.errors import CheckpointError

if TYPE_CHECKING:
    from torch import Tensor, nn

    from .registry import EncoderInfo

__all__ = ["resolve_weights_path", "read_weights", "strip_prefixes", "load_strict", "hub_error",
           "local_weights", "entry_hub_error"]

_FOLDER_FILES = ("model.safetensors", "pytorch_model.bin", "pytorch_model.pth", "model.pth")


def resolve_weights_path(weights_path: str | os.PathLike[str] | None, env_vars: Sequence[str]
                         ) -> tuple[Path, str] | None:
    """(local file, how it was named) from ``weights_path``, else the first set variable of
    ``env_vars``; None when neither is given (the caller goes to the hub).

    ``how`` is 'encoder_arguments.weights_path' or '$VAR'. The file is not checked here.
    """
    if weights_path:
        local, how = Path(weights_path), "encoder_arguments.weights_path"
    else:
        var = next((v for v in env_vars if os.environ.get(v)), None)
        if var is None:
            return None
        local, how = Path(os.environ[var]), f"${var}"
    if local.is_dir():
        local = next((local / f for f in _FOLDER_FILES if (local / f).is_file()), local)
    return local, how


def read_weights(path: Path, *, env: str) -> dict[str, Tensor]:
    """State dict (name -> CPU tensor) from .safetensors or a torch file, unwrapped.

    Raises:
        CheckpointError: missing file (names ``encoder_arguments.weights_path`` and ``$env``),
            unsupported suffix, unreadable file, no state dict inside.
    """
    if not path.is_file():
        raise CheckpointError(
            f"encoder weights not found: {path}; set encoder_arguments.weights_path or "
            f"${env} to an existing file"
        )
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            sd = load_file(str(path))
        elif path.suffix in (".pth", ".pt", ".bin"):
            sd = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise CheckpointError(
                f"encoder weights {path}: unsupported file type '{path.suffix}'; "
                "use .safetensors, .pth, .pt or .bin"
            )
    except CheckpointError:
        raise
    except Exception as exc:  # safetensors/torch raise many types for a corrupt file
        raise CheckpointError(f"cannot read encoder weights {path}: {type(exc).__name__}: "
                              f"{str(exc)[:200]}") from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise CheckpointError(f"encoder weights {path} hold no state dict")
    return sd


def strip_prefixes(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Drop a 'module.' (DataParallel) and/or 'model.' (wrapper) prefix shared by every key."""
    for prefix in ("module.", "model."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def load_strict(model: nn.Module, sd: dict[str, Tensor], *, source: str, label: str,
                assign: bool = False) -> None:
    """Load ``sd`` into ``model`` requiring exactly its keys and tensor shapes.

    Floating tensors are cast to the model's dtype (half-precision files load into float32).
    ``assign=True`` adopts the tensors (for a model built on the meta device).

    Raises:
        CheckpointError: names ``source`` and ``label``, counts and the first 3 missing /
            unexpected keys, or the first tensor whose shape differs.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        parts = [f"{len(ks)} {what} (e.g. {', '.join(ks[:3])})"
                 for what, ks in (("missing keys", missing), ("unexpected keys", unexpected)) if ks]
        raise CheckpointError(f"encoder weights {source} do not fit {label}: {'; '.join(parts)}; "
                              f"give the {label} state dict published with the model")
    bad = next((k for k in own if tuple(sd[k].shape) != tuple(own[k].shape)), None)
    if bad is not None:
        raise CheckpointError(f"encoder weights {source} do not fit {label}: {bad} has shape "
                              f"{tuple(sd[bad].shape)}, the model needs {tuple(own[bad].shape)}")
    sd = {k: (v.to(own[k].dtype) if v.is_floating_point() else v) for k, v in sd.items()}
    model.load_state_dict(sd, strict=True, assign=assign)


def hub_error(exc: BaseException, *, what: str, env_vars: Sequence[str], label: str) -> CheckpointError:
    """One-line error for hub weights that could not be fetched (gated, offline, no cache):
    names ``what`` (the hub id), ``encoder_arguments.weights_path`` and the variables."""
    env = " or ".join(f"${v}" for v in env_vars)
    return CheckpointError(
        f"cannot fetch encoder weights {what} from the Hugging Face hub ({type(exc).__name__}); "
        f"set encoder_arguments.weights_path or {env} to a local {label} .safetensors/.bin/.pth file"
    )


def local_weights(info: EncoderInfo, weights_path: str | os.PathLike[str] | None
                  ) -> tuple[dict[str, Tensor], str] | None:
    """(state dict without wrapper prefixes, source path) of entry ``info`` from the argument or
    its environment variables, or None (go to the hub).

    Raises:
        CheckpointError: the named file is missing or unreadable (see :func:`read_weights`).
    """
    found = resolve_weights_path(weights_path, info.env_vars)
    if found is None:
        return None
    path, how = found
    env = how[1:] if how.startswith("$") else info.env_vars[0]
    return strip_prefixes(read_weights(path, env=env)), str(path)


def entry_hub_error(info: EncoderInfo, exc: BaseException, *, what: str | None = None) -> CheckpointError:
    """:func:`hub_error` for entry ``info``: names its hub id (or ``what``), its variables, its label."""
    return hub_error(exc, what=what or info.hub_id, env_vars=info.env_vars, label=info.label or info.name)

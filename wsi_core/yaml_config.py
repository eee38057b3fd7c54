"""What every YAML config of the project shares (the heatmap config, ``heatmaps/config.py``; the
trainer's, ``models/train/config.py``): reading the file, the valid keys at a place in a pydantic
schema, the closest spelling of a key, and ``--set section.key=value`` overrides.

Each config keeps its own schema, synonyms and checks; this module holds only the mechanics, so
both report bad input with the same one-line messages.
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Iterable

import yaml
from pydantic import BaseModel

from .errors import ConfigError

__all__ = ["read_yaml_mapping", "coerce_value", "valid_keys", "closest", "apply_dotted"]


def read_yaml_mapping(path: str | os.PathLike[str], *, missing_hint: str = "") -> dict:
    """The YAML file at ``path`` as a dict (an empty file gives ``{}``).

    Raises:
        ConfigError: the file does not exist ("config file not found: PATH; ``missing_hint``"),
        or is not valid YAML (its first error line).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}" + (f"; {missing_hint}" if missing_hint else ""))
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    return data or {}


def coerce_value(text: str) -> Any:
    """A command-line value as YAML would read it (numbers, booleans, null, lists); else the text."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def valid_keys(schema: type[BaseModel], loc: tuple) -> list[str]:
    """The keys valid at ``loc`` (a pydantic error location, its last item the key) in ``schema``:
    the fields of the model reached by ``loc[:-1]`` (list indices are skipped; an optional or
    union field is followed into its model). ``[]`` where ``loc`` leaves the schema."""
    model: Any = schema
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        model = next((a for a in (ann, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if model is None:
            return []
    return list(getattr(model, "model_fields", {}))


def closest(name: str, candidates: Iterable[str], *, cutoff: float = 0.5) -> str | None:
    """The candidate spelt most like ``name`` (``difflib`` ratio ≥ ``cutoff``), or None."""
    match = difflib.get_close_matches(str(name), list(candidates), n=1, cutoff=cutoff)
    return match[0] if match else None


def apply_dotted(data: dict, overrides: Iterable[str] | dict[str, Any], *, source: str, example: str) -> dict:
    """Set ``section.key`` values in ``data`` (a config as plain data; changed in place and returned).

    ``overrides``: ``['section.key=value', ...]`` (values read by :func:`coerce_value`) or
    ``{'section.key': value}``. Validation of the keys and values is the caller's (re-parse the
    result): here only the form and the section are checked.

    Raises:
        ConfigError: an item not of the form ``section.key=value`` (``example`` shows one), or an
        unknown section (with the closest one).
    """
    if isinstance(overrides, dict):
        items = [(str(k), v, str(k)) for k, v in overrides.items()]
    else:
        items = []
        for item in overrides:
            key, sep, value = item.partition("=")
            if not sep:
                raise ConfigError(f"{source} {item!r}: expected section.key=value, e.g. {example}")
            items.append((key.strip(), coerce_value(value), item))
    for key, value, given in items:
        parts = key.split(".")
        if len(parts) != 2 or not all(parts):
            raise ConfigError(f"{source} {given!r}: expected section.key=value, e.g. {example}")
        section, name = parts
        if section not in data:
            near = closest(section, data, cutoff=0.6)
            hint = f"did you mean '{near}'?" if near else f"sections: {', '.join(data)}"
            raise ConfigError(f"{source} {given!r}: unknown section '{section}'; {hint}")
        data[section][name] = value
    return data

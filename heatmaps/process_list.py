"""Process lists: which slides to run, with what labels, ROIs and segmentation parameters.

A process list is CLAM's CSV: ``slide_id`` (with or without the extension) and optionally
``label``, ``process`` (1 = run), ``status``, ``x1,y1,x2,y2`` (ROI, level-0 px), the
``data_dir_key`` column (cohort -> data_dir), ``features_path`` / ``coords_path`` (pre-extracted
features) and per-slide overrides of the segmentation parameters. Missing parameter columns are
filled from the preset (a one-row CSV), else from CLAM's defaults, as CLAM's ``initialize_df`` does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wsi_core.errors import ConfigError, RoiError, SlideOpenError
from wsi_core.io import atomic_path
from wsi_core.tissue import SegmentationParams

from .config import DataArguments

PACKAGE_DIR = Path(__file__).resolve().parent

# CLAM create_heatmaps.py defaults (def_seg_params, def_filter_params, def_vis_params, def_patch_params)
DEFAULT_PARAMS: dict[str, Any] = {
    "seg_level": -1, "sthresh": 15, "mthresh": 11, "close": 2, "use_otsu": False,
    "keep_ids": "none", "exclude_ids": "none",
    "a_t": 50.0, "a_h": 8.0, "max_n_holes": 10,
    "vis_level": -1, "line_thickness": 250,
    "use_padding": True, "contour_fn": "four_pt",
}
ROI_COLUMNS = ("x1", "y1", "x2", "y2")
# File suffixes of the formats OpenSlide reads: a slide_id given with one of these is a file name.
SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif", ".dcm")


def slide_stem(raw_id: str, slide_ext: str) -> str:
    """``slide_id`` without its file extension (``slide_ext``, or any OpenSlide format's suffix)."""
    if slide_ext and raw_id.endswith(slide_ext):
        return raw_id[: -len(slide_ext)]
    suffix = Path(raw_id).suffix.lower()
    return raw_id[: -len(suffix)] if suffix in SLIDE_SUFFIXES else raw_id


def resolve_input_file(name: str, *, kind: str, search_dirs: list[Path]) -> Path:
    """A user-given path: absolute, relative to the working directory, or a bare name found in
    one of ``search_dirs`` (CLAM looks process lists up in ``heatmaps/process_lists/``).

    Raises:
        ConfigError: nothing matches; the message lists where it looked.
    """
    path = Path(name).expanduser()
    if path.is_file():
        return path
    if not path.is_absolute():
        for d in search_dirs:
            for cand in (d / path, d / path.name):
                if cand.is_file():
                    return cand
    looked = ", ".join(str(d) for d in [Path.cwd(), *search_dirs])
    raise ConfigError(f"{kind} '{name}' not found (looked in {looked}); give an absolute path or one relative to the working directory")


def _bool(v: Any) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("1", "true", "yes", "y", "t")
    return bool(v)


def _ids(v: Any) -> tuple[int, ...]:
    text = "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v).strip()
    if text in ("", "none", "None", "nan"):
        return ()
    try:
        return tuple(int(float(t)) for t in text.replace(";", ",").split(",") if t.strip())
    except ValueError:
        raise ConfigError(f"keep_ids/exclude_ids '{text}' must be comma-separated contour ids or 'none'") from None


def load_preset(preset: str | None) -> dict[str, Any]:
    """CLAM's defaults overridden by the preset's single row (columns it lacks keep the default).

    Raises:
        ConfigError: the preset file is missing or empty.
    """
    params = dict(DEFAULT_PARAMS)
    if preset is None:
        return params
    path = resolve_input_file(preset, kind="data_arguments.preset",
                              search_dirs=[PACKAGE_DIR / "configs" / "presets", Path("presets"), Path("heatmaps/configs/presets")])
    df = pd.read_csv(path)
    if df.empty:
        raise ConfigError(f"preset {path} has no row; a preset is a one-row CSV of segmentation parameters")
    for key in params:
        if key in df.columns and not pd.isna(df.loc[0, key]):
            params[key] = df.loc[0, key].item() if hasattr(df.loc[0, key], "item") else df.loc[0, key]
    return params


def shipped_presets() -> dict[str, Path]:
    """The presets shipped in ``heatmaps/configs/presets/``: name (file stem) -> CSV path."""
    return {p.stem: p for p in sorted((PACKAGE_DIR / "configs" / "presets").glob("*.csv"))}


@lru_cache(maxsize=1)
def preset_a_t_hints() -> tuple[tuple[str, float], ...]:
    """``("preset NAME", a_t)`` of every shipped preset, smallest ``a_t`` first: what a
    "no tissue found" message offers (:class:`wsi_core.tissue.SegmentationParams` ``a_t_hints``)."""
    hints = [(f"preset {name}", float(load_preset(str(path))["a_t"])) for name, path in shipped_presets().items()]
    return tuple(sorted(hints, key=lambda h: h[1]))


def initialize_process_list(df: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
    """Fill CLAM's bookkeeping and parameter columns (``process``, ``status``, segmentation,
    vis and patch parameters): missing columns are appended, empty cells take ``params``."""
    df = df.copy()
    if "slide_id" not in df.columns:
        raise ConfigError(f"process list has no 'slide_id' column (columns: {', '.join(map(str, df.columns))})")
    df["slide_id"] = df["slide_id"].astype(str)
    defaults = {"process": 1, "status": "tbp", **params}
    for key, value in defaults.items():
        if key in df.columns:
            df[key] = df[key].astype(object).where(df[key].notna(), value)
        else:
            df[key] = value
    return df


def list_slides(data_args: DataArguments) -> pd.DataFrame:
    """A process list of every slide in ``data_dir`` (a directory, a list, or a dict of cohorts).

    Slides are files ending in ``slide_ext``, or DICOM folders (holding ``.dcm`` files) when
    ``slide_ext`` is ``.dcm``. With a dict, the ``data_dir_key`` column names each slide's cohort.
    """
    dd = data_args.data_dir
    if dd is None:
        raise ConfigError("data_arguments: give process_list or data_dir (a slide directory, a list, or a dict of cohorts)")
    cohorts = dd.items() if isinstance(dd, dict) else [(None, d) for d in ([dd] if isinstance(dd, str) else dd)]
    rows = []
    ext = data_args.slide_ext
    for key, directory in cohorts:
        d = Path(directory)
        if not d.is_dir():
            raise ConfigError(f"data_arguments.data_dir '{directory}' is not a directory")
        for entry in sorted(d.iterdir()):
            is_slide = (entry.is_file() and entry.name.endswith(ext)) or \
                (ext == ".dcm" and entry.is_dir() and any(entry.glob("*.dcm")))
            if is_slide:
                sid = entry.name[: -len(ext)] if ext and entry.name.endswith(ext) else entry.name
                rows.append({"slide_id": sid, **({data_args.data_dir_key: key} if key is not None else {})})
    if not rows:
        raise ConfigError(f"no '*{ext}' slides found in data_arguments.data_dir {dd}; check slide_ext")
    return pd.DataFrame(rows)


def read_process_list(data_args: DataArguments) -> tuple[pd.DataFrame, Path | None]:
    """The process list (defaults filled) and the CSV it came from (None when built from data_dir)."""
    params = load_preset(data_args.preset)
    if data_args.process_list is None:
        return initialize_process_list(list_slides(data_args), params), None
    path = resolve_input_file(data_args.process_list, kind="data_arguments.process_list",
                              search_dirs=[Path("heatmaps/process_lists"), PACKAGE_DIR / "process_lists"])
    try:
        df = pd.read_csv(path, dtype={"slide_id": str, "label": object})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ConfigError(f"process list {path}: not a readable CSV ({exc})") from None
    return initialize_process_list(df, params), path


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    """Write a CSV atomically (temporary file + rename)."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return Path(path)


@dataclass(frozen=True)
class SlideTask:
    """One row of the process list, resolved: what to run on which slide."""

    slide_id: str
    slide_path: Path
    label: Any                 # as in the process list ('Unspecified' when absent)
    grouping: str              # output sub-folder: the label name
    roi: tuple[int, int, int, int] | None   # (x1, y1, x2, y2) level-0 px
    seg_params: SegmentationParams
    vis_level: int             # segmentation preview level (-1: best for downsample 32)
    line_thickness: int
    features_path: Path | None
    coords_path: Path | None


def _cell(row: pd.Series, key: str) -> Any:
    v = row.get(key)
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def resolve_slide_path(slide_id: str, row: pd.Series, data_args: DataArguments) -> Path:
    """The slide file (or DICOM folder) of a process-list row.

    Raises:
        ConfigError: data_dir is a dict and the row's cohort is missing or unknown.
        SlideOpenError: no such file in the data directory.
    """
    dd = data_args.data_dir
    if isinstance(dd, dict):
        key = _cell(row, data_args.data_dir_key)
        if key is None or str(key) not in dd:
            raise ConfigError(f"slide {slide_id}: column '{data_args.data_dir_key}' = {key!r} is not a key of data_arguments.data_dir ({', '.join(dd)})")
        dirs = [dd[str(key)]]
    elif isinstance(dd, str):
        dirs = [dd]
    elif isinstance(dd, list):
        dirs = dd
    else:
        dirs = ["."]
    ext = data_args.slide_ext
    name = slide_id if (not ext or slide_id.endswith(ext)) else slide_id + ext
    for d in dirs:
        for cand in (Path(d) / name, Path(d) / slide_id):
            if cand.exists():
                return cand
    raise SlideOpenError(f"slide {slide_id}: file not found: {Path(dirs[0]) / name}; check data_arguments.data_dir and slide_ext")


def _roi(slide_id: str, row: pd.Series) -> tuple[int, int, int, int]:
    vals = [_cell(row, c) for c in ROI_COLUMNS]
    if any(v is None for v in vals):
        raise RoiError(f"slide {slide_id}: use_roi is true but the process list has no x1,y1,x2,y2 for it; add the ROI (level-0 px) or set heatmap_arguments.use_roi: false")
    try:
        x1, y1, x2, y2 = (int(float(v)) for v in vals)
    except ValueError:
        raise RoiError(f"slide {slide_id}: ROI x1,y1,x2,y2 = {vals} must be integers (level-0 px)") from None
    return x1, y1, x2, y2


def slide_label(row: pd.Series, data_args: DataArguments) -> tuple[str, Any, str]:
    """A process-list row's ``(slide_id, label, grouping)``: the slide id without its extension,
    the label (a name or class index, ``'Unspecified'`` when absent) and the label folder of its
    outputs. Reads no file.

    Raises:
        ConfigError: the label is not in (or not a value of) ``label_dict``.
    """
    slide_id = slide_stem(str(row["slide_id"]), data_args.slide_ext)
    label = _cell(row, "label")
    names = {v: k for k, v in data_args.label_dict.items()}
    if label is None:
        return slide_id, "Unspecified", "Unspecified"
    if isinstance(label, str) and not label.lstrip("-").isdigit():
        if data_args.label_dict and label not in data_args.label_dict:
            raise ConfigError(f"slide {slide_id}: label '{label}' is not in data_arguments.label_dict ({', '.join(data_args.label_dict)}); add it there or fix the process list")
        return slide_id, label, label
    code = int(float(label))
    if code not in names:
        raise ConfigError(f"slide {slide_id}: label {code} is not a value of data_arguments.label_dict ({data_args.label_dict}); add it or fix the process list")
    return slide_id, code, names[code]


def slide_task(row: pd.Series, data_args: DataArguments, *, use_roi: bool) -> SlideTask:
    """Resolve one process-list row (slide path, label folder, ROI, segmentation parameters).

    Raises:
        ConfigError: label not in ``label_dict``, bad cohort key or parameters.
        SlideOpenError: the slide file does not exist.
        RoiError: ``use_roi`` without a valid ROI.
    """
    raw_id = str(row["slide_id"])
    slide_id, label, grouping = slide_label(row, data_args)
    seg = SegmentationParams(
        seg_level=int(float(row["seg_level"])), sthresh=int(float(row["sthresh"])), mthresh=int(float(row["mthresh"])),
        close=int(float(row["close"])), use_otsu=_bool(row["use_otsu"]),
        keep_ids=_ids(row["keep_ids"]), exclude_ids=_ids(row["exclude_ids"]),
        a_t=float(row["a_t"]), a_h=float(row["a_h"]), max_n_holes=int(float(row["max_n_holes"])),
        a_t_hints=preset_a_t_hints(),
    )
    feats = _cell(row, "features_path")
    coords = _cell(row, "coords_path")
    return SlideTask(
        slide_id=slide_id,
        slide_path=resolve_slide_path(raw_id, row, data_args),
        label=label, grouping=str(grouping),
        roi=_roi(slide_id, row) if use_roi else None,
        seg_params=seg,
        vis_level=int(float(row["vis_level"])), line_thickness=int(float(row["line_thickness"])),
        features_path=Path(feats) if feats else None,
        coords_path=Path(coords) if coords else None,
    )


def to_native(value: Any) -> Any:
    """numpy scalars -> Python scalars (for CSV/YAML writing)."""
    return value.item() if isinstance(value, np.generic) else value

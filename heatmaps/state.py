"""Per-slide state: what happened to one slide, in a small JSON beside its raw outputs
(``{raw_dir}/{slide_id}_state.json``, :attr:`heatmaps.layout.SlideOutputs.state_json`).

Written atomically when a slide ends (processed or failed) by the worker that computed it; read by
the results book (the results CSV is assembled from the states, so concurrent workers never
overwrite each other's rows), by a rerun (a complete slide is recognised from its outputs *and* a
``processed`` state made by the same checkpoint) and by ``create-heatmaps status``.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from wsi_core.io import atomic_path

__all__ = ["SlideState", "read_state", "write_state", "STATE_VERSION"]

log = logging.getLogger(__name__)
STATE_VERSION = 1


@dataclass
class SlideState:
    """One slide's state.

    ``status``: ``processed`` or ``failed``; ``reason``: the failure (one line) or why the fine
    heatmap was skipped; ``bag_size``: patches in the bag; ``pred``: predicted class index;
    ``probs``: (C,) class probabilities; ``ranked``: (class name, probability), most probable
    first; ``seconds``: wall time of the slide; ``finished``: epoch s; ``computations``: how many
    times this slide was computed into this output folder (a skip of complete outputs is not one);
    ``tool_version``, ``model_sha256`` (checkpoint), ``encoder`` and ``encoder_weights`` (sha256 or
    hub id), ``config_sha256`` (the effective config); who: ``host``, ``pid``, ``job_id``, ``run_id``.
    """

    slide_id: str
    status: str
    reason: str | None = None
    bag_size: int | None = None
    pred: int | None = None
    probs: list[float] = field(default_factory=list)
    ranked: list[tuple[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    finished: float = 0.0
    computations: int = 1
    tool_version: str = ""
    model_sha256: str | None = None
    encoder: str | None = None
    encoder_weights: str | None = None
    config_sha256: str = ""
    host: str = ""
    pid: int = 0
    job_id: str = ""
    run_id: str = ""
    version: int = STATE_VERSION

    def status_line(self) -> str:
        """The results CSV's ``status``: ``processed``, ``processed (<note>)`` or ``failed: <reason>``."""
        if self.status == "processed":
            line = "processed" if not self.reason else f"processed ({self.reason})"
        else:
            line = f"failed: {self.reason}"
        return line.replace("\n", " ")


def write_state(path: Path, state: SlideState) -> Path:
    """Write ``state`` atomically (``finished`` set to now when 0).

    Raises:
        WsiHeatmapsError: the folder cannot be written (see :func:`wsi_core.io.atomic_path`).
    """
    if not state.finished:
        state.finished = time.time()
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(asdict(state), indent=1, sort_keys=True))
    return path


def read_state(path: str | os.PathLike[str]) -> SlideState | None:
    """The state in ``path``; None when it is missing or unreadable (a warning names the file)."""
    path = Path(path)
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("%s: unreadable slide state (%s); the slide counts as not done", path, exc)
        return None
    known = {k: v for k, v in data.items() if k in SlideState.__dataclass_fields__}
    try:
        state = SlideState(**known)
    except TypeError as exc:
        log.warning("%s: unreadable slide state (%s); the slide counts as not done", path, exc)
        return None
    state.ranked = [tuple(x) for x in state.ranked]
    return state

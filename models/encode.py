"""The one encode loop: patches from a *source* through an encoder into an (N, D) float32 array.

:func:`encode` owns everything every feature pass shares: device resolution, the reading
workers, precision (``torch.autocast``), the memory format, ``torch.inference_mode``, the
progress bar, and filling the output rows by index. A :class:`PatchSource` says where the
patches come from and how its batches go through the model:

* per-patch slide reads and band windows of a slide (:mod:`models.extract`:
  ``extract_features``, ``extract_features_dense``),
* fully-convolutional regions whose forward pools each window's features from one feature map
  (:mod:`models.fully_conv`: ``extract_features_fully_conv``),
* an in-memory (H, W, 3) uint8 image (:class:`ImageSource`, :func:`encode_image_patches`: the
  demo's and the tests' synthetic slides).
"""
from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, ContextManager, Iterator

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from wsi_core.errors import ConfigError

from .encoders import Encoder, autocast_context

__all__ = ["PatchSource", "ImageSource", "encode", "encode_image_patches", "resolve_device",
           "reading_workers", "progress_bar", "fancy_terminal", "patch_memory_bytes", "batch_for_memory",
           "gpu_patch_bytes", "cuda_batch_size", "compile_model"]

log = logging.getLogger(__name__)


class PatchSource:
    """Where the patches of one encode pass come from (subclass and implement :meth:`batches`).

    ``n``: number of output rows; ``desc``: progress-bar label. :func:`encode` calls
    :meth:`prepare` once (open the slide, plan the reads; errors raise here, in this process),
    then iterates :meth:`batches`, runs :meth:`forward` on each, and finally calls :meth:`close`.
    """

    n: int = 0
    desc: str = ""
    #: set when :meth:`batches` yields (b, H, W, 3) uint8 patches: the transform then runs as
    #: tensor operations on the encoder's device after the upload
    #: (:class:`models.encoders.DeviceTransform`); None: batches are already transformed
    device_transform: Any = None

    def prepare(self, *, num_workers: int) -> None:
        """Get ready to yield batches read by ``num_workers`` processes (0: this process)."""

    def batches(self, *, num_workers: int, pin_memory: bool) -> Iterator[tuple[np.ndarray, Any]]:
        """Yield ``(rows (b,) int64, inputs)``: the output rows of the batch and what
        :meth:`forward` takes (a (b, 3, H, W) float32 tensor for per-patch sources)."""
        raise NotImplementedError

    def forward(self, model: nn.Module, inputs: Any, *, device: torch.device,
                memory_format: torch.memory_format, amp: ContextManager) -> Tensor:
        """(b, D) features of one batch: ``model(inputs)`` on ``device`` in ``memory_format``
        under ``amp`` (the autocast context); uint8 patches go through :attr:`device_transform`
        after the (non-blocking, from pinned memory) upload."""
        x = inputs.to(device, non_blocking=True)
        if self.device_transform is not None:
            x = self.device_transform(x)
        x = x.contiguous(memory_format=memory_format)
        with amp:
            return model(x)

    def close(self) -> None:
        """Release what :meth:`prepare` opened (called also after an error)."""


def resolve_device(device: str | torch.device) -> torch.device:
    """``torch.device`` for ``device``.

    Raises:
        ConfigError: CUDA asked for but not available.
    """
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{device}' requested but CUDA is not available; use device cpu")
    return dev


def reading_workers(num_workers: int | None, device: torch.device) -> int:
    """DataLoader worker processes for reading patches: ``num_workers`` when given, else automatic.

    Automatic (``None``): 0 on CPU, so patches are read in this process between encoder
    batches; ``min(8, os.cpu_count() - 1)`` (at least 1) on CUDA, where the readers only decode
    and cut uint8 windows while the GPU encodes. On CPU the encoder's intra-op threads already
    occupy every core: worker processes then cost more than they hide (IPC of the batches and
    preempted encoder threads). Measured on 2 cores with resnet50_trunc at 224 px
    (``benchmarks/bench_dense.py``, overlap 0 / 0.5 / 0.9): in-process reading reaches 79 / 91 /
    99 % of the encoder's throughput alone, 2 worker processes 60 / 69 / 69 %.
    """
    if num_workers is not None:
        return max(0, int(num_workers))
    return 0 if device.type == "cpu" else max(1, min(8, (os.cpu_count() or 2) - 1))


def patch_memory_bytes(encoder: Encoder, patch_px: int) -> int:
    """Peak CPU memory (bytes) one patch takes through ``encoder``: its float32 input tensor plus
    the activations (``EncoderInfo.activation_bytes_per_px``, measured per encoder family), at the
    encoder's input size (``patch_px`` when the encoder keeps the patch size)."""
    from .encoders import encoder_info

    try:
        per_px = encoder_info(encoder.name).activation_bytes_per_px
    except Exception:  # noqa: BLE001 - an ad-hoc encoder outside the registry
        per_px = 1700
    side = int(encoder.input_size or patch_px)
    return (per_px + 3 * 4) * side * side


def batch_for_memory(encoder: Encoder, batch_size: int, budget_bytes: int, *, patch_px: int) -> int:
    """The encoder batch that fits ``budget_bytes``: ``min(batch_size, budget // per-patch bytes)``,
    at least 1 (see :func:`patch_memory_bytes`)."""
    return max(1, min(int(batch_size), int(budget_bytes) // patch_memory_bytes(encoder, patch_px)))


#: GPU memory per input px of one patch in a batch, as a share of ``activation_bytes_per_px``
#: (measured on the CPU with the heap-keeping allocator, 4.2x glibc's default there); PyTorch's
#: caching allocator reuses blocks like glibc's default, and bf16 halves the activations
_GPU_SHARE = {"fp32": 1 / 4.2, "bf16": 1 / 8.4, "fp16": 1 / 8.4}


def gpu_patch_bytes(encoder: Encoder, patch_px: int, precision: str | None) -> int:
    """GPU memory (bytes) one patch takes in a batch through ``encoder`` at ``precision``: its
    uint8 upload and float32 input plus ``activation_bytes_per_px`` scaled by
    :data:`_GPU_SHARE` (see :func:`patch_memory_bytes` for the CPU figure)."""
    side = int(encoder.input_size or patch_px)
    act = patch_memory_bytes(encoder, patch_px) - 12 * side * side
    share = _GPU_SHARE.get(precision or "fp32", _GPU_SHARE["fp32"])
    return int(act * share) + 12 * side * side + 3 * patch_px * patch_px


def cuda_batch_size(encoder: Encoder, *, patch_px: int, precision: str | None,
                    device: str | torch.device = "cuda", free_bytes: int | None = None,
                    share: float = 0.5, cap: int = 1024) -> int:
    """Encoder batch for a CUDA device: the patches that fit ``share`` of its free memory
    (``free_bytes``; None: ``torch.cuda.mem_get_info``), rounded down to a multiple of 32
    (tensor-core friendly), between 32 and ``cap``. From 256-px patches at 224 px in bf16, a 12 GB
    card (about 11 GB free) gets 1024 for resnet50_trunc and 512 for the ViT-L/H (UNI, UNI2-h),
    an 80 GB one the cap of 1024 for all three (in fp32: 544 / 256 on 12 GB). These rest on the
    CPU-measured activation sizes; ``benchmarks/bench_gpu.py`` prints the measured peak per patch.
    """
    if free_bytes is None:
        free_bytes = torch.cuda.mem_get_info(torch.device(device))[0]
    n = int(free_bytes * share) // gpu_patch_bytes(encoder, patch_px, precision)
    return int(max(32, min(int(cap), n // 32 * 32)))


def compile_model(model: nn.Module, enabled: bool) -> nn.Module:
    """``torch.compile(model)`` when ``enabled`` (off by default everywhere: the first batches
    of each shape pay the compilation, tens of seconds; worth it only for long passes on a GPU,
    see ``benchmarks/bench_gpu.py``), else ``model``."""
    return torch.compile(model) if enabled else model


PROGRESS_LOG_SECONDS = 30.0     # a plain progress line this often where no bar is drawn


def fancy_terminal(stream: Any = None) -> bool:
    """Whether progress may be drawn as a bar on ``stream`` (default: stderr): it is a terminal,
    ``TERM`` is not ``dumb`` and ``NO_COLOR`` is unset or empty (https://no-color.org: such users
    ask for plain output; the bar's cursor movements would end up in their logs)."""
    stream = sys.stderr if stream is None else stream
    try:
        tty = bool(stream.isatty())
    except (AttributeError, ValueError):        # closed or not a file
        tty = False
    return tty and os.environ.get("TERM") != "dumb" and not os.environ.get("NO_COLOR")


class _LogProgress:
    """The tqdm calls :func:`encode` and the run loop use (``update``, ``close``), as plain log
    lines ``{desc}: 1,200/5,000 patch (24 %), 35.2 patch/s`` at most every ``every`` seconds and
    at the end (unless the last line said it already) - no carriage returns, no escape sequences."""

    def __init__(self, total: int, desc: str, unit: str, every: float) -> None:
        self.total, self.desc, self.unit, self.every = int(total), desc, unit, float(every)
        self.n = self.logged = 0
        self.t0 = self.last = time.monotonic()

    def _line(self, now: float) -> None:
        self.logged = self.n
        pct = f" ({100 * self.n / self.total:.0f} %)" if self.total else ""
        rate = self.n / max(now - self.t0, 1e-9)
        log.info("%s: %s/%s %s%s, %.1f %s/s", self.desc, f"{self.n:,}", f"{self.total:,}", self.unit, pct,
                 rate, self.unit)

    def update(self, n: int = 1) -> None:
        self.n += int(n)
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self._line(now)

    def close(self) -> None:
        if self.n != self.logged:
            self._line(time.monotonic())


def progress_bar(total: int, enabled: bool, desc: str, *, unit: str = "patch") -> Any:
    """Progress of ``total`` items (``.update(n)``, ``.close()``), or None when disabled.

    On a terminal (:func:`fancy_terminal`) a tqdm bar on stderr; elsewhere - a pipe, a log file, a
    batch job, ``NO_COLOR`` or ``TERM=dumb`` - a plain INFO log line every
    ``PROGRESS_LOG_SECONDS`` and one at the end, so captured logs hold no ``\\r`` / ``\\x1b[``
    bar artefacts.

    Args:
        total: items to do. enabled: False returns None. desc: label (``features {slide}``).
        unit: item name (``patch``, ``slide``).
    """
    if not enabled:
        return None
    if not fancy_terminal():
        return _LogProgress(total, desc, unit, PROGRESS_LOG_SECONDS)
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency, but stay optional
        return _LogProgress(total, desc, unit, PROGRESS_LOG_SECONDS)
    return tqdm(total=total, desc=desc, unit=unit, leave=False)


def encode(source: PatchSource, encoder: Encoder, *, device: str | torch.device = "cpu",
           precision: str | None = None, channels_last: bool = False, num_workers: int | None = None,
           progress: bool = False, compile: bool = False) -> np.ndarray:
    """Run ``encoder`` over every patch of ``source`` -> (source.n, encoder.dim) float32.

    Row ``i`` is the feature of the source's patch ``i``, whatever order the batches come in.
    ``device``: 'cpu' or 'cuda[:i]' (the encoder's model is moved there, eval mode);
    ``precision``: None/'fp32' (no autocast), 'bf16' or 'fp16' (``torch.autocast``);
    ``channels_last``: run the model channels-last (about 1.5x faster for CNNs on CPU; features
    differ by ~1e-7 from contiguous); ``num_workers``: reading processes (None: automatic, see
    :func:`reading_workers`); ``progress``: a tqdm bar; ``compile``: ``torch.compile`` the model
    (:func:`compile_model`). ``source.n == 0`` returns a (0, D) array before anything is opened
    or checked. On CUDA, batches arrive in pinned memory and are uploaded without blocking, and
    each batch's features come back with a non-blocking copy collected one batch later, so the
    host reads and queues batch i+1 while the GPU runs batch i.

    Raises:
        ConfigError: CUDA requested but not available; an unknown ``precision``.
        SlideOpenError: the source's slide cannot be opened (from :meth:`PatchSource.prepare`).
    """
    out = np.empty((source.n, encoder.dim), dtype=np.float32)
    if source.n == 0:
        return out
    dev = resolve_device(device)
    workers = reading_workers(num_workers, dev)
    amp = autocast_context(dev, precision)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = compile_model(encoder.model.eval().to(dev, memory_format=fmt), compile)
    cuda = dev.type == "cuda"
    bar = None
    pending: tuple[np.ndarray, Tensor, Any] | None = None

    def collect() -> None:  # write the previous batch's features once its copy has landed
        rows, host, done = pending
        if done is not None:
            done.synchronize()
        out[rows] = host.numpy()
        if bar is not None:
            bar.update(len(rows))

    try:
        source.prepare(num_workers=workers)
        bar = progress_bar(source.n, progress, f"features {source.desc}")
        with torch.inference_mode():
            for rows, inputs in source.batches(num_workers=workers, pin_memory=cuda):
                feats = source.forward(model, inputs, device=dev, memory_format=fmt, amp=amp).float()
                done = None
                if cuda:
                    feats = feats.to("cpu", non_blocking=True)
                    done = torch.cuda.Event()
                    done.record()
                if pending is not None:
                    collect()
                pending = (rows, feats, done)
            if pending is not None:
                collect()
    finally:
        source.close()
        if bar is not None:
            bar.close()
    return out


class ImageSource(PatchSource):
    """Patches cut from an in-memory (H, W, 3) uint8 RGB image, in batches, in this process.

    ``coords``: (N, 2) int64 top-left (x, y) px of the image; each patch ``rgb[y:y+s, x:x+s]``
    (``s`` = ``patch_size``) goes through ``PIL.Image.fromarray`` and ``transform``.
    """

    def __init__(self, rgb: np.ndarray, coords: np.ndarray, *, patch_size: int, transform: Any,
                 batch_size: int = 16, desc: str = "image") -> None:
        self.rgb = rgb
        self.coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
        self.patch_size, self.transform = int(patch_size), transform
        self.batch_size = max(1, int(batch_size))
        self.n, self.desc = len(self.coords), desc

    def batches(self, *, num_workers: int, pin_memory: bool) -> Iterator[tuple[np.ndarray, Tensor]]:
        s = self.patch_size
        for start in range(0, self.n, self.batch_size):
            rows = np.arange(start, min(start + self.batch_size, self.n), dtype=np.int64)
            yield rows, torch.stack([self.transform(Image.fromarray(self.rgb[y:y + s, x:x + s]))
                                     for x, y in self.coords[rows]])


def encode_image_patches(encoder: Encoder, rgb: np.ndarray, coords: np.ndarray, *, patch_size: int,
                         batch_size: int = 16, precision: str | None = None,
                         device: str | torch.device = "cpu", channels_last: bool = False,
                         progress: bool = False) -> np.ndarray:
    """Features (N, encoder.dim) float32 of the patches at ``coords`` of an in-memory image.

    ``rgb``: (H, W, 3) uint8 RGB (e.g. a synthetic slide's level 0); ``coords``: (N, 2) int64
    top-left (x, y) px; ``patch_size``: patch side, px; patches go through
    ``encoder.transform`` one by one and ``encoder.model`` in batches of ``batch_size``.
    ``precision``/``device``/``channels_last``/``progress``: see :func:`encode`.

    Raises:
        ConfigError: CUDA requested but not available; an unknown ``precision``.
    """
    source = ImageSource(rgb, coords, patch_size=patch_size, transform=encoder.transform,
                         batch_size=batch_size)
    return encode(source, encoder, device=device, precision=precision, channels_last=channels_last,
                  num_workers=0, progress=progress)

"""Patch features of a slide through the one encode loop (:func:`models.encode.encode`), and
reuse of features between patch grids.

:func:`extract_features` reads every patch ``read_region((x, y), patch_level, (s, s))``
(level-0 top-left ``(x, y)``, ``s`` px at ``patch_level``), converts it to a PIL RGB image and
applies the encoder's transform (:class:`PatchDataset`, one read per patch). The slide is opened
lazily once per DataLoader worker. Output rows follow the order of ``coords``.

:func:`extract_features_dense` is the high-overlap variant: DataLoader workers read the slide
band by band (:class:`BandDataset` over ``wsi_core.regions``: each pixel decoded about once per
pass instead of ``1 / (1 - overlap)**2`` times), cut the windows with numpy and apply the same
per-patch PIL transform, so its features equal :func:`extract_features` (see its docstring).

:func:`reuse_map` finds the patches of a new grid that an earlier grid already encoded (CLAM
extracts them twice: once for the blockmap, once for the overlap pass), with a vectorised join.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from wsi_core.errors import ConfigError
from wsi_core.regions import Band, iter_band_windows, level_downsample, plan_bands
from wsi_core.slide import Slide, open_slide

from .encode import PatchSource, encode
from .encoders import DeviceTransform, Encoder, device_transform
from .encoders.transforms import HostBatchTransform, host_batch_transform

__all__ = ["PatchDataset", "BandDataset", "SlidePatchSource", "SlideBandSource", "extract_features",
           "extract_features_dense", "plan_bands_for_workers", "reuse_map"]


class PatchDataset(Dataset):
    """Patches of one slide at ``coords`` (N, 2) int64 level-0 px, transformed for an encoder.

    Item ``i`` is the (3, H, W) float32 tensor of patch ``coords[i]``. The slide is opened on
    first access in each process (safe with DataLoader workers); :meth:`close` releases it.
    ``target_patch_size``: when set, the patch is resized to that side (PIL default filter)
    before the transform, as CLAM does with ``custom_downsample`` > 1.
    """

    def __init__(self, slide_path: str | os.PathLike[str], coords: np.ndarray, *, patch_level: int,
                 patch_size: int, transform: Callable[[Image.Image], Tensor],
                 target_patch_size: int | None = None) -> None:
        self.slide_path = Path(slide_path)
        self.coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
        self.patch_level, self.patch_size = int(patch_level), int(patch_size)
        self.target_patch_size = target_patch_size
        self.transform = transform
        self._slide: Slide | None = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return len(self.coords)

    def slide(self) -> Slide:
        """This process's handle of the slide, opened on first use.

        Raises:
            SlideOpenError: the slide cannot be opened (from wsi_core).
        """
        if self._slide is None or self._pid != os.getpid():
            self._slide, self._pid = open_slide(self.slide_path), os.getpid()
        return self._slide

    def __getitem__(self, idx: int) -> Tensor:
        x, y = (int(v) for v in self.coords[idx])
        rgb = self.slide().read_region((x, y), self.patch_level, (self.patch_size,) * 2)
        img = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8))
        if self.target_patch_size and self.target_patch_size != self.patch_size:
            img = img.resize((self.target_patch_size,) * 2)
        return self.transform(img)

    def close(self) -> None:
        """Close this process's slide handle (a worker's copy closes its own)."""
        if self._slide is not None and self._pid == os.getpid():
            self._slide.close()
        self._slide = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_slide"], state["_pid"] = None, None  # never ship an open handle to a worker
        return state


class SlidePatchSource(PatchSource):
    """:class:`PatchDataset` batched by a DataLoader (``num_workers`` processes): rows in order."""

    def __init__(self, dataset: PatchDataset, *, batch_size: int) -> None:
        self.dataset, self.batch_size = dataset, int(batch_size)
        self.n, self.desc = len(dataset), dataset.slide_path.name

    def prepare(self, *, num_workers: int) -> None:
        if num_workers == 0:
            self.dataset.slide()
        else:  # open once here so a bad slide raises a one-line SlideOpenError, not a worker traceback
            open_slide(self.dataset.slide_path).close()

    def batches(self, *, num_workers: int, pin_memory: bool) -> Iterator[tuple[np.ndarray, Tensor]]:
        loader = DataLoader(self.dataset, batch_size=self.batch_size, shuffle=False,
                            num_workers=num_workers, pin_memory=pin_memory)
        start = 0
        for batch in loader:
            yield np.arange(start, start + len(batch), dtype=np.int64), batch
            start += len(batch)

    def close(self) -> None:
        self.dataset.close()


def extract_features(
    slide_path: str | os.PathLike[str],
    coords: np.ndarray,
    *,
    patch_level: int,
    patch_size: int,
    encoder: Encoder,
    batch_size: int = 64,
    num_workers: int | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    target_patch_size: int | None = None,
    channels_last: bool = False,
    precision: str | None = None,
) -> np.ndarray:
    """Encode the patches at ``coords`` -> (N, encoder.dim) float32, rows in ``coords`` order.

    ``coords``: (N, 2) level-0 px top-left (x, y); ``patch_size``: px at ``patch_level``;
    ``num_workers``: DataLoader processes (0 = read in this process, None = automatic, see
    :func:`models.encode.reading_workers`); ``device``: 'cpu' or 'cuda[:i]' (the encoder is
    moved there); ``channels_last``: run the encoder in channels-last memory format (about 1.5x
    faster on CPU; features differ by ~1e-7); ``precision``: None/'fp32', 'bf16' or 'fp16'
    (autocast). ``target_patch_size``: resize each patch to this side before the transform
    (CLAM's custom_downsample). N = 0 returns a (0, D) array without opening the slide.

    Raises:
        SlideOpenError: the slide cannot be opened (from wsi_core).
        ConfigError: CUDA requested but not available; unknown ``precision``.
    """
    ds = PatchDataset(slide_path, coords, patch_level=patch_level, patch_size=patch_size,
                      transform=encoder.transform, target_patch_size=target_patch_size)
    return encode(SlidePatchSource(ds, batch_size=batch_size), encoder, device=device,
                  precision=precision, channels_last=channels_last, num_workers=num_workers,
                  progress=progress)


class BandDataset(IterableDataset):
    """Transformed windows of ``bands`` (see ``wsi_core.regions``), read band by band.

    Yields ``(indices (b,) int64, batch (b, 3, H, W) float32)`` with ``b <= batch_size``
    (batches span bands within a worker). Each DataLoader worker takes every
    ``num_workers``-th band, opens the slide itself and reads each of its bands once; every
    window goes through ``PIL.Image.fromarray`` and ``transform`` exactly as
    :class:`PatchDataset` does (``target_patch_size``: PIL resize first) - the transform's PIL
    steps per window and its tensor steps per batch (:class:`~models.encoders.transforms.HostBatchTransform`,
    bit-identical) when it was built by ``build_transform``. ``transform=None``
    yields the windows untransformed, as one (b, s, s, 3) uint8 tensor per batch (for a
    :class:`models.encoders.DeviceTransform` on the GPU).
    """

    def __init__(self, slide_path: str | os.PathLike[str], bands: list[Band], *,
                 patch_level: int, patch_size: int, transform: Any, batch_size: int,
                 target_patch_size: int | None = None) -> None:
        self.slide_path = Path(slide_path)
        self.bands = bands
        self.patch_level, self.patch_size = int(patch_level), int(patch_size)
        self.transform, self.batch_size = transform, max(1, int(batch_size))
        self.target_patch_size = target_patch_size

    def _raw(self) -> Iterator[tuple[np.ndarray, Tensor]]:
        """uint8 batches of ``batch_size`` windows (spanning bands): no PIL image, no float."""
        info = get_worker_info()
        mine = self.bands if info is None else self.bands[info.id::info.num_workers]
        bs = self.batch_size
        pend_idx: list[np.ndarray] = []
        pend: list[np.ndarray] = []
        n = 0
        with open_slide(self.slide_path) as slide:
            for idx, patches in iter_band_windows(slide, mine, patch_level=self.patch_level,
                                                  patch_size=self.patch_size, batch_size=bs):
                pend_idx.append(idx)
                pend.append(patches)
                n += len(idx)
                if n >= bs:
                    all_idx, all_p = np.concatenate(pend_idx), np.concatenate(pend)
                    yield all_idx[:bs], torch.from_numpy(all_p[:bs])
                    pend_idx, pend, n = [all_idx[bs:]], [all_p[bs:]], n - bs
        if n:
            yield np.concatenate(pend_idx), torch.from_numpy(np.concatenate(pend))

    def _to_tensor(self, window: np.ndarray) -> Tensor:
        img = Image.fromarray(window)
        if self.target_patch_size and self.target_patch_size != self.patch_size:
            img = img.resize((self.target_patch_size,) * 2)
        return self.transform(img)

    def _pil(self, window: np.ndarray, host: HostBatchTransform) -> np.ndarray:
        img = Image.fromarray(window)
        if self.target_patch_size and self.target_patch_size != self.patch_size:
            img = img.resize((self.target_patch_size,) * 2)
        return host.pil(img)

    def __iter__(self) -> Iterator[tuple[np.ndarray, Tensor]]:
        if self.transform is None:
            yield from self._raw()
            return
        info = get_worker_info()
        mine = self.bands if info is None else self.bands[info.id::info.num_workers]
        host = host_batch_transform(self.transform)   # PIL steps per patch, tensor steps per batch
        if host is None:                              # an ad-hoc transform: per patch, stacked
            def finish(items: list) -> Tensor:
                return torch.stack(items)

            def one(w: np.ndarray) -> Tensor:
                return self._to_tensor(w)
        else:
            def finish(items: list) -> Tensor:
                return host.batch(np.stack(items))

            def one(w: np.ndarray) -> np.ndarray:
                return self._pil(w, host)
        pend_idx: list[np.ndarray] = []
        pend: list = []
        bs = self.batch_size
        with open_slide(self.slide_path) as slide:
            for idx, patches in iter_band_windows(slide, mine, patch_level=self.patch_level,
                                                  patch_size=self.patch_size, batch_size=bs):
                pend_idx.append(idx)
                pend.extend(one(w) for w in patches)
                while len(pend) >= bs:
                    all_idx = np.concatenate(pend_idx)
                    yield all_idx[:bs], finish(pend[:bs])
                    pend_idx, pend = [all_idx[bs:]], pend[bs:]
        if pend:
            yield np.concatenate(pend_idx), finish(pend)


def plan_bands_for_workers(coords: np.ndarray, *, downsample: float, patch_size: int,
                           band_rows: int | None, max_region_px: int, exact: bool,
                           num_workers: int) -> list[Band]:
    """Bands (``wsi_core.regions.plan_bands``) for ``coords`` (N, 2) int64 level-0 px; the
    region size (px at the patch level) is halved, down to 2 patches, until every worker gets
    about two bands, so a small ROI still keeps all workers busy."""
    while True:
        bands = plan_bands(coords, downsample=downsample, patch_size=patch_size,
                           band_rows=band_rows, max_region_px=max_region_px, exact=exact)
        if len(bands) >= 2 * max(num_workers, 1) or max_region_px <= 2 * patch_size:
            return bands
        max_region_px = max(max_region_px // 2, 2 * patch_size)


class SlideBandSource(PatchSource):
    """The windows at ``coords`` read band by band (:class:`BandDataset`) by DataLoader workers.

    ``device_transform``: when set, the workers send uint8 windows and this transform runs on
    the encoder's device (``transform`` is then not used by the readers)."""

    def __init__(self, slide_path: str | os.PathLike[str], coords: np.ndarray, *, patch_level: int,
                 patch_size: int, transform: Any, batch_size: int, target_patch_size: int | None,
                 band_rows: int | None, max_region_px: int, exact: bool,
                 device_transform: Any = None) -> None:
        self.device_transform = device_transform
        self.slide_path = Path(slide_path)
        self.coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
        self.n, self.desc = len(self.coords), self.slide_path.name
        self.patch_level, self.patch_size = int(patch_level), int(patch_size)
        self.transform, self.batch_size, self.target_patch_size = transform, batch_size, target_patch_size
        self.band_rows, self.max_region_px, self.exact = band_rows, max_region_px, exact
        self.bands: list[Band] = []

    def prepare(self, *, num_workers: int) -> None:
        with open_slide(self.slide_path) as slide:  # a bad slide raises one line here, not in a worker
            downsample = level_downsample(slide, self.patch_level)
        self.bands = plan_bands_for_workers(self.coords, downsample=downsample, patch_size=self.patch_size,
                                            band_rows=self.band_rows, max_region_px=self.max_region_px,
                                            exact=self.exact, num_workers=num_workers)

    def batches(self, *, num_workers: int, pin_memory: bool) -> Iterator[tuple[np.ndarray, Tensor]]:
        raw = self.device_transform is not None
        ds = BandDataset(self.slide_path, self.bands, patch_level=self.patch_level,
                         patch_size=self.patch_size, transform=None if raw else self.transform,
                         batch_size=self.batch_size, target_patch_size=self.target_patch_size)
        workers = min(int(num_workers), len(self.bands))
        loader = DataLoader(ds, batch_size=None, num_workers=workers, pin_memory=pin_memory)
        for idx, batch in loader:
            yield np.asarray(idx, dtype=np.int64), batch


def extract_features_dense(
    slide_path: str | os.PathLike[str],
    coords: np.ndarray,
    *,
    patch_level: int,
    patch_size: int,
    encoder: Encoder,
    batch_size_extract: int = 32,
    num_workers: int | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    precision: str | None = None,
    target_patch_size: int | None = None,
    channels_last: bool = False,
    band_rows: int | None = None,
    max_region_px: int = 2048,
    exact: bool = True,
    transform_on_device: bool | None = None,
    compile: bool = False,
) -> np.ndarray:
    """Encode the patches at ``coords`` reading the slide in bands -> (N, D) float32.

    Same contract as :func:`extract_features` (``coords`` (N, 2) level-0 px top-left,
    ``patch_size`` px at ``patch_level``, rows in ``coords`` order), but DataLoader workers read
    each band of the grid once (``wsi_core.regions.plan_bands``; ``band_rows``,
    ``max_region_px`` (px at ``patch_level``) and ``exact`` are passed on) and cut the
    overlapping windows in memory, ahead of the encoder. Windows are pixel-identical to
    per-patch ``read_region`` and take the same PIL transform, so with fp32 the features equal
    :func:`extract_features` bit for bit whenever the encoder's result for one patch does not
    depend on the batch around it (resnet50_trunc on CPU: max abs difference 0.0, checked for
    batch sizes 1, 7, 32 vs 64; GPU kernels may vary with the batch size at the ~1e-6 level).
    ``exact=False`` on a level with a non-integer downsample trades that equality for band
    reads (sub-pixel shift, see ``wsi_core.regions``).

    ``batch_size_extract``: patches per encoder batch; ``num_workers``: reading/transform
    processes (0 = in this process, None = automatic, see :func:`models.encode.reading_workers`);
    ``precision``: None/'fp32', 'bf16' or 'fp16' (autocast).
    ``transform_on_device``: the readers send uint8 windows and the encoder's transform runs as
    tensor operations on ``device`` (:class:`models.encoders.DeviceTransform`; equal to the PIL
    transform within ~0.02 after normalisation, exact when no resize happens); None: on CUDA
    whenever the encoder's transform has a device form and no ``target_patch_size`` resize is
    asked for, else off (the CPU keeps the PIL transform and its bit-exact CLAM parity).
    ``compile``: ``torch.compile`` the encoder (:func:`models.encode.compile_model`).

    Raises:
        SlideOpenError: the slide cannot be opened (from wsi_core).
        ConfigError: CUDA requested but not available; unknown ``precision``; a
            ``transform_on_device`` the encoder's transform cannot give.
    """
    dev_tf = _device_transform(encoder, device, transform_on_device, target_patch_size, patch_size)
    source = SlideBandSource(slide_path, coords, patch_level=patch_level, patch_size=patch_size,
                             transform=encoder.transform, batch_size=batch_size_extract,
                             target_patch_size=target_patch_size, band_rows=band_rows,
                             max_region_px=max_region_px, exact=exact, device_transform=dev_tf)
    return encode(source, encoder, device=device, precision=precision, channels_last=channels_last,
                  num_workers=num_workers, progress=progress, compile=compile)


def _device_transform(encoder: Encoder, device: str | torch.device, wanted: bool | None,
                      target_patch_size: int | None, patch_size: int) -> DeviceTransform | None:
    """The encoder's :class:`DeviceTransform` when ``wanted`` (None: on CUDA when possible)."""
    resize_first = bool(target_patch_size) and target_patch_size != patch_size
    tf = None if resize_first else device_transform(encoder.transform)
    if wanted is None:
        return tf if torch.device(device).type == "cuda" else None
    if wanted and tf is None:
        why = "a target_patch_size resize comes first" if resize_first else "its transform has no tensor form"
        raise ConfigError(f"transform_on_device asked for encoder {encoder.name}, but {why}; "
                          "leave transform_on_device unset")
    return tf if wanted else None


def _row_view(coords: np.ndarray) -> np.ndarray:
    """(N, 2) int64 -> (N,) structured view whose elements compare as (x, y) pairs."""
    c = np.ascontiguousarray(np.asarray(coords, dtype=np.int64).reshape(-1, 2))
    return c.view([("x", np.int64), ("y", np.int64)]).ravel()


def reuse_map(new_coords: np.ndarray, old_coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``new_coords`` that also occur in ``old_coords`` (both (N, 2) level-0 px).

    Returns ``(idx_new, idx_old)`` int64 with ``new_coords[idx_new] == old_coords[idx_old]``,
    sorted by ``idx_new``; for duplicated coords the first occurrence is used. Vectorised
    (``np.intersect1d`` on a structured row view), O((N + M) log(N + M)).
    """
    _, idx_new, idx_old = np.intersect1d(_row_view(new_coords), _row_view(old_coords),
                                         assume_unique=False, return_indices=True)
    order = np.argsort(idx_new, kind="stable")
    return idx_new[order].astype(np.int64), idx_old[order].astype(np.int64)

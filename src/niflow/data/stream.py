"""Data that does not fit in memory: stimuli and responses streamed from HDF5 files.

:class:`StreamingData` offers what training needs from :class:`~niflow.data.dataset.NIFData`
(split, scalers, voxel index, ``iter_batches``) while keeping the arrays on disk: per-voxel
statistics are computed in one chunked pass over the rows, and batches are read by
DataLoader worker processes (each opens the files itself; h5py handles are not shared across
processes). Memory grows with the batch and the chunk size, not with the number of samples.

Both plain HDF5 (``.h5``/``.hdf5``, row-major) and MATLAB v7.3 ``.mat`` files (HDF5 written
column-major, so sample rows are the LAST axis on disk) are read. Shapes are logical (v7.3
axes un-reversed) before the colour rule of :mod:`niflow.data.layout` is applied: MATLAB's
``n × H × W × 3`` colour stack is stored as (3, W, H, n) and read as (n, H, W, 3).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch

from niflow.data.dataset import (
    DroppedVoxelsWarning,
    Split,
    Standardizer,
    _varies,
    make_split,
)
from niflow.data.errors import DataError
from niflow.data.layout import channels_first, image_shape


@dataclass(frozen=True)
class H5Array:
    """A 2-D+ array in an HDF5 file whose first logical axis is the sample axis.

    ``reversed_axes``: stored column-major (MATLAB v7.3), i.e. the on-disk shape is the
    logical shape reversed.
    """

    path: Path
    name: str
    reversed_axes: bool

    @classmethod
    def open(cls, path: str | Path, name: str) -> H5Array:
        path = require_hdf5(path)
        with h5py.File(path, "r") as fh:
            if name not in fh or not isinstance(fh[name], h5py.Dataset):
                names = sorted(k for k in fh if isinstance(fh[k], h5py.Dataset))
                raise DataError(f"{path}: variable {name!r} not found; variables are {names}")
            if fh[name].dtype.kind not in "biuf":
                raise DataError(f"{path}: variable {name!r} is not numeric")
        return cls(path, name, path.suffix.lower() == ".mat")

    @property
    def shape(self) -> tuple[int, ...]:
        with h5py.File(self.path, "r") as fh:
            shape = fh[self.name].shape
        return tuple(reversed(shape)) if self.reversed_axes else tuple(shape)

    @property
    def dtype(self) -> np.dtype:
        with h5py.File(self.path, "r") as fh:
            return fh[self.name].dtype

    def contiguous_offset(self) -> int | None:
        layout = self._layout()
        return None if layout is None else layout[0]

    def _layout(self) -> tuple[int, tuple[int, ...], np.dtype] | None:
        """File offset of the dataset's data if rows can be read directly, else ``None``.

        A dataset stored contiguously and unfiltered in row-major order (h5py's default
        without ``chunks=``) is a plain C array at a fixed offset of the file, so a run of
        rows is one ``pread`` from the page cache, without HDF5's per-selection overhead and
        without mapping the file (resident memory stays flat). Chunked or compressed
        datasets, and MATLAB v7.3 arrays (column-major: a sample's values are scattered
        through the file), are read through h5py.
        """
        st = os.stat(self.path)  # a file rewritten in place must not be read at old offsets
        key = (str(self.path), self.name, st.st_ino, st.st_mtime_ns, st.st_size)
        if key not in _LAYOUTS:
            with h5py.File(self.path, "r") as fh:
                ds = fh[self.name]
                offset = ds.id.get_offset()
                plain = (ds.chunks is None and offset is not None and not ds.external
                         and ds.size > 0 and not self.reversed_axes)
                _LAYOUTS[key] = (int(offset), ds.shape, ds.dtype) if plain else None
        return _LAYOUTS[key]

    def read(self, rows: np.ndarray, fh: h5py.File | None = None) -> np.ndarray:
        """Rows ``rows`` (sorted ascending, unique) in logical (row-major) layout."""
        layout = self._layout()
        if layout is not None:
            return self._pread(np.asarray(rows, dtype=np.int64), *layout)
        own = fh is None
        fh = h5py.File(self.path, "r") if own else fh
        try:
            ds = fh[self.name]
            if self.reversed_axes:
                arr = ds[..., rows]
                return arr.transpose(tuple(range(arr.ndim - 1, -1, -1)))
            return ds[rows]
        finally:
            if own:
                fh.close()

    def _pread(self, rows: np.ndarray, offset: int, shape: tuple[int, ...],
               dtype: np.dtype) -> np.ndarray:
        """Rows of a contiguous row-major dataset, one ``pread`` per run of consecutive rows."""
        row_items = int(np.prod(shape[1:], dtype=np.int64))
        row_bytes = row_items * dtype.itemsize
        out = np.empty((rows.size, *shape[1:]), dtype)
        flat = out.reshape(rows.size, row_items)
        fd = _fd(self.path)
        starts = np.flatnonzero(np.diff(rows, prepend=-2) != 1)
        for a, b in zip(starts, [*starts[1:], rows.size], strict=True):
            n_bytes = (b - a) * row_bytes
            buf = os.pread(fd, n_bytes, offset + int(rows[a]) * row_bytes)
            if len(buf) != n_bytes:
                raise DataError(f"{self.path}: variable {self.name!r} is truncated (rows "
                                f"{rows[a]}..{rows[b - 1]} lie beyond the end of the file)")
            flat[a:b] = np.frombuffer(buf, dtype).reshape(b - a, row_items)
        return out


def default_workers(device: torch.device | str = "cpu") -> int:
    """DataLoader workers that do not slow training down: the cores training leaves free.

    On a CPU, torch's threads use ``torch.get_num_threads()`` cores and readers on the same
    cores stall them (measured on 2 cores: 2 workers made epochs 1.35× slower than reading
    in the training process); on a GPU one core drives the device. At most 4.
    """
    cores = os.cpu_count() or 1
    busy = torch.get_num_threads() if torch.device(device).type == "cpu" else 1
    return max(0, min(4, cores - busy))


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def check_workers(num_workers: int) -> None:
    """Warn (one line) when more reader processes are asked for than there are cores: they
    then compete with training for them (measured on 2 cores, 2 workers already made epochs
    1.35× slower, see :func:`default_workers`)."""
    cores = available_cores()
    if num_workers > cores:
        warnings.warn(f"--workers {num_workers}: more DataLoader workers than the {cores} CPU "
                      f"core(s) available to this process; they will slow training down "
                      f"(the default, {default_workers()}, uses the cores training leaves "
                      f"free)", stacklevel=2)


def require_hdf5(path: str | Path) -> Path:
    """``path`` if it is an HDF5 file (``.h5``, ``.hdf5``, MATLAB v7.3), else a DataError."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    try:
        is_h5 = h5py.is_hdf5(path)
    except OSError:
        is_h5 = False
    if not is_h5:
        raise DataError(f"{path}: streaming needs an HDF5 file (.h5, .hdf5 or a MATLAB "
                        f"v7.3 .mat); convert it or train without --stream")
    return path


# per process: offset, shape and dtype of contiguous datasets, and read-only file descriptors
# (pread moves no shared file position, so descriptors inherited by forked workers are safe)
_LAYOUTS: dict[tuple, tuple | None] = {}
_FDS: dict[str, int] = {}


def _fd(path: Path) -> int:
    key = str(path)
    if key not in _FDS:
        _FDS[key] = os.open(path, os.O_RDONLY)
    return _FDS[key]


def _chunks(rows: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, rows.size, size):
        yield rows[start:start + size]


@dataclass
class StreamingData:
    """HDF5-backed training data with the interface :func:`niflow.train.loop.fit` uses.

    Attributes
    ----------
    stim : H5Array
        Logical shape (n_samples, height, width), or colour (n_samples, height, width, 3) or
        (n_samples, 3, height, width) (:mod:`niflow.data.layout`); batches are read in the
        network's layout (n, channels, height, width).
    sources : dict of str to H5Array
        Per area, logical shape (n_samples, n_voxels_in_file).
    split : Split
    scalers : dict of str to Standardizer
        Fitted on the training rows (train + validation) of the kept voxels.
    voxel_index : dict of str to ndarray of int
        Columns kept per area (NaN/Inf or constant voxels are dropped with a warning).
    stim_divisor : float
        Stimuli are divided by this (dtype maximum for integers, training-row peak for
        floats above 1, else 1).
    """

    stim: H5Array
    sources: dict[str, H5Array]
    split: Split
    scalers: dict[str, Standardizer]
    voxel_index: dict[str, np.ndarray]
    stim_divisor: float
    num_workers: int = 0
    _image_shape: tuple[int, int, int] = field(default=(1, 1, 1))
    pixel_mean: float = 0.0  # of the scaled training-row stimuli (for the model's input norm)
    pixel_std: float = 1.0
    stim_peak: float | None = None  # training-row peak of float stimuli (as Run.stim_peak)

    @property
    def areas(self) -> list[str]:
        return list(self.sources)

    @property
    def n_voxels(self) -> dict[str, int]:
        return {a: int(i.size) for a, i in self.voxel_index.items()}

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self._image_shape

    def read(self, rows: np.ndarray, fhs: dict | None = None,
             ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Scaled stimuli (n, C, H, W) float32 and z-scored responses for ``rows``.

        Rows are read in ascending order (HDF5 selections must be increasing) and returned
        in the order asked.
        """
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:  # a data-parallel share of a batch smaller than the process count
            return (np.zeros((0, *self.image_shape), np.float32),
                    {a: np.zeros((0, n), np.float32) for a, n in self.n_voxels.items()})
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        back = np.empty_like(order)
        back[order] = np.arange(order.size)
        fhs = fhs or {}
        x = channels_first(self.stim.read(sorted_rows, fhs.get("stim"))[back]
                           ).astype(np.float32)
        x /= np.float32(self.stim_divisor)
        y = {}
        for area, src in self.sources.items():
            raw = src.read(sorted_rows, fhs.get(area))[back][:, self.voxel_index[area]]
            y[area] = self.scalers[area].transform(raw)
        return x, y

    def iter_batches(self, plan: list[np.ndarray], pin_memory: bool = False,
                     ) -> Iterator[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
        """One batch per array of rows in ``plan``, in order, read by DataLoader workers.

        ``pin_memory`` (for training on a GPU): batches come in page-locked memory, so that
        the copies to the GPU can overlap with computation (``non_blocking``).
        """
        loader = torch.utils.data.DataLoader(
            _BatchReader(self, list(plan)), batch_size=None, shuffle=False,
            num_workers=self.num_workers, pin_memory=pin_memory,
            worker_init_fn=_open_files_in_worker,
            prefetch_factor=4 if self.num_workers else None,
            persistent_workers=False)
        yield from loader

    def load_rows(self, rows: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Rows in memory (for small subsets: validation, readout initialisation)."""
        return self.read(np.asarray(rows))


class _BatchReader(torch.utils.data.Dataset):
    def __init__(self, data: StreamingData, batches: list[np.ndarray]) -> None:
        self.data, self.batches, self.files = data, batches, None

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int):
        x, y = self.data.read(self.batches[i], self.files)
        return torch.from_numpy(x), {a: torch.from_numpy(v) for a, v in y.items()}


def _open_files_in_worker(_: int) -> None:
    info = torch.utils.data.get_worker_info()
    reader: _BatchReader = info.dataset
    d = reader.data
    reader.files = {"stim": h5py.File(d.stim.path, "r"),
                    **{a: h5py.File(s.path, "r") for a, s in d.sources.items()}}


def open_streaming(stim_path: str | Path, bold_path: str | Path, test_rows: np.ndarray,
                   areas: list[str] | None = None, val_fraction: float = 0.1, seed: int = 0,
                   stim_variable: str = "stim", chunk_rows: int = 2048,
                   num_workers: int = 2, stim_scale: str = "auto",
                   train_rows: np.ndarray | None = None) -> StreamingData:
    """Open HDF5 stimuli and responses for streaming; fit scalers in one chunked pass.

    Parameters
    ----------
    stim_path, bold_path : path
        HDF5 or MATLAB v7.3 files; ``bold_path`` holds one (n_samples, n_voxels) dataset per
        area (``areas`` selects them; default: every 2-D numeric dataset).
    test_rows : ndarray of int
        Held-out rows.
    train_rows : ndarray of int, optional
        Rows to train on (default: all rows not in ``test_rows``).
    chunk_rows : int
        Rows read at once while computing statistics (memory ∝ chunk_rows).
    num_workers : int
        DataLoader worker processes reading training batches (0: read in this process).
    stim_scale : str
        ``"auto"`` (integers / dtype maximum, floats / training-row peak if above 1) or
        ``"none"``, as ``config.data.stim_scale``.
    """
    stim = H5Array.open(stim_path, stim_variable)
    shape = stim.shape
    image = image_shape(shape, f"{stim_path}: variable {stim_variable!r}")
    n = shape[0]
    if areas is None:
        with h5py.File(bold_path, "r") as fh:
            areas = [k for k, v in fh.items() if isinstance(v, h5py.Dataset) and v.ndim == 2
                     and v.dtype.kind in "biuf"]
    sources = {a: H5Array.open(bold_path, a) for a in areas}
    for area, src in sources.items():
        if src.shape[0] != n:
            raise DataError(f"{bold_path}: area {area!r} has {src.shape[0]} rows but the "
                            f"stimuli have {n}; rows must match one to one")
    split = make_split(n, test_rows, val_fraction, seed, train_rows=train_rows)
    fit_rows = np.concatenate([split.train, split.val])
    fit_mask = np.zeros(n, bool)
    fit_mask[fit_rows] = True
    stats = {a: _RunningStats(src.shape[1]) for a, src in sources.items()}
    peak, px_n, px_s1, px_s2 = 0.0, 0, 0.0, 0.0
    with h5py.File(stim_path, "r") as sfh, h5py.File(bold_path, "r") as bfh:
        for rows in _chunks(np.arange(n), chunk_rows):
            fit = fit_mask[rows]
            block = stim.read(rows, sfh)
            if stim.dtype.kind == "f" and not np.isfinite(block).all():
                raise DataError(f"{stim_path}: variable {stim_variable!r} contains NaN or Inf")
            if fit.any():
                px = block[fit].astype(np.float64)
                peak = max(peak, float(np.abs(px).max()))
                px_n, px_s1, px_s2 = px_n + px.size, px_s1 + px.sum(), px_s2 + (px * px).sum()
            for area, src in sources.items():
                stats[area].add(src.read(rows, bfh), fit)
    voxel_index, scalers = {}, {}
    for area, st in stats.items():
        keep, scaler = st.finish(area)
        voxel_index[area], scalers[area] = keep, scaler
    if stim_scale == "none":
        divisor = 1.0
    elif stim.dtype.kind in "ui":
        divisor = float(np.iinfo(stim.dtype).max)
    else:
        divisor = peak if peak > 1.0 else 1.0
    px_mean = px_s1 / max(px_n, 1)
    px_std = float(np.sqrt(max(px_s2 / max(px_n, 1) - px_mean ** 2, 0.0)))
    return StreamingData(stim, sources, split, scalers, voxel_index, divisor, num_workers,
                         image, px_mean / divisor,
                         px_std / divisor, peak if stim.dtype.kind == "f" else None)


class _RunningStats:
    """Per-voxel sums over fitting rows and non-finite flags over all rows, in float64."""

    def __init__(self, n_voxels: int) -> None:
        self.n = 0
        self.s1 = np.zeros(n_voxels)
        self.s2 = np.zeros(n_voxels)
        self.finite = np.ones(n_voxels, bool)
        self.shift: np.ndarray | None = None

    def add(self, block: np.ndarray, fit: np.ndarray) -> None:
        block = block.astype(np.float64)
        self.finite &= np.isfinite(block).all(0)
        rows = np.where(np.isfinite(block), block, 0.0)[fit]
        if not rows.size:
            return
        if self.shift is None:  # shifting by a first estimate keeps the variance accurate
            self.shift = rows.mean(0)
        d = rows - self.shift
        self.n += rows.shape[0]
        self.s1 += d.sum(0)
        self.s2 += (d * d).sum(0)

    def finish(self, area: str) -> tuple[np.ndarray, Standardizer]:
        if self.n == 0 or self.shift is None:
            raise DataError(f"area {area!r}: no training rows")
        mean_d = self.s1 / self.n
        std = np.sqrt(np.maximum(self.s2 / self.n - mean_d ** 2, 0.0))
        mean = self.shift + mean_d
        varying = _varies(std, mean)
        keep = self.finite & varying
        if not keep.any():
            raise DataError(f"area {area!r}: none of its {keep.size} voxels is usable "
                            f"(NaN/Inf or constant on the training rows)")
        if not keep.all():
            warnings.warn(
                f"area {area!r}: dropped {int((~keep).sum())} of {keep.size} voxels "
                f"({int((~self.finite).sum())} with NaN/Inf, "
                f"{int((self.finite & ~varying).sum())} constant on the training rows); "
                f"outputs keep the input's voxel indices", DroppedVoxelsWarning, stacklevel=3)
        idx = np.flatnonzero(keep)
        return idx, Standardizer(mean[idx].astype(np.float32), std[idx].astype(np.float32))

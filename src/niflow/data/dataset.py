"""Splits, stimulus scaling and per-voxel z-scoring fitted on the training rows only."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from niflow.data.errors import DataError
from niflow.data.layout import channels_first


@dataclass(frozen=True)
class Split:
    """Row indices of the train, validation and test parts (disjoint, sorted)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def to_dict(self) -> dict[str, list[int]]:
        return {k: getattr(self, k).tolist() for k in ("train", "val", "test")}


def parse_rows(spec: str | Path | None, n_samples: int, name: str = "row spec") -> np.ndarray:
    """Row indices from a spec: ``"288:360"`` (Python slice), ``"0,5,9"``, or a file path.

    A file holds whitespace- or comma-separated integer indices (``.txt``/``.csv``) or an
    index array (``.npy``). Negative indices count from the end as in Python. ``name`` starts
    error messages (e.g. ``"test rows"``).

    Returns
    -------
    ndarray of shape (n_rows,), int64, sorted, unique, each in ``0 .. n_samples - 1``.
    """
    if spec is None or str(spec).strip() == "":
        return np.zeros(0, dtype=np.int64)
    text = str(spec).strip()
    path = Path(text)
    if path.suffix in (".txt", ".csv", ".npy") or path.is_file():
        if not path.is_file():
            raise DataError(f"{path}: row-index file not found")
        if path.suffix == ".npy":
            try:
                idx = np.asarray(np.load(path, allow_pickle=False))
            except Exception as err:  # format, pickle and OS errors
                raise DataError(f"{path}: not a readable .npy index file ({err})") from None
            if idx.dtype.kind == "f" and np.all(np.isfinite(idx)) and np.all(idx == np.round(idx)):
                idx = idx.astype(np.int64)  # e.g. indices saved as doubles
            if idx.dtype.kind not in "iu":
                raise DataError(f"{path}: row-index file must hold integers, got {idx.dtype}")
        else:
            try:
                tokens = path.read_text().replace(",", " ").split()
                idx = np.array([int(t) for t in tokens], dtype=np.int64)
            except (ValueError, OSError):  # UnicodeDecodeError is a ValueError
                raise DataError(f"{path}: row-index file must hold integers") from None
    elif ":" in text:
        parts = text.split(":")
        if len(parts) > 3:
            raise DataError(f"{name} {text!r}: expected start:stop or start:stop:step")
        try:
            bounds = [int(p) if p.strip() else None for p in parts]
        except ValueError:
            raise DataError(f"{name} {text!r}: start:stop must be integers") from None
        start, stop = bounds[0], bounds[1]
        for b in (start, stop):
            if b is not None and not -n_samples <= b <= n_samples:
                raise DataError(f"{name} {text!r}: bound {b} is outside 0..{n_samples}")
        if len(bounds) == 3 and bounds[2] == 0:
            raise DataError(f"{name} {text!r}: step must not be zero")
        idx = np.arange(n_samples)[slice(*bounds)]
    else:
        try:
            idx = np.array([int(t) for t in text.replace(",", " ").split()], dtype=np.int64)
        except ValueError:
            raise DataError(f"{name} {text!r}: expected start:stop, a list of integers, "
                            f"or a file of indices") from None
    idx = np.asarray(idx, dtype=np.int64).ravel()
    if idx.size and (idx.max() >= n_samples or idx.min() < -n_samples):
        raise DataError(f"{name} {text!r}: indices outside 0..{n_samples - 1}")
    idx = np.where(idx < 0, idx + n_samples, idx)
    if np.unique(idx).size != idx.size:
        raise DataError(f"{name} {text!r}: repeated indices")
    return np.sort(idx)


AUTO_ROWS = "auto"
BRAINS_SAMPLES = 360  # the BRAINS layout: 6 letters x 60 glyphs, the last 12 of each held out
BRAINS_TEST_ROWS = "288:360"


def is_auto(spec: object) -> bool:
    """True for the row spec ``"auto"`` (the command line's default ``--test-rows``)."""
    return isinstance(spec, str) and spec.strip().lower() == AUTO_ROWS


def auto_test_rows(n_samples: int, source: str = "the data") -> str:
    """What ``--test-rows auto`` means: the BRAINS convention ``"288:360"`` for exactly 360
    rows, and no guess for any other data set.

    Parameters
    ----------
    n_samples : int
    source : str
        Where the rows come from (the stimulus file), for the message.

    Returns
    -------
    str, ``BRAINS_TEST_ROWS``.

    Raises
    ------
    DataError
        For any other number of rows, suggesting the last 20% or ``niflow cv``.
    """
    if n_samples == BRAINS_SAMPLES:
        return BRAINS_TEST_ROWS
    start = n_samples - max(1, int(round(0.2 * n_samples)))
    raise DataError(f"{source}: {n_samples} samples, not the {BRAINS_SAMPLES} of the BRAINS "
                    f"layout, so there is no default test split; say which rows to hold out "
                    f"with --test-rows (e.g. --test-rows {start}:{n_samples}, the last 20%), "
                    f"or cross-validate a small data set with `niflow cv`")


def make_split(n_samples: int, test_rows: np.ndarray, val_fraction: float = 0.1,
               seed: int = 0, train_rows: np.ndarray | None = None) -> Split:
    """Split rows into train, validation and test parts.

    Training rows are ``train_rows`` if given (rows in neither list are left out), else all
    rows not in ``test_rows``; a seeded random ``val_fraction`` of them becomes the
    validation part used for early stopping.

    Parameters
    ----------
    n_samples : int
    test_rows : ndarray of shape (n_test,), int
    train_rows : ndarray of shape (n_train,), int, optional
        Must not share rows with ``test_rows``.
    """
    test = np.sort(np.asarray(test_rows, dtype=np.int64))
    if train_rows is None:
        rest = np.setdiff1d(np.arange(n_samples), test)
    else:
        rest = np.unique(np.asarray(train_rows, dtype=np.int64))
        shared = np.intersect1d(rest, test)
        if shared.size:
            shown = ", ".join(map(str, shared[:5])) + (", ..." if shared.size > 5 else "")
            raise DataError(f"train rows and test rows share {shared.size} row(s) ({shown}); "
                            f"held-out rows must never be trained on")
    source = (f"remain after removing {test.size} test rows of {n_samples}"
              if train_rows is None else "are given")
    if rest.size < 2:
        raise DataError(f"only {rest.size} training rows {source}")
    n_val = int(round(val_fraction * rest.size))
    if val_fraction > 0:
        n_val = max(n_val, 2)  # a correlation needs at least two rows
    if rest.size - n_val < 1:
        raise DataError(f"only {rest.size} training rows {source}: too few to also hold out "
                        f"{n_val} validation rows")
    rng = np.random.default_rng(seed)
    val = np.sort(rng.choice(rest, size=n_val, replace=False)) if n_val else rest[:0]
    train = np.setdiff1d(rest, val)
    return Split(train=train, val=val, test=test)


def _varies(std: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """True where a standard deviation is more than round-off.

    Relative to the values' own scale (above a millionth of the mean's magnitude: float32
    keeps about 7 digits), so responses in any unit keep their voxels, and above 1e-30 so
    that z-scores stay finite in float32.
    """
    return (std > 1e-6 * np.abs(mean)) & (std > 1e-30)


@dataclass
class Standardizer:
    """Per-voxel z-scoring. ``mean`` and ``std``: arrays of shape (n_voxels,).

    A voxel with zero variance on the fitting rows gets ``std = 1`` so it maps to zeros, not
    NaN.
    """

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, responses: np.ndarray) -> Standardizer:
        """Fit on ``responses`` of shape (n_rows, n_voxels), float."""
        mean = responses.mean(0, dtype=np.float64)
        std = responses.std(0, dtype=np.float64)
        std = np.where(_varies(std, mean), std, 1.0)
        return cls(mean.astype(np.float32), std.astype(np.float32))

    def transform(self, responses: np.ndarray) -> np.ndarray:
        return ((responses - self.mean) / self.std).astype(np.float32)

    def inverse(self, z: np.ndarray) -> np.ndarray:
        return (z * self.std + self.mean).astype(np.float32)


def scale_stimuli(stim: np.ndarray, mode: str = "auto", reference_max: float | None = None,
                  ) -> np.ndarray:
    """Float32 stimuli of shape (n, channels, height, width) in [0, 1] for ``mode="auto"``.

    Integers are divided by their dtype's maximum (uint8 → /255); floats whose maximum
    (``reference_max``, else their own) exceeds 1 are divided by it. A 3-D input gets a
    channel axis of 1; channel-last colour images ``(n, height, width, 3)`` are moved to
    ``(n, 3, height, width)`` (:func:`niflow.data.layout.channels_first`).
    """
    stim = channels_first(stim)
    out = stim.astype(np.float32)
    if mode == "none":
        return out
    if stim.dtype.kind in "ui":
        return out / np.float32(np.iinfo(stim.dtype).max)
    peak = float(np.abs(out).max()) if reference_max is None else float(reference_max)
    return out / np.float32(peak) if peak > 1.0 else out


@dataclass
class NIFData:
    """Stimuli and standardised responses with their split, ready for training.

    Attributes
    ----------
    stim : ndarray of shape (n_samples, channels, height, width), float32
    responses : dict of str to ndarray of shape (n_samples, n_voxels), float32
        z-scored with ``scalers`` (fitted on ``split.train``).
    raw : dict of str to ndarray of shape (n_samples, n_voxels)
        Responses as read.
    voxel_index : dict of str to ndarray of shape (n_voxels,)
        Column of each kept voxel in the input file.
    rows : ndarray of shape (n_samples,), int, optional
        Row of each sample in the input files when this holds only some of them (the
        held-out and reference rows of a streamed run); ``None``: all rows, in order.
    """

    stim: np.ndarray
    responses: dict[str, np.ndarray]
    raw: dict[str, np.ndarray]
    split: Split
    scalers: dict[str, Standardizer]
    voxel_index: dict[str, np.ndarray] = field(default_factory=dict)
    rows: np.ndarray | None = None

    def input_rows(self, local: np.ndarray) -> np.ndarray:
        """Rows of the input files for the sample positions ``local``."""
        return np.asarray(local) if self.rows is None else self.rows[local]

    @property
    def areas(self) -> list[str]:
        return list(self.responses)

    @property
    def n_voxels(self) -> dict[str, int]:
        return {a: r.shape[1] for a, r in self.responses.items()}

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.stim.shape[1:])  # type: ignore[return-value]


def build_dataset(stim: np.ndarray, responses: dict[str, np.ndarray], test_rows: np.ndarray,
                  val_fraction: float = 0.1, seed: int = 0, stim_scale: str = "auto", *,
                  split: Split | None = None, voxel_index: dict[str, np.ndarray] | None = None,
                  ) -> NIFData:
    """Check row counts, split, scale stimuli and z-score responses on the training rows.

    Parameters
    ----------
    stim : ndarray of shape (n_samples, height, width) or (n_samples, height, width, 3)
        Grey or colour; also (n_samples, 3, height, width) (:mod:`niflow.data.layout`).
    responses : dict of str to ndarray of shape (n_samples, n_voxels)
    test_rows : ndarray of int
        Held-out rows (never used for fitting anything, z-scoring included).
    split : Split, optional
        A split already made (by :mod:`niflow.data.validate`); ``test_rows``,
        ``val_fraction`` and ``seed`` are then ignored.
    voxel_index : dict of str to ndarray of int, optional
        Kept columns per area, already chosen; otherwise :func:`usable_voxels` chooses (and
        warns about) them.
    """
    n = stim.shape[0]
    for area, r in responses.items():
        if r.shape[0] != n:
            raise DataError(
                f"area {area!r} has {r.shape[0]} rows but the stimuli have {n}; rows must "
                f"match one to one")
    if split is None:
        split = make_split(n, test_rows, val_fraction, seed)
    fit_rows = np.concatenate([split.train, split.val])
    peak = None
    if np.asarray(stim).dtype.kind == "f":
        peak = float(np.abs(stim[fit_rows]).max())  # from training rows only, like z-scoring
    scaled = scale_stimuli(stim, stim_scale, reference_max=peak)
    index = voxel_index if voxel_index is not None else {
        a: usable_voxels(a, r, fit_rows) for a, r in responses.items()}
    raw = {a: r[:, index[a]] for a, r in responses.items()}
    scalers = {a: Standardizer.fit(r[fit_rows]) for a, r in raw.items()}
    z = {a: scalers[a].transform(r) for a, r in raw.items()}
    return NIFData(stim=scaled, responses=z, raw=raw, split=split, scalers=scalers,
                   voxel_index=index)


def voxel_usability(responses: np.ndarray, fit_rows: np.ndarray,
                    repeats: np.ndarray | None = None,
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which voxels can be fitted.

    Parameters
    ----------
    responses : ndarray of shape (n_samples, n_voxels)
    fit_rows : ndarray of int
        Rows the model is fitted on (training and validation).
    repeats : ndarray of shape (n_repeats, n_test, n_voxels), optional
        Separate repeats of the test rows (their noise ceiling).

    Returns
    -------
    keep, nonfinite, constant : ndarray of shape (n_voxels,), bool
        ``nonfinite``: NaN or Inf in any row or repeat (test rows too: such a voxel cannot
        be scored); ``constant``: finite but without variance on ``fit_rows``; ``keep``:
        neither.
    """
    nonfinite = ~np.isfinite(responses).all(0)
    if repeats is not None:
        nonfinite |= ~np.isfinite(repeats).all(axis=(0, 1))
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns are counted above
        fit = responses[fit_rows].astype(np.float64)
        varying = _varies(np.nanstd(fit, axis=0), np.nanmean(fit, axis=0))
    constant = ~nonfinite & ~varying
    return ~nonfinite & ~constant, nonfinite, constant


def dropped_voxels_message(where: str, keep: np.ndarray, nonfinite: np.ndarray,
                           constant: np.ndarray) -> str:
    """One line saying how many voxels of one area were dropped and why."""
    return (f"{where}: dropped {int((~keep).sum())} of {keep.size} voxels "
            f"({int(nonfinite.sum())} with NaN/Inf, {int(constant.sum())} constant on the "
            f"training rows); outputs keep the input's voxel indices")


def usable_voxel_columns(responses: dict[str, np.ndarray], fit_rows: np.ndarray,
                         source: str | None = None,
                         repeats: dict[str, np.ndarray | None] | None = None,
                         ) -> tuple[dict[str, np.ndarray], list[str]]:
    """The columns of every area worth fitting (:func:`voxel_usability`), and one line per
    area with dropped voxels (for the caller to report).

    Parameters
    ----------
    responses : dict of str to ndarray of shape (n_samples, n_voxels)
    fit_rows : ndarray of int
    source : str, optional
        The response file, for messages (``"<source>: variable 'V1'"``; else ``"area 'V1'"``).
    repeats : dict of str to ndarray of shape (n_repeats, n_test, n_voxels) or None, optional

    Returns
    -------
    index : dict of str to ndarray of int
        Kept columns (indices into the input), ascending.
    notes : list of str

    Raises
    ------
    DataError
        An area without a usable voxel.
    """
    index, notes = {}, []
    for area, r in responses.items():
        keep, nonfinite, constant = voxel_usability(r, fit_rows, (repeats or {}).get(area))
        where = f"area {area!r}" if source is None else f"{source}: variable {area!r}"
        if not keep.any():
            raise DataError(f"{where}: none of its {keep.size} voxels is usable "
                            f"({int(nonfinite.sum())} with NaN/Inf, {int(constant.sum())} "
                            f"constant on the training rows); check the mask and the export")
        if not keep.all():
            notes.append(dropped_voxels_message(where, keep, nonfinite, constant))
        index[area] = np.flatnonzero(keep)
    return index, notes


def usable_voxels(area: str, responses: np.ndarray, fit_rows: np.ndarray) -> np.ndarray:
    """Columns of ``responses`` (n_samples, n_voxels) worth fitting: finite in every row and
    not constant on the fitting rows. Dropped voxels are reported in one warning per area.

    Returns
    -------
    ndarray of int, the kept columns (indices into the input).
    """
    index, notes = usable_voxel_columns({area: responses}, fit_rows)
    for note in notes:
        warnings.warn(note, DroppedVoxelsWarning, stacklevel=3)
    return index[area]


class DroppedVoxelsWarning(UserWarning):
    """Some voxels were left out of fitting (NaN/Inf or constant)."""

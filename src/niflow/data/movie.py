"""Movie fMRI: the file contract, its timing, and splits by run.

Contract (HDF5 first; ``.npz`` and MATLAB files are read the same way):

* stimulus file: ``stim`` of shape (n_frames, H, W) or (n_frames, H, W, 3), uint8 or float;
  ``fps`` (scalar, frames per second); optional ``run`` (n_frames,) integer run labels
  (absent: one run);
* response file: one variable per area of shape (n_TR, n_voxels); ``tr`` (scalar, seconds);
  optional ``run`` (n_TR,); optional ``<AREA>_repeats`` (n_repeats, n_TR_test, n_voxels),
  the separate repeats of the test run(s), whose mean is in ``<AREA>``.

Timing: frame ``i`` of a run is shown at ``i / fps`` seconds from that run's start; volume
``j`` of a run is acquired at ``j * tr`` seconds and reflects what was shown before it (frames
whose onset is earlier than ``j * tr``). Runs are concatenated in order in both files, with
the same labels in the same order, and each run lasts as long in both (within one TR: a scan
stops on a whole volume).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from niflow.data.errors import DataError
from niflow.data.io import load_arrays
from niflow.data.repeats import (
    REPEATS_SUFFIX,
    check_repeats,
    default_test_runs,
    test_repeats,
)
from niflow.data.stream import H5Array
from niflow.data.validate import transposed_responses_message

__all__ = ["REPEATS_SUFFIX", "MovieFiles", "MovieTiming", "check_movie_timing",
           "check_repeats", "check_test_runs", "default_test_runs", "is_movie_data",
           "movie_split", "parse_runs", "read_movie", "read_scalar", "run_labels"]

RESERVED = ("fps", "tr", "run")


def read_scalar(arrays: dict[str, np.ndarray], name: str, path: str | Path, meaning: str,
                ) -> float:
    """A positive, finite scalar variable, e.g. ``fps`` or ``tr``.

    Parameters
    ----------
    arrays : dict of str to ndarray
        The file's variables.
    name : str
        Variable to read.
    path : str or Path
        The file, for messages.
    meaning : str
        What the variable is, for the message when it is missing (``"frames per second"``).
    """
    if name not in arrays:
        raise DataError(f"{path}: variable {name!r} not found; a movie data set needs {name} "
                        f"({meaning}, a scalar), e.g. with h5py: f[{name!r}] = ...")
    value = np.asarray(arrays[name])
    if value.size != 1 or value.dtype.kind not in "biuf":
        raise DataError(f"{path}: variable {name!r} must be one number ({meaning}); got shape "
                        f"{value.shape} of {value.dtype}")
    out = float(value.reshape(()))
    if not math.isfinite(out) or out <= 0:
        raise DataError(f"{path}: variable {name!r} = {out} must be positive ({meaning})")
    return out


def run_labels(arrays: dict[str, np.ndarray], n_rows: int, rows: str, path: str | Path,
               ) -> np.ndarray:
    """The ``run`` variable, checked: one integer label per row, runs contiguous.

    Parameters
    ----------
    arrays : dict of str to ndarray
    n_rows : int
        Frames (stimulus file) or volumes (response file).
    rows : str
        ``"frames"`` or ``"volumes"``, for messages.
    path : str or Path

    Returns
    -------
    ndarray of shape (n_rows,), int64
        All zeros without a ``run`` variable (one run).
    """
    if "run" not in arrays:
        return np.zeros(n_rows, dtype=np.int64)
    lab = np.asarray(arrays["run"]).reshape(-1)
    if lab.size != n_rows:
        raise DataError(f"{path}: variable 'run' has {lab.size} labels but there are {n_rows} "
                        f"{rows}; give one run label per {rows[:-1]}")
    if lab.dtype.kind == "f" and not np.all(np.isfinite(lab) & (lab == np.round(lab))):
        raise DataError(f"{path}: variable 'run' must hold integer run labels")
    if lab.dtype.kind not in "biuf":
        raise DataError(f"{path}: variable 'run' must hold integer run labels, not {lab.dtype}")
    lab = lab.astype(np.int64)
    starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]])
    if len(np.unique(lab)) != starts.size:
        again = next(int(v) for v in lab[starts] if np.sum(lab[starts] == v) > 1)
        raise DataError(f"{path}: run {again} appears in more than one stretch of 'run'; runs "
                        f"must be concatenated in order, each run's {rows} together")
    return lab


def _runs_in_order(labels: np.ndarray) -> list[int]:
    starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
    return [int(v) for v in labels[starts]]


@dataclass(frozen=True)
class MovieTiming:
    """When each frame was shown and each volume acquired, run by run.

    Attributes
    ----------
    fps : float
        Frames per second.
    tr : float
        Seconds per volume.
    frame_run : ndarray of shape (n_frames,), int64
        Run label of each frame.
    volume_run : ndarray of shape (n_TR,), int64
        Run label of each volume.
    """

    fps: float
    tr: float
    frame_run: np.ndarray
    volume_run: np.ndarray

    @property
    def runs(self) -> list[int]:
        """Run labels in the order of the files."""
        return _runs_in_order(self.volume_run)

    @property
    def n_frames(self) -> int:
        return int(self.frame_run.size)

    @property
    def n_volumes(self) -> int:
        return int(self.volume_run.size)

    def frame_span(self, run: int) -> tuple[int, int]:
        """``(start, stop)`` of the run's frames in the concatenated stimulus."""
        idx = np.flatnonzero(self.frame_run == run)
        return int(idx[0]), int(idx[-1]) + 1

    def volume_span(self, run: int) -> tuple[int, int]:
        """``(start, stop)`` of the run's volumes in the concatenated responses."""
        idx = np.flatnonzero(self.volume_run == run)
        return int(idx[0]), int(idx[-1]) + 1

    def volumes_of(self, runs: list[int] | np.ndarray) -> np.ndarray:
        """Indices (n,) of the volumes of ``runs``, in file order."""
        return np.flatnonzero(np.isin(self.volume_run, np.asarray(runs, dtype=np.int64)))

    def frames_before(self, volumes: np.ndarray, n_window: int) -> np.ndarray:
        """The last ``n_window`` frames shown before each volume, within its own run.

        Parameters
        ----------
        volumes : ndarray of shape (n,), int
            Volume indices into the concatenated responses.
        n_window : int
            Frames per window.

        Returns
        -------
        ndarray of shape (n, n_window), int64
            Frame indices into the concatenated stimulus, oldest first; ``-1`` where the
            window reaches back before the run's first frame (no window crosses a run
            boundary).
        """
        volumes = np.asarray(volumes, dtype=np.int64)
        out = np.full((volumes.size, n_window), -1, dtype=np.int64)
        offsets = np.arange(-n_window, 0)
        for run in np.unique(self.volume_run[volumes]):
            sel = self.volume_run[volumes] == run
            v0, _ = self.volume_span(int(run))
            f0, f1 = self.frame_span(int(run))
            t = (volumes[sel] - v0) * self.tr
            # frames with onset i / fps < t: i < t * fps; the small tolerance keeps a frame
            # whose onset coincides with the acquisition (t * fps integral) out of it
            stop = np.ceil(t * self.fps - 1e-9).astype(np.int64)
            stop = np.minimum(stop, f1 - f0)
            idx = stop[:, None] + offsets[None, :]
            out[sel] = np.where(idx >= 0, idx + f0, -1)
        return out


def check_movie_timing(stim_arrays: dict[str, np.ndarray], n_frames: int,
                       bold_arrays: dict[str, np.ndarray], n_volumes: int,
                       stim_path: str | Path, bold_path: str | Path) -> MovieTiming:
    """Read ``fps``, ``tr`` and the run labels of both files; check that runs agree.

    Parameters
    ----------
    stim_arrays, bold_arrays : dict of str to ndarray
        The variables of the stimulus and response files (``stim`` and the areas may be
        left out; only ``fps``/``tr``/``run`` are read).
    n_frames, n_volumes : int
        Rows of ``stim`` and of the area variables.
    stim_path, bold_path : str or Path
        The files, for messages.

    Returns
    -------
    MovieTiming

    Raises
    ------
    DataError
        Missing or invalid ``fps``/``tr``/``run``; runs that differ between the files, in
        their labels, their order or their duration (more than one TR apart).
    """
    fps = read_scalar(stim_arrays, "fps", stim_path, "frames per second")
    tr = read_scalar(bold_arrays, "tr", bold_path, "seconds per volume")
    frame_run = run_labels(stim_arrays, n_frames, "frames", stim_path)
    volume_run = run_labels(bold_arrays, n_volumes, "volumes", bold_path)
    stim_runs, bold_runs = _runs_in_order(frame_run), _runs_in_order(volume_run)
    if stim_runs != bold_runs:
        raise DataError(f"{stim_path} has runs {stim_runs} but {bold_path} has runs "
                        f"{bold_runs}; both files must hold the same runs in the same order")
    for run in stim_runs:
        frames = int(np.sum(frame_run == run))
        volumes = int(np.sum(volume_run == run))
        movie_s, bold_s = frames / fps, volumes * tr
        if abs(movie_s - bold_s) > tr + 1e-9:
            raise DataError(
                f"run {run}: the movie lasts {movie_s:.1f} s ({frames} frames at {fps:g} fps, "
                f"{stim_path}) but the BOLD {bold_s:.1f} s ({volumes} volumes at TR {tr:g} s, "
                f"{bold_path}); each run must last as long in both files (within one TR): "
                f"check fps, tr and the run labels")
    return MovieTiming(fps, tr, frame_run, volume_run)


def check_test_runs(timing: MovieTiming, test_runs: list[int], source: str) -> list[int]:
    """The test runs, each one a run of the data."""
    unknown = [r for r in test_runs if r not in timing.runs]
    if unknown:
        raise DataError(f"test run(s) {unknown} not found in {source}; its runs are "
                        f"{timing.runs}")
    if len(set(test_runs)) == len(timing.runs):
        raise DataError(f"test runs {test_runs} leave no run of {source} to train on")
    return list(test_runs)


def movie_split(timing: MovieTiming, test_runs: list[int], val_fraction: float, seed: int,
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train, validation and test volumes, split by whole runs.

    Validation takes whole training runs (about ``val_fraction`` of them, at least one) when
    there are two or more; with a single training run it takes the run's last
    ``val_fraction`` of volumes, after a gap of 30 s so that no haemodynamic response spans
    both parts.

    Returns
    -------
    train, val, test : ndarray of int64
        Volume indices.
    """
    test = timing.volumes_of(test_runs)
    train_runs = [r for r in timing.runs if r not in test_runs]
    if len(train_runs) >= 2:
        rng = np.random.default_rng(seed)
        n_val = min(len(train_runs) - 1, max(1, round(val_fraction * len(train_runs))))
        val_runs = sorted(rng.choice(train_runs, size=n_val, replace=False).tolist())
        fit_runs = [r for r in train_runs if r not in val_runs]
        return timing.volumes_of(fit_runs), timing.volumes_of(val_runs), test
    rows = timing.volumes_of(train_runs)
    n_val = max(1, int(round(val_fraction * rows.size)))
    gap = int(math.ceil(30.0 / timing.tr))
    if rows.size - n_val - gap < 1:
        raise DataError(f"one training run of {rows.size} volumes is too short to hold out "
                        f"validation volumes after a {gap}-volume gap; add runs")
    return rows[: rows.size - n_val - gap], rows[rows.size - n_val:], test


def parse_runs(spec: str, what: str = "--test-runs") -> list[int]:
    """``"8"`` or ``"7,8"`` → run labels."""
    try:
        runs = [int(v) for v in str(spec).split(",") if v.strip()]
    except ValueError:
        raise DataError(f"{what} {spec!r}: give run labels as integers, e.g. 8 or 7,8") \
            from None
    if not runs:
        raise DataError(f"{what} {spec!r}: give at least one run label")
    return runs


def _is_hdf5_path(path: Path) -> bool:
    if not path.is_file():
        return False
    with open(path, "rb") as fh:
        return fh.read(8) == b"\x89HDF\r\n\x1a\n" or (fh.seek(512) == 512 and
                                                       fh.read(8) == b"\x89HDF\r\n\x1a\n")


def _small_hdf5_variables(path: Path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    import h5py

    with h5py.File(path, "r") as fh:
        return {n: np.asarray(fh[n][()]) for n in names if n in fh}


def _variable_names(path: Path) -> set[str]:
    """Names of a file's variables, read without loading them (empty if it cannot be read:
    the loaders then say what is wrong with it)."""
    import zipfile

    import scipy.io

    from niflow.data.io import _check_mat5_structure

    try:
        if not path.is_file():
            return set()
        if _is_hdf5_path(path):
            import h5py

            with h5py.File(path, "r") as fh:
                return set(fh.keys())
        suffix = path.suffix.lower()
        if suffix == ".npz" and zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                return {n[:-4] if n.endswith(".npy") else n for n in zf.namelist()}
        if suffix == ".mat":
            _check_mat5_structure(path)  # scipy trusts the file; a damaged one can crash it
            return {name for name, _, _ in scipy.io.whosmat(path)}
    except Exception:  # unreadable here means "not recognised as a movie"
        return set()
    return set()


def is_movie_data(stim_path: str | Path, bold_path: str | Path) -> bool:
    """Whether two files hold a movie data set: the response file has ``tr`` or the
    stimulus file has ``fps``.

    Only the variables' names are read (HDF5 and MATLAB v7.3 keys, ``.npz`` members, MATLAB
    v5 headers), the response file first; a file that cannot be read counts as not movie.

    Parameters
    ----------
    stim_path, bold_path : str or Path

    Returns
    -------
    bool
    """
    return ("tr" in _variable_names(Path(bold_path))
            or "fps" in _variable_names(Path(stim_path)))


@dataclass
class MovieFiles:
    """A movie data set as read: frames left on disk when they are in an HDF5 file.

    Attributes
    ----------
    stim : ndarray or H5Array, logical shape (n_frames, H, W) or (n_frames, H, W, 3)
    timing : MovieTiming
    responses : dict of str to ndarray of shape (n_TR, n_voxels)
    arrays : dict of str to ndarray
        Every variable of the response file (``<AREA>_repeats`` among them).
    sources : dict of str to str
        ``{"stim": path, "bold": path}``.
    """

    stim: np.ndarray | H5Array
    timing: MovieTiming
    responses: dict[str, np.ndarray]
    arrays: dict[str, np.ndarray]
    sources: dict[str, str]

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """``(channels, height, width)`` of one frame."""
        shape = tuple(int(s) for s in self.stim.shape[1:])
        return (shape[2], shape[0], shape[1]) if len(shape) == 3 else (1, *shape)

    def frames(self, idx: np.ndarray) -> np.ndarray:
        """Frames ``idx`` (sorted, unique) as the model takes them.

        Returns
        -------
        ndarray of shape (n, channels, height, width), float32
            Integers divided by their dtype's maximum; floats divided by the movie's peak
            (of up to 64 evenly spread frames) when it exceeds 1.
        """
        idx = np.asarray(idx, dtype=np.int64)
        raw = self.stim.read(idx) if isinstance(self.stim, H5Array) else self.stim[idx]
        x = np.asarray(raw, dtype=np.float32)
        if x.ndim == 4:
            x = x.transpose(0, 3, 1, 2)
        else:
            x = x[:, None]
        kind = np.dtype(self.stim.dtype)
        if kind.kind in "ui":
            return x / np.float32(np.iinfo(kind).max)
        peak = self.float_peak
        return x / np.float32(peak) if peak > 1 else x

    @functools.cached_property
    def float_peak(self) -> float:
        """Largest absolute value of up to 64 evenly spread frames (read once)."""
        n = int(self.stim.shape[0])
        sample = np.unique(np.linspace(0, n - 1, min(n, 64)).round().astype(np.int64))
        raw = self.stim.read(sample) if isinstance(self.stim, H5Array) else self.stim[sample]
        return float(np.abs(np.asarray(raw, dtype=np.float64)).max())

    def with_voxels(self, keep: dict[str, np.ndarray]) -> MovieFiles:
        """The same data set with only the columns ``keep[area]`` (indices, ascending) of
        each area, in its responses and in its ``<AREA>_repeats``; the frames are shared."""
        responses = {a: r[:, keep[a]] for a, r in self.responses.items()}
        arrays = dict(self.arrays)
        for a, cols in keep.items():
            arrays[a] = responses[a]
            name = a + REPEATS_SUFFIX
            if name in arrays:
                arrays[name] = np.asarray(arrays[name])[:, :, cols]
        return replace(self, responses=responses, arrays=arrays)

    def repeats(self, area: str, test_runs: list[int]) -> np.ndarray | None:
        """The test runs' repeats of ``area``, checked (None without them)."""
        n_test = int(self.timing.volumes_of(test_runs).size)
        return check_repeats(self.arrays, area, n_test, self.responses[area].shape[1],
                             self.sources["bold"])

    def test_repeats(self, area: str, test_runs: list[int],
                     columns: np.ndarray | None = None,
                     ) -> tuple[np.ndarray | None, str | None]:
        """:func:`niflow.data.repeats.test_repeats` of this data set."""
        return test_repeats(self, area, test_runs, columns)


def _check_frames(shape: tuple[int, ...], kind: str, path: Path, variable: str) -> None:
    where = f"{path}: variable {variable!r}"
    if kind not in "biuf":
        raise DataError(f"{where} is not numeric")
    if len(shape) == 4 and shape[3] != 3:
        raise DataError(f"{where} has shape {shape}; colour frames are (n_frames, H, W, 3)")
    if len(shape) not in (3, 4) or shape[0] < 1:
        raise DataError(f"{where} has shape {shape}; expected (n_frames, H, W) or "
                        f"(n_frames, H, W, 3)")


def _volume_count(responses: dict[str, np.ndarray], bold: dict[str, np.ndarray]) -> int:
    """Volumes the response file holds: its run labels' number, else the areas' most common
    first axis."""
    if "run" in bold:
        return int(np.asarray(bold["run"]).size)
    firsts = [r.shape[0] for r in responses.values()]
    return max(set(firsts), key=firsts.count)


def _check_transposed(shape: tuple[int, ...], small: dict[str, np.ndarray],
                      responses: dict[str, np.ndarray], bold: dict[str, np.ndarray],
                      stim_path: Path, variable: str, bold_path: Path) -> None:
    """One line, with the fix, for arrays whose last axis is the frame or volume axis
    (MATLAB's height × width × frames movies, voxel × volume matrices).

    The volume count comes from the response file's run labels or its other areas; the frame
    count from the stimulus file's run labels, else from the volumes' duration."""
    n_vol = _volume_count(responses, bold)
    for area, r in responses.items():
        if r.shape[0] != n_vol and r.shape[-1] == n_vol:
            raise DataError(transposed_responses_message(
                f"{bold_path}: variable {area!r}", area, r.shape, rows="n_TR"))
    if "run" in small:
        n_frames, slack = int(np.asarray(small["run"]).size), 0.0
    elif "fps" in small and "tr" in bold:
        fps = float(np.asarray(small["fps"]).reshape(-1)[0])
        tr = float(np.asarray(bold["tr"]).reshape(-1)[0])
        n_frames, slack = round(n_vol * tr * fps), fps * tr + 1
    else:
        return
    if len(shape) not in (3, 4) or abs(shape[0] - n_frames) <= slack \
            or abs(shape[-1] - n_frames) > slack:
        return
    if len(shape) == 3:
        want, perm = (shape[2], shape[0], shape[1]), "[3 1 2]"
    else:
        want, perm = (shape[3], shape[0], shape[1], shape[2]), "[4 1 2 3]"
    layout = "(n_frames, H, W)" if len(shape) == 3 else "(n_frames, H, W, 3)"
    raise DataError(f"{stim_path}: variable {variable!r} has shape {shape} and looks "
                    f"transposed: expected {layout} = {want}; move the frame axis first "
                    f"(numpy: np.moveaxis({variable}, -1, 0); MATLAB: {variable} = "
                    f"permute({variable}, {perm}))")


def read_movie(stim_path: str | Path, bold_path: str | Path, variable: str = "stim",
               ) -> MovieFiles:
    """Read and check a movie data set (see the module documentation for the contract).

    Raises
    ------
    DataError
        One line naming the file, the variable and the fix.
    """
    stim_path, bold_path = Path(stim_path), Path(bold_path)
    if not stim_path.is_file():
        raise DataError(f"{stim_path}: file not found")
    if stim_path.suffix.lower() in (".h5", ".hdf5", ".hdf", ".mat") and _is_hdf5_path(stim_path):
        stim: np.ndarray | H5Array = H5Array.open(stim_path, variable)
        small = _small_hdf5_variables(stim_path, ("fps", "run"))
        if stim.reversed_axes and "run" in small:
            small["run"] = small["run"].T
        kind = stim.dtype.kind
    else:
        arrays = load_arrays(stim_path)
        if variable not in arrays:
            raise DataError(f"{stim_path}: variable {variable!r} not found; variables are "
                            f"{sorted(arrays)}")
        stim, small, kind = arrays[variable], arrays, arrays[variable].dtype.kind
    bold = load_arrays(bold_path)
    responses = {k: np.atleast_2d(v.T).T for k, v in bold.items()
                 if k not in RESERVED and not k.endswith(REPEATS_SUFFIX)
                 and isinstance(v, np.ndarray) and v.dtype.kind in "biuf" and v.ndim in (1, 2)}
    if not responses:
        raise DataError(f"{bold_path}: no response variables; expected one (n_TR, n_voxels) "
                        f"array per area besides 'tr' and 'run'")
    _check_transposed(tuple(stim.shape), small, responses, bold, stim_path, variable,
                      bold_path)
    _check_frames(tuple(stim.shape), kind, stim_path, variable)
    n_tr = {a: r.shape[0] for a, r in responses.items()}
    if len(set(n_tr.values())) > 1:
        raise DataError(f"{bold_path}: areas have different numbers of volumes {n_tr}")
    timing = check_movie_timing(small, int(stim.shape[0]), bold, next(iter(n_tr.values())),
                                stim_path, bold_path)
    return MovieFiles(stim, timing, responses, bold,
                      {"stim": str(stim_path), "bold": str(bold_path)})

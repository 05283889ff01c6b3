"""The test runs' repeats (``<AREA>_repeats``): checked, matched to the runs they repeat,
and refused as a noise ceiling for other runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from niflow.data.errors import DataError

# a niflow.data.movie.MovieFiles (which imports this module, so it is not imported here)
MovieFiles = Any

__all__ = ["REPEATS_SUFFIX", "check_repeats", "default_test_runs", "test_repeats"]

REPEATS_SUFFIX = "_repeats"


def default_test_runs(files: MovieFiles) -> tuple[list[int], str]:
    """The runs to hold out when none are given, and why: the runs whose volumes the test
    repeats' mean (``<AREA>_repeats``) equals, else the last run.

    Raises
    ------
    DataError
        With a single run, or repeats that match no consecutive runs' volumes.
    """
    t, source = files.timing, files.sources["bold"]
    if len(t.runs) < 2:
        raise DataError(f"{source}: one run only; a movie run holds out whole runs: give "
                        f"--test-runs with two or more runs in the files")
    reps = {a: np.asarray(files.arrays[a + REPEATS_SUFFIX], dtype=np.float64)
            for a in files.responses if a + REPEATS_SUFFIX in files.arrays}
    if not reps:
        return [t.runs[-1]], "the last run (no <AREA>_repeats to say which)"
    counts = [t.volume_span(r)[1] - t.volume_span(r)[0] for r in t.runs]
    lengths = {rep.shape[1] for rep in reps.values() if rep.ndim == 3}
    for first in range(len(t.runs) - 1, -1, -1):  # blocks of runs, later ones first
        for last in range(len(t.runs) - (first == 0), first, -1):  # one run left to train
            if sum(counts[first:last]) not in lengths:  # only blocks of the repeats' length
                continue
            runs = list(t.runs[first:last])
            if all(_repeats_mean_is(files.responses[a][t.volumes_of(runs)], rep)
                   for a, rep in reps.items()):
                return runs, "the runs that <AREA>_repeats repeat"
    shapes = {a + REPEATS_SUFFIX: r.shape for a, r in reps.items()}
    raise DataError(f"{source}: the mean of {shapes} is not the volumes of any block of runs "
                    f"(run volumes {dict(zip(t.runs, counts, strict=True))}); give "
                    f"--test-runs")


def _repeats_mean_is(volumes: np.ndarray, repeats: np.ndarray) -> bool:
    if repeats.ndim != 3 or repeats.shape[1:] != volumes.shape:
        return False
    with np.errstate(invalid="ignore"):
        mean = repeats.mean(0)
    ok = np.isfinite(mean) & np.isfinite(volumes)
    scale = float(np.std(volumes[ok])) if ok.any() else 0.0
    return bool(ok.any()) and bool(np.allclose(mean[ok], volumes[ok], rtol=0,
                                               atol=1e-4 * scale + 1e-6))


def check_repeats(bold_arrays: dict[str, np.ndarray], area: str, n_test_volumes: int,
                  n_voxels: int, path: str | Path) -> np.ndarray | None:
    """``<AREA>_repeats`` of shape (n_repeats, n_TR_test, n_voxels), checked; None if absent."""
    name = area + REPEATS_SUFFIX
    if name not in bold_arrays:
        return None
    rep = np.asarray(bold_arrays[name])
    want = (n_test_volumes, n_voxels)
    if rep.ndim != 3 or rep.shape[1:] != want:
        raise DataError(f"{path}: variable {name!r} has shape {rep.shape}; expected "
                        f"(n_repeats, {want[0]}, {want[1]}): the repeats of the test run(s)' "
                        f"{want[0]} volumes for the {want[1]} voxels of {area!r}")
    if rep.shape[0] < 2:
        raise DataError(f"{path}: variable {name!r} holds {rep.shape[0]} repeat; a noise "
                        f"ceiling needs at least 2")
    return rep


def test_repeats(files: MovieFiles, area: str, test_runs: list[int],
                 columns: np.ndarray | None = None) -> tuple[np.ndarray | None, str | None]:
    """``<AREA>_repeats`` if they repeat ``test_runs``, else None and why.

    Repeats hold other runs when their length differs from the test runs' or their mean
    is not ``<AREA>`` on them (another run held out than the repeated one): they give
    no noise ceiling for these test runs. Malformed repeats raise as in
    :meth:`~niflow.data.movie.MovieFiles.repeats`. ``columns``: the voxels whose mean is
    compared (default all; an empty selection compares only the length), so that a voxel
    spoilt in ``<AREA>`` alone, and dropped, does not hide the others' ceiling.

    Returns
    -------
    repeats : ndarray of shape (n_repeats, n_test_TR, n_voxels) or None
    note : str or None
        One line saying why there is no noise ceiling (None when there are repeats of
        the test runs, or none at all).
    """
    name = area + REPEATS_SUFFIX
    if name not in files.arrays:
        return None, None
    test = files.timing.volumes_of(test_runs)
    shape = np.shape(files.arrays[name])
    if len(shape) == 3 and shape[1] != test.size:
        return None, (f"{name} holds {shape[1]} volumes but the test runs {test_runs} "
                      f"have {test.size}: repeats of other runs, so no noise ceiling "
                      f"for {area}")
    rep = files.repeats(area, test_runs)
    cols = (np.arange(rep.shape[2]) if columns is None
            else np.asarray(columns, dtype=np.int64))
    if cols.size and not _repeats_mean_is(np.asarray(files.responses[area])[test][:, cols],
                                          rep[:, :, cols]):
        return None, (f"the mean of {name} is not {area} on the test runs {test_runs}: "
                      f"repeats of other runs, so no noise ceiling for {area}")
    return rep, None

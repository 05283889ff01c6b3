"""Folds for cross-validation and the statistics computed over them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from niflow.data.errors import DataError
from niflow.evaluate.statistics import pearson_r

MIN_FOLD_ROWS = 3  # a fold's own Pearson r over two rows is always ±1


def make_folds(n_samples: int, k: int = 10, groups: Sequence | np.ndarray | None = None,
               seed: int = 0) -> np.ndarray:
    """A seeded partition of the rows into ``k`` folds of near-equal size.

    Without ``groups`` the fold sizes differ by at most one. With ``groups`` every group
    goes whole into one fold: the groups, in a seeded random order and then largest first,
    each join the fold that holds the fewest rows so far (greedy balancing).

    Parameters
    ----------
    n_samples : int
    k : int
        Number of folds, at least 2.
    groups : array_like of shape (n_samples,), optional
        A label per row (stimulus class, identity; any dtype).
    seed : int

    Returns
    -------
    ndarray of shape (n_samples,), int64
        The fold of each row; every fold holds at least ``MIN_FOLD_ROWS`` rows.

    Raises
    ------
    DataError
        ``k`` below 2, more folds than groups, or folds too small.
    """
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 2:
        raise DataError(f"k = {k!r}: cross-validation needs at least 2 folds")
    rng = np.random.default_rng(seed)
    if groups is None:
        folds = np.empty(n_samples, dtype=np.int64)
        folds[rng.permutation(n_samples)] = np.arange(n_samples) % k
    else:
        codes = group_codes(groups, n_samples)
        n_groups = int(codes.max()) + 1 if codes.size else 0
        if k > n_groups:
            raise DataError(f"k = {k} folds but only {n_groups} groups: whole groups stay in "
                            f"one fold, so k can be at most {n_groups}")
        sizes = np.bincount(codes, minlength=n_groups)
        order = rng.permutation(n_groups)
        order = order[np.argsort(-sizes[order], kind="stable")]  # ties keep the random order
        fold_of_group = np.empty(n_groups, dtype=np.int64)
        load = np.zeros(k, dtype=np.int64)
        for g in order:
            f = int(np.argmin(load))  # the emptiest fold (lowest index among equals)
            fold_of_group[g] = f
            load[f] += sizes[g]
        folds = fold_of_group[codes]
    counts = np.bincount(folds, minlength=k)
    if counts.min() < MIN_FOLD_ROWS:
        raise DataError(f"{k} folds of {n_samples} rows leave a fold of {int(counts.min())} "
                        f"row(s); every fold needs at least {MIN_FOLD_ROWS} (a correlation "
                        f"within the fold): use a smaller k")
    return folds


def group_codes(groups: Sequence | np.ndarray, n_samples: int) -> np.ndarray:
    """Group labels (any dtype) as integer codes 0 .. n_groups-1, shape (n_samples,)."""
    labels = np.asarray(groups)
    if labels.ndim == 2 and 1 in labels.shape:
        labels = labels.ravel()  # MATLAB keeps vectors as (1, n) or (n, 1)
    if labels.ndim != 1 or labels.size != n_samples:
        raise DataError(f"groups have shape {labels.shape}; expected one label per row, "
                        f"({n_samples},)")
    if labels.dtype.kind == "f" and not np.isfinite(labels).all():
        raise DataError(f"groups: {int((~np.isfinite(labels)).sum())} label(s) are NaN or "
                        f"Inf; every row needs a group")
    if labels.dtype.kind == "O":
        labels = labels.astype(str)
    return np.unique(labels, return_inverse=True)[1].astype(np.int64).ravel()


def fold_centred_r(pred: np.ndarray, true: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """:func:`niflow.data.simulate.scoring.fold_centred_r` of ``pred`` and ``true``
    (n_samples, n_voxels) with ``folds`` (n_samples,): shape (n_voxels,), NaN where a
    prediction is missing (not finite) in any row, 0 where nothing varies within the folds."""
    from niflow.data.simulate.scoring import fold_centred_r as centred

    p = np.array(pred, dtype=np.float64)
    missing = ~np.isfinite(p).all(0)
    p[:, missing] = 0.0
    return np.where(missing, np.nan, centred(p, true, folds))


def per_fold_r(pred: np.ndarray, true: np.ndarray, folds: np.ndarray, k: int) -> np.ndarray:
    """Each fold's own Pearson r.

    Returns
    -------
    ndarray of shape (k, n_voxels)
        NaN where the fold's prediction of a voxel is missing.
    """
    out = np.full((k, pred.shape[1]), np.nan)
    for f in range(k):
        rows = folds == f
        p = np.asarray(pred[rows], dtype=np.float64)
        ok = np.isfinite(p).all(0)
        out[f, ok] = pearson_r(p[:, ok], np.asarray(true[rows][:, ok], dtype=np.float64))
    return out

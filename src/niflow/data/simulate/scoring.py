"""Scores of fitted models against a simulation's ground truth (used by the benchmarks).

* :func:`accuracy_metrics` — median r, median per-voxel r / noise ceiling, share of voxels
  with r > 0.3.
* :func:`prf_metrics` — median pRF centre error and Spearman rho of estimated against true
  pRF size, over the voxels a model predicts (r > 0.3).
* :func:`check_rule` — the acceptance rule of the realistic-noise suite.
* :func:`kfold`, :func:`fold_centred_r` — k-fold rows and the fold-centred pooled r.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray
from scipy import stats

__all__ = [
    "R_GOOD",
    "RULE",
    "accuracy_metrics",
    "check_rule",
    "fold_centred_r",
    "kfold",
    "noise_ceiling",
    "pearson_columns",
    "prf_metrics",
]

R_GOOD = 0.3  # voxels predicted at least this well count as "predicted"
# The acceptance rule of the realistic-noise suite (see check_rule).
RULE = {"ridge_hard_ratio": 0.65, "min_ratio_when_hard": 0.8,
        "max_centre_error_px": {"V1": 1.5, "V2": 2.5}, "min_size_spearman": 0.6}


def noise_ceiling(reliability: NDArray, n_repeats: int) -> NDArray[np.float64]:
    """Highest expected r against the mean of ``n_repeats`` repeats: ``sqrt(n rho / (1 + (n -
    1) rho))`` (Spearman-Brown), shape of ``reliability``."""
    rho = np.asarray(reliability, dtype=np.float64)
    return np.sqrt(n_repeats * rho / (1 + (n_repeats - 1) * rho))


def pearson_columns(pred: NDArray, true: NDArray) -> NDArray[np.float64]:
    """Per-column Pearson r of (n, V) arrays; 0 where a column is constant."""
    p = np.asarray(pred, dtype=np.float64) - np.mean(pred, axis=0)
    t = np.asarray(true, dtype=np.float64) - np.mean(true, axis=0)
    den = np.sqrt((p**2).sum(0) * (t**2).sum(0))
    return np.where(den > 0, (p * t).sum(0) / np.where(den > 0, den, 1.0), 0.0)


def kfold(n: int, k: int, seed: int = 0) -> NDArray[np.int64]:
    """Fold (0 .. k-1) of each of ``n`` rows: a seeded permutation cut into near-equal parts."""
    folds = np.empty(n, dtype=np.int64)
    folds[np.random.default_rng(seed).permutation(n)] = np.arange(n) % k
    return folds


def fold_centred_r(pred: NDArray, true: NDArray, folds: NDArray) -> NDArray[np.float64]:
    """Pearson r over all rows of out-of-fold predictions after centring both within folds.

    Centring removes each fold's own offset (a model refitted per fold predicts the mean of
    other rows), so only the within-fold tracking of the responses is scored.

    Parameters
    ----------
    pred, true : ndarray of shape (n_samples, n_voxels)
    folds : ndarray of shape (n_samples,), int

    Returns
    -------
    ndarray of shape (n_voxels,)
    """
    p = np.array(pred, dtype=np.float64)
    t = np.array(true, dtype=np.float64)
    for f in np.unique(folds):
        rows = folds == f
        p[rows] -= p[rows].mean(0)
        t[rows] -= t[rows].mean(0)
    return pearson_columns(p, t)


def accuracy_metrics(r: NDArray, ceiling: NDArray) -> dict[str, float]:
    """``median_r``, ``median_r_over_ceiling`` (median of the per-voxel ratio) and
    ``frac_r_gt_0.3`` of per-voxel r (V,) against per-voxel ceilings (V,); NaN r ignored."""
    r = np.asarray(r, dtype=np.float64)
    ok = np.isfinite(r)
    return {"median_r": float(np.median(r[ok])) if ok.any() else float("nan"),
            "median_r_over_ceiling": float(np.median(r[ok] / ceiling[ok])) if ok.any()
            else float("nan"),
            "frac_r_gt_0.3": float(np.mean(r[ok] > R_GOOD)) if ok.any() else float("nan")}


def prf_metrics(est: Mapping[str, NDArray], truth: Mapping[str, NDArray],
                keep: NDArray[np.bool_]) -> dict[str, float]:
    """pRF recovery over the voxels where ``keep`` (V,).

    Parameters
    ----------
    est, truth : mapping with ``prf_x``, ``prf_y``, ``prf_sigma`` of shape (V,), pixels
    keep : ndarray of shape (V,), bool

    Returns
    -------
    dict
        ``n_voxels``, ``centre_error_px`` (median distance), ``size_spearman`` (Spearman rho
        of estimated against true ``prf_sigma``; NaN for fewer than 3 voxels).
    """
    keep = np.asarray(keep, dtype=bool) & np.isfinite(est["prf_x"]) & np.isfinite(est["prf_y"])
    dist = np.hypot(est["prf_x"] - truth["prf_x"], est["prf_y"] - truth["prf_y"])[keep]
    rho = float("nan")
    if keep.sum() >= 3:
        rho = float(stats.spearmanr(est["prf_sigma"][keep], truth["prf_sigma"][keep])[0])
    return {"n_voxels": int(keep.sum()),
            "centre_error_px": float(np.median(dist)) if dist.size else float("nan"),
            "size_spearman": rho}


def check_rule(area: str, models: Mapping[str, Mapping[str, float]],
               prf: Mapping[str, float]) -> list[str]:
    """Failures of the acceptance rule for one regime and area (empty list: PASS).

    Parameters
    ----------
    area : str
    models : mapping
        :func:`accuracy_metrics` per model: ``"niflow"`` and one or more ridge baselines
        (every other key).
    prf : mapping
        niflow's :func:`prf_metrics`.

    Notes
    -----
    niflow's median r and share of voxels with r > 0.3 must exceed every baseline's; where
    the best baseline reaches at most 0.65 of the ceiling, niflow must reach 0.8; the median
    pRF centre error must be below 1.5 px in V1 and 2.5 px in V2 (other areas: 2.5 px) and
    the size Spearman rho at least 0.6.
    """
    nif = models["niflow"]
    ridge = [m for k, m in models.items() if k != "niflow"]
    fails = []
    best_r = max(m["median_r"] for m in ridge)
    best_frac = max(m["frac_r_gt_0.3"] for m in ridge)
    best_ratio = max(m["median_r_over_ceiling"] for m in ridge)
    if not nif["median_r"] > best_r:
        fails.append(f"median r {nif['median_r']:.3f} <= ridge {best_r:.3f}")
    if not nif["frac_r_gt_0.3"] > best_frac:
        fails.append(f"frac>0.3 {nif['frac_r_gt_0.3']:.2f} <= ridge {best_frac:.2f}")
    if best_ratio <= RULE["ridge_hard_ratio"] and not (
            nif["median_r_over_ceiling"] >= RULE["min_ratio_when_hard"]):
        fails.append(f"r/ceiling {nif['median_r_over_ceiling']:.2f} < 0.8")
    limit = RULE["max_centre_error_px"].get(area, 2.5)
    if not prf["centre_error_px"] < limit:
        fails.append(f"centre error {prf['centre_error_px']:.2f} px >= {limit}")
    if not prf["size_spearman"] >= RULE["min_size_spearman"]:
        fails.append(f"size rho {prf['size_spearman']:.2f} < 0.6")
    return fails

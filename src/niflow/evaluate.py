"""Held-out statistics: per-voxel Pearson r and R², summarised per area."""

from __future__ import annotations

import numpy as np


def pearson_r(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per-column Pearson correlation.

    Parameters
    ----------
    pred, true : ndarray of shape (n_samples, n_voxels)

    Returns
    -------
    ndarray of shape (n_voxels,)
        0 where either column is constant (no linear relation can be measured).
    """
    if pred.shape != true.shape:
        raise ValueError(f"pred {pred.shape} and true {true.shape} must have the same shape")
    p = pred - pred.mean(0, dtype=np.float64)
    t = true - true.mean(0, dtype=np.float64)
    denom = np.sqrt((p * p).sum(0) * (t * t).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (p * t).sum(0) / denom
    return np.where(denom > 0, r, 0.0)


def r_squared(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per-column coefficient of determination 1 − SS_res / SS_tot, shape (n_voxels,)."""
    if pred.shape != true.shape:
        raise ValueError(f"pred {pred.shape} and true {true.shape} must have the same shape")
    ss_res = ((true - pred) ** 2).sum(0, dtype=np.float64)
    ss_tot = ((true - true.mean(0, dtype=np.float64)) ** 2).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ss_tot > 0, 1.0 - ss_res / ss_tot, 0.0)


def summarize(r: np.ndarray) -> dict[str, float]:
    """Area summary of per-voxel r: n_voxels, median_r, mean_r, frac_r_above_0.3.

    Statistics are over the finite values of ``r`` (shape (n_voxels,)); ``None`` if none.
    """
    r = np.asarray(r, dtype=np.float64)
    n_voxels = int(r.size)
    r = r[np.isfinite(r)]
    if not r.size:  # nothing scored: say so (JSON null) rather than invent a number
        return {"n_voxels": n_voxels, "median_r": None, "mean_r": None,
                "frac_r_above_0.3": None}
    return {
        "n_voxels": n_voxels,
        "median_r": float(np.median(r)),
        "mean_r": float(r.mean()),
        "frac_r_above_0.3": float((r > 0.3).mean()),
    }


def score(pred: dict[str, np.ndarray], true: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-voxel r for each area present in both mappings."""
    return {a: pearson_r(pred[a], true[a]) for a in pred if a in true}

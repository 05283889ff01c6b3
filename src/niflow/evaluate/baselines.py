"""Baselines on the same split: voxelwise ridge regression on pixels or Gabor-energy features.

The regularisation strength is chosen per voxel by efficient leave-one-out cross-validation
on the training rows only (scikit-learn's ``RidgeCV`` with ``alpha_per_target``); features
are standardised with the training rows' mean and standard deviation.

The Gabor-energy bank is fixed (not learned): quadrature pairs (even + odd Gabor) at
``n_orientations`` orientations and several wavelengths; each pair's local energy amplitude
``√(even² + odd²)`` is averaged over ``pool × pool`` pixel blocks, giving
``n_orientations · n_wavelengths · (H/pool) · (W/pool)`` features per image.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from niflow.data.dataset import scale_stimuli

DEFAULT_ALPHAS = np.logspace(-2, 6, 17)
FEATURE_SETS = ("pixels", "gabor")


def pixel_features(stim: np.ndarray) -> np.ndarray:
    """Flatten stimuli (n, [c,] h, w) to (n, c·h·w) float64."""
    return np.asarray(stim, dtype=np.float64).reshape(len(stim), -1)


def ridge_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                  alphas: np.ndarray = DEFAULT_ALPHAS) -> tuple[np.ndarray, np.ndarray]:
    """Fit ridge per voxel on training rows, predict test rows.

    Parameters
    ----------
    x_train : ndarray of shape (n_train, n_features)
    y_train : ndarray of shape (n_train, n_voxels)
    x_test : ndarray of shape (n_test, n_features)

    Returns
    -------
    pred : ndarray of shape (n_test, n_voxels)
    alpha : ndarray of shape (n_voxels,)
        The regularisation chosen for each voxel.
    """
    from sklearn.linear_model import RidgeCV  # imported here: slow, and only needed here

    mu, sd = x_train.mean(0), x_train.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    model = RidgeCV(alphas=alphas, alpha_per_target=True)
    model.fit((x_train - mu) / sd, y_train)
    alpha = np.broadcast_to(np.asarray(model.alpha_, dtype=np.float64), (y_train.shape[1],))
    return model.predict((x_test - mu) / sd), alpha


def gabor_kernel(wavelength: float, orientation_deg: float,
                 sigma_frac: float = 0.56) -> np.ndarray:
    """Complex Gabor kernel ``even + i·odd`` (:func:`niflow.model.filters.gabor_kernel`),
    here with an envelope σ of 0.56 wavelengths by default (about one octave of bandwidth).

    Returns
    -------
    ndarray of shape (2r+1, 2r+1), complex128
    """
    from niflow.model.filters import gabor_kernel as kernel

    return kernel(wavelength, orientation_deg, sigma_frac)


def default_wavelengths(width: int) -> tuple[float, ...]:
    """Three wavelengths, log-spaced from 4 px to a quarter of the image width."""
    return tuple(float(v) for v in np.geomspace(4.0, max(width / 4, 4.5), 3))


def gabor_energy_maps(stim: np.ndarray, n_orientations: int = 8,
                      wavelengths: tuple[float, ...] | None = None,
                      sigma_frac: float = 0.56) -> np.ndarray:
    """Local energy amplitude ``|I ∗ g|`` of every Gabor pair (zero padding, 'same' size).

    Parameters
    ----------
    stim : ndarray of shape (n, height, width) or (n, 1, height, width)

    Returns
    -------
    ndarray of shape (n, n_orientations · n_wavelengths, height, width), float32
        Channels orientation-major: ``channel = o · n_wavelengths + k``.
    """
    from scipy import signal  # imported here: slow, and only needed here

    x = np.asarray(stim, dtype=np.float64)
    if x.ndim == 4:
        if x.shape[1] != 1:
            x = x.mean(1)  # colour → luminance: the bank is defined on one channel
        else:
            x = x[:, 0]
    if x.ndim != 3:
        raise ValueError(f"stim must have shape (n, height, width), got {np.shape(stim)}")
    n, h, w = x.shape
    lams = wavelengths or default_wavelengths(w)
    out = np.empty((n, n_orientations * len(lams), h, w), dtype=np.float32)
    for o in range(n_orientations):
        for k, lam in enumerate(lams):
            kern = gabor_kernel(lam, 180.0 * o / n_orientations, sigma_frac)
            resp = signal.fftconvolve(x, kern[None], mode="same", axes=(1, 2))
            out[:, o * len(lams) + k] = np.abs(resp)
    return out


def gabor_features(stim: np.ndarray, n_orientations: int = 8,
                   wavelengths: tuple[float, ...] | None = None, pool: int = 4,
                   sigma_frac: float = 0.56, chunk: int = 64) -> np.ndarray:
    """Gabor-energy features pooled to a coarse grid (module docstring).

    Parameters
    ----------
    stim : ndarray of shape (n, height, width) or (n, 1, height, width)
        As loaded, uint8 or float; scaled to [0, 1] here by the training rule
        (:func:`niflow.data.dataset.scale_stimuli`: integers / dtype maximum, floats above 1
        / their maximum; already scaled stimuli are unchanged).
    pool : int
        Block size; the last partial block of a side is dropped.

    Returns
    -------
    ndarray of shape (n, n_orientations · n_wavelengths · (height // pool) · (width // pool))
        Feature order: channel (orientation-major), then block row, then block column.
    """
    stim = scale_stimuli(stim)
    n = len(stim)
    n_chan = n_orientations * len(wavelengths or default_wavelengths(np.shape(stim)[-1]))
    # images per pass, so the (images, channels, h, w) energy maps stay near 20 million values
    chunk = max(1, min(chunk, 20_000_000 // max(n_chan * int(np.prod(np.shape(stim)[-2:])), 1)))
    parts = []
    for i in range(0, n, chunk):
        e = gabor_energy_maps(stim[i:i + chunk], n_orientations, wavelengths, sigma_frac)
        b, c, h, w = e.shape
        hb, wb = h // pool, w // pool
        e = e[:, :, :hb * pool, :wb * pool].reshape(b, c, hb, pool, wb, pool).mean((3, 5))
        parts.append(e.reshape(b, -1).astype(np.float64))
    return np.concatenate(parts) if parts else np.zeros((0, 0))


def features(stim: np.ndarray, kind: str) -> np.ndarray:
    """Feature matrix (n, n_features) of scaled stimuli for a baseline ``kind``."""
    if kind == "pixels":
        return pixel_features(stim)
    if kind == "gabor":
        return gabor_features(stim)
    raise ValueError(f"unknown feature set {kind!r}; choose one of {FEATURE_SETS}")


def baseline_scores(stim: np.ndarray, responses: dict[str, np.ndarray], test_rows: np.ndarray,
                    kind: str = "pixels", train_rows: np.ndarray | None = None,
                    voxel_index: dict[str, np.ndarray] | None = None,
                    n_permutations: int = 1000, seed: int = 0) -> dict[str, dict]:
    """Voxelwise ridge on one feature set, scored on the test rows like the NIF model.

    Parameters
    ----------
    stim : ndarray of shape (n_samples, [c,] height, width)
        As loaded, uint8 or float; scaled to [0, 1] here as in :func:`gabor_features`.
    responses : dict of str to ndarray of shape (n_samples, n_voxels_in_file)
    test_rows : ndarray of int
    train_rows : ndarray of int, optional
        Default: every row not in ``test_rows`` (a NIF run's training and validation rows).
    voxel_index : dict of str to ndarray of int, optional
        Columns to fit per area (a run's ``voxel_index``); default all.

    Returns
    -------
    dict of area to {"voxel": (n_voxels,), "alpha": (n_voxels,), "pred": (n_test, n_voxels),
    "stats": :func:`niflow.evaluate.statistics.voxel_statistics`, "summary": area summary}
    """
    from niflow.evaluate.statistics import area_summary, voxel_statistics

    stim = scale_stimuli(stim)
    n = len(stim)
    test = np.asarray(test_rows, dtype=np.int64)
    train = (np.setdiff1d(np.arange(n), test) if train_rows is None
             else np.asarray(train_rows, dtype=np.int64))
    feats = features(stim, kind)
    out = {}
    for area, resp in responses.items():
        cols = (np.asarray(voxel_index[area]) if voxel_index is not None and area in voxel_index
                else np.arange(resp.shape[1]))
        y = np.asarray(resp, dtype=np.float64)[:, cols]
        pred, alpha = ridge_predict(feats[train], y[train], feats[test])
        stats = voxel_statistics(pred, y[test], n_permutations=n_permutations, seed=seed)
        out[area] = {"voxel": cols, "alpha": np.asarray(alpha), "pred": pred, "stats": stats,
                     "summary": area_summary(stats)}
    return out


def baseline_csv(kind: str) -> str:
    return f"baseline_{kind}.csv"


def write_baseline(results: dict[str, dict], out_dir: str | Path, kind: str,
                   info: dict | None = None) -> dict[str, Path]:
    """Write ``baseline_<kind>.csv`` (area, voxel, r_test, r2_test, p_perm, q_fdr, alpha and,
    where any voxel has a noise ceiling, noise_ceiling and r_normalised) and
    ``baseline_<kind>.json`` (per-area summaries, then ``info``, whose keys win) into
    ``out_dir``."""
    from niflow._atomic import atomic_write_text
    from niflow.evaluate.statistics import write_table

    out = Path(out_dir)
    cols: dict[str, list] = {k: [] for k in ("area", "voxel", "r_test", "r2_test", "p_perm",
                                             "q_fdr", "alpha")}
    ceiling = any(np.isfinite(r["stats"].get("noise_ceiling", np.nan)).any()
                  for r in results.values())
    if ceiling:
        cols.update(noise_ceiling=[], r_normalised=[])
    for area, res in results.items():
        n = len(res["voxel"])
        cols["area"] += [area] * n
        cols["voxel"] += [int(v) for v in res["voxel"]]
        cols["r_test"] += list(res["stats"]["r"])
        cols["r2_test"] += list(res["stats"]["r2"])
        cols["p_perm"] += list(res["stats"]["p_perm"])
        cols["q_fdr"] += list(res["stats"]["q_fdr"])
        cols["alpha"] += list(res["alpha"])
        if ceiling:
            cols["noise_ceiling"] += list(res["stats"]["noise_ceiling"])
            cols["r_normalised"] += list(res["stats"]["r_normalised"])
    csv_path = write_table(out / baseline_csv(kind), cols)
    payload = {"features": kind, "model": "voxelwise ridge (scikit-learn RidgeCV, per-voxel "
               "alpha by leave-one-out CV on the training rows)",
               "areas": {a: r["summary"] for a, r in results.items()}, **(info or {})}
    json_path = atomic_write_text(out / f"baseline_{kind}.json",
                                  json.dumps(payload, indent=2) + "\n")
    return {"csv": csv_path, "json": json_path}

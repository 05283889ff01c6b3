"""Held-out statistics: per-voxel Pearson r, R², noise ceilings, permutation p-values, FDR.

Everything here works on plain arrays (rows = samples, columns = voxels) so notebook users can
score any prediction; :func:`evaluate_run` and :func:`write_statistics` connect it to a run.

Noise ceiling
-------------
Where repeated measurements exist the ceiling is the **split-half reliability corrected with
Spearman–Brown**: the repeats are split into two halves, the two half-means are correlated on
the scored rows, and the correlation is stepped up to the reliability of the mean of all
repeats (``rel = k·r / (1 + (k−1)·r)``, ``k`` = repeats / repeats per half). The highest
correlation any model can reach against that mean is ``√rel``; ``r / √rel`` is the noise-
normalised r. The NSD-style noise-ceiling SNR (``ncsnr``, Allen et al. 2022) is reported
alongside it. Without repeats both are NaN and the summary says why: a ceiling is never
invented.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

CEILING_METHOD = "split-half reliability, Spearman-Brown corrected to the mean of all repeats"
NO_REPEATS_NOTE = "no repeated measurements given: noise ceiling unavailable"
# why a movie's volumes get no permutation p-values
TIME_SERIES_P_NOTE = "not computed for time series (row permutations ignore autocorrelation)"
DEFAULT_PERMUTATIONS = 1000


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


# ---------------------------------------------------------------------------------------------
# Noise ceilings
# ---------------------------------------------------------------------------------------------


def spearman_brown(reliability: np.ndarray | float, factor: float) -> np.ndarray:
    """Reliability of a measurement ``factor`` times as long: ``k·ρ / (1 + (k−1)·ρ)``.

    Parameters
    ----------
    reliability : float or ndarray of shape (n_voxels,)
        Reliability ρ of the shorter measurement (e.g. a correlation between two halves).
    factor : float
        Length ratio ``k`` (2 for two halves → their mean).

    Returns
    -------
    ndarray of the shape of ``reliability``
    """
    if factor <= 0:
        raise ValueError(f"factor must be > 0, got {factor}")
    rho = np.asarray(reliability, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return factor * rho / (1.0 + (factor - 1.0) * rho)


def _check_repeats(repeats: np.ndarray) -> np.ndarray:
    rep = np.asarray(repeats, dtype=np.float64)
    if rep.ndim != 3:
        raise ValueError(f"repeats must have shape (n_repeats, n_samples, n_voxels), "
                         f"got {rep.shape}")
    if rep.shape[0] < 2:
        raise ValueError(f"a noise ceiling needs at least 2 repeats, got {rep.shape[0]}")
    return rep


def split_half_reliability(repeats: np.ndarray, n_splits: int = 20, seed: int = 0,
                           ) -> np.ndarray:
    """Spearman–Brown-corrected split-half reliability of the mean of all repeats.

    Two repeats give one split (repeat 1 vs repeat 2). With more, ``n_splits`` random splits
    into two equal halves (one repeat left out of each split when the count is odd) are
    averaged, each stepped up by ``k = n_repeats / half``.

    Parameters
    ----------
    repeats : ndarray of shape (n_repeats, n_samples, n_voxels)

    Returns
    -------
    ndarray of shape (n_voxels,)
        Reliability of the mean of all repeats; may be negative for pure-noise voxels.
    """
    rep = _check_repeats(repeats)
    n_rep = rep.shape[0]
    half = n_rep // 2
    if n_rep == 2:
        splits = [(np.array([0]), np.array([1]))]
    else:
        rng = np.random.default_rng(seed)
        splits = []
        for _ in range(n_splits):
            perm = rng.permutation(n_rep)
            splits.append((perm[:half], perm[half:2 * half]))
    r_half = np.mean([pearson_r(rep[a].mean(0), rep[b].mean(0)) for a, b in splits], axis=0)
    return spearman_brown(r_half, n_rep / half)


def ncsnr(repeats: np.ndarray) -> np.ndarray:
    """NSD-style noise-ceiling signal-to-noise ratio σ_signal / σ_noise per voxel.

    σ²_noise is the mean over samples of the across-repeat variance (ddof 1); σ²_signal is the
    across-sample variance of the repeat mean minus σ²_noise / n_repeats (clipped at 0).

    Parameters
    ----------
    repeats : ndarray of shape (n_repeats, n_samples, n_voxels)

    Returns
    -------
    ndarray of shape (n_voxels,)
    """
    rep = _check_repeats(repeats)
    noise_var = rep.var(0, ddof=1).mean(0)
    signal_var = np.clip(rep.mean(0).var(0, ddof=1) - noise_var / rep.shape[0], 0, None)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(noise_var > 0, np.sqrt(signal_var / noise_var), np.inf)


def ncsnr_ceiling(snr: np.ndarray, n_repeats: int) -> np.ndarray:
    """Correlation ceiling from ``ncsnr`` for the mean of ``n_repeats`` repeats.

    The explained-variance ceiling is ``ncsnr² / (ncsnr² + 1/n)``; its square root bounds r.
    Shape follows ``snr`` (n_voxels,).
    """
    s2 = np.asarray(snr, dtype=np.float64) ** 2
    with np.errstate(invalid="ignore"):
        return np.sqrt(np.where(np.isinf(s2), 1.0, s2 / (s2 + 1.0 / n_repeats)))


def noise_ceiling(repeats: np.ndarray, n_splits: int = 20, seed: int = 0) -> np.ndarray:
    """Highest r a model can reach against the mean of the repeats: √ split-half reliability.

    Parameters
    ----------
    repeats : ndarray of shape (n_repeats, n_samples, n_voxels)

    Returns
    -------
    ndarray of shape (n_voxels,)
        NaN where the reliability is not positive (no signal to bound).
    """
    rel = split_half_reliability(repeats, n_splits, seed)
    with np.errstate(invalid="ignore"):
        return np.where(rel > 0, np.sqrt(np.clip(rel, 0, None)), np.nan)


# ---------------------------------------------------------------------------------------------
# Significance
# ---------------------------------------------------------------------------------------------


def _standardize_columns(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    a = a - a.mean(0)
    norm = np.sqrt((a * a).sum(0))
    return a / np.where(norm > 0, norm, 1.0)


def permutation_pvalues(pred: np.ndarray, true: np.ndarray,
                        n_permutations: int = DEFAULT_PERMUTATIONS, seed: int = 0,
                        chunk: int = 50) -> np.ndarray:
    """One-sided permutation p-value of each voxel's Pearson r (H1: r > 0).

    The rows of ``true`` are shuffled with the same permutations for every voxel (so the
    voxels' spatial correlations are kept), and ``p = (1 + #{r_perm ≥ r}) / (1 + n_perm)``,
    which is exact under exchangeability and never 0.

    Parameters
    ----------
    pred, true : ndarray of shape (n_samples, n_voxels)
    n_permutations : int
    seed : int

    Returns
    -------
    ndarray of shape (n_voxels,)
        In ``[1/(n_permutations+1), 1]``; 1 for constant columns.
    """
    if pred.shape != true.shape:
        raise ValueError(f"pred {pred.shape} and true {true.shape} must have the same shape")
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be >= 1, got {n_permutations}")
    p = _standardize_columns(pred)
    t = _standardize_columns(true)
    observed = (p * t).sum(0)
    # round-off in r must not count a permutation that reproduces the data as "smaller"
    tol = 1e-12
    exceed = np.zeros(observed.shape, dtype=np.int64)
    rng = np.random.default_rng(seed)
    n = p.shape[0]
    # permutations per step, so the (b, n, V) gathered copy stays near 5 million values
    chunk = max(1, min(chunk, 5_000_000 // max(t.size, 1)))
    done = 0
    while done < n_permutations:
        b = min(chunk, n_permutations - done)
        idx = np.argsort(rng.random((b, n)), axis=1)  # b independent permutations at once
        r_perm = np.einsum("bnv,nv->bv", t[idx], p)
        exceed += (r_perm >= observed - tol).sum(0)
        done += b
    pval = (1.0 + exceed) / (1.0 + n_permutations)
    constant = ~((np.abs(p).sum(0) > 0) & (np.abs(t).sum(0) > 0))
    return np.where(constant, 1.0, pval)


def fdr_bh(pvalues: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values); reject where ``q ≤ α``.

    ``q_(i) = min_{j ≥ i} m · p_(j) / j`` over the sorted p-values, capped at 1; NaN
    p-values stay NaN and do not count toward ``m``.

    Parameters
    ----------
    pvalues : ndarray of shape (n,)

    Returns
    -------
    ndarray of shape (n,)
    """
    p = np.asarray(pvalues, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    m = int(ok.sum())
    if m == 0:
        return q
    order = np.argsort(p[ok])
    ranked = p[ok][order] * m / np.arange(1, m + 1)
    # step-up: each q is the smallest adjusted value at or above its rank
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(ranked, 1.0)
    q[ok] = out
    return q


# ---------------------------------------------------------------------------------------------
# Per-voxel tables
# ---------------------------------------------------------------------------------------------


VOXEL_COLUMNS = ("r", "r2", "p_perm", "q_fdr", "significant", "noise_ceiling", "r_normalised",
                 "reliability", "ncsnr", "ncsnr_ceiling")


def voxel_statistics(pred: np.ndarray, true: np.ndarray, repeats: np.ndarray | None = None,
                     *, n_permutations: int = DEFAULT_PERMUTATIONS, alpha: float = 0.05,
                     seed: int = 0) -> dict[str, np.ndarray]:
    """All per-voxel statistics of one area on the scored rows.

    Parameters
    ----------
    pred, true : ndarray of shape (n_samples, n_voxels)
        Predictions and measured responses (the mean of the repeats, where there are any).
    repeats : ndarray of shape (n_repeats, n_samples, n_voxels), optional
        Single measurements on the same rows; gives the noise ceiling.
    n_permutations : int
        Permutations for the p-values (0: skip, p and q are NaN).
    alpha : float
        FDR level for ``significant`` (Benjamini–Hochberg over this area's voxels).

    Returns
    -------
    dict of str to ndarray of shape (n_voxels,)
        ``r``, ``r2``, ``p_perm``, ``q_fdr``, ``significant`` (bool), ``noise_ceiling``,
        ``r_normalised`` (r / ceiling), ``reliability`` (Spearman–Brown split-half),
        ``ncsnr`` and ``ncsnr_ceiling``; ceiling columns are NaN without repeats.
    """
    pred = np.asarray(pred, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    if pred.ndim != 2 or pred.shape != true.shape:
        raise ValueError(f"pred {pred.shape} and true {true.shape} must be equal 2-D shapes")
    n_vox = true.shape[1]
    r = pearson_r(pred, true)
    out = {"r": r, "r2": r_squared(pred, true)}
    if n_permutations > 0 and true.shape[0] >= 3:
        p = permutation_pvalues(pred, true, n_permutations, seed)
        q = fdr_bh(p)
    else:
        p = q = np.full(n_vox, np.nan)
    out.update(p_perm=p, q_fdr=q, significant=np.nan_to_num(q, nan=1.0) <= alpha)
    nan = np.full(n_vox, np.nan)
    if repeats is not None:
        rep = np.asarray(repeats, dtype=np.float64)
        if rep.shape[1:] != true.shape:
            raise ValueError(f"repeats {rep.shape} must be (n_repeats, {true.shape[0]}, "
                             f"{true.shape[1]})")
        rel = split_half_reliability(rep, seed=seed)
        ceiling = np.where(rel > 0, np.sqrt(np.clip(rel, 0, None)), np.nan)
        snr = ncsnr(rep)
        with np.errstate(invalid="ignore", divide="ignore"):
            out.update(noise_ceiling=ceiling, r_normalised=r / ceiling, reliability=rel,
                       ncsnr=snr, ncsnr_ceiling=ncsnr_ceiling(snr, rep.shape[0]))
    else:
        out.update(noise_ceiling=nan, r_normalised=nan.copy(), reliability=nan.copy(),
                   ncsnr=nan.copy(), ncsnr_ceiling=nan.copy())
    return out


def _median(x: np.ndarray) -> float | None:
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    return float(np.median(x)) if x.size else None


def area_summary(stats: dict[str, np.ndarray], n_repeats: int | None = None,
                 alpha: float = 0.05) -> dict:
    """Summary of :func:`voxel_statistics` for one area (JSON-safe; ``None`` = unavailable).

    Returns
    -------
    dict
        :func:`summarize` of r plus ``median_r2``, ``frac_significant`` (BH q ≤ α),
        ``median_noise_ceiling``, ``median_r_normalised``, ``median_ncsnr``,
        ``ceiling_method`` and, without repeats, ``note``.
    """
    out: dict = summarize(stats["r"])
    out["median_r2"] = _median(stats["r2"])
    has_p = np.isfinite(stats["p_perm"]).any()
    out["frac_significant"] = float(np.mean(stats["significant"])) if has_p else None
    out["fdr_alpha"] = alpha
    out["median_noise_ceiling"] = _median(stats["noise_ceiling"])
    out["median_r_normalised"] = _median(stats["r_normalised"])
    out["median_ncsnr"] = _median(stats["ncsnr"])
    if n_repeats:
        out["n_repeats"] = int(n_repeats)
        out["ceiling_method"] = CEILING_METHOD
    else:
        out["ceiling_method"] = None
        out["note"] = NO_REPEATS_NOTE
    return out


def _fmt(v: object) -> str:
    if isinstance(v, bool | np.bool_):
        return str(int(v))
    if isinstance(v, float | np.floating):
        return "nan" if not math.isfinite(float(v)) else f"{float(v):.6g}"
    return str(v)


def write_table(path: str | Path, columns: dict[str, np.ndarray | list]) -> Path:
    """Write equal-length columns as CSV, atomically (floats with 6 significant digits)."""
    from niflow._atomic import atomic_write_text

    names = list(columns)
    n = len(next(iter(columns.values()))) if columns else 0
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(names)
    for i in range(n):
        w.writerow([_fmt(columns[c][i]) for c in names])
    return atomic_write_text(Path(path), buf.getvalue())


def read_table(path: str | Path) -> dict[str, np.ndarray]:
    """Read a CSV written by :func:`write_table` (or ``voxels.csv``) into columns.

    Numeric columns come back as float arrays, others as str arrays; shape (n_rows,) each.
    """
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        return {}
    head, body = rows[0], rows[1:]
    out: dict[str, np.ndarray] = {}
    for j, name in enumerate(head):
        col = [r[j] for r in body]
        try:
            out[name] = np.array([float(v) for v in col])
        except ValueError:
            out[name] = np.array(col)
    return out


# ---------------------------------------------------------------------------------------------
# Runs and files
# ---------------------------------------------------------------------------------------------



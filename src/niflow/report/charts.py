"""Figures the report draws itself from run-folder files (PNG bytes, nothing written to the
folder): histograms of held-out r, predicted against measured responses, visual-field maps.

Positions follow :mod:`niflow.figures`: degrees of visual angle (y up, 0 at the image centre)
once the visual field is known, else stimulus pixels (y = row, drawn downward).
"""

from __future__ import annotations

import io
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import niflow.figures as plots  # selects matplotlib's Agg backend before pyplot is imported
from niflow.interpret.receptive_fields import degrees_per_pixel

plt = plots.plt
NIF_COLOUR = "tab:blue"
RIDGE_COLOURS = ("tab:orange", "tab:green", "tab:purple")


@dataclass
class Chart:
    """A drawn figure: ``png`` bytes and the numbers drawn (``data``), for tests and captions."""

    png: bytes
    data: dict = field(default_factory=dict)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, dpi=100, bbox_inches="tight", format="png")
    plt.close(fig)
    return buf.getvalue()


def from_file_figure(draw, *args, **kwargs) -> bytes:
    """PNG bytes of a :mod:`niflow.figures` function that writes to a path (last positional
    argument ``path`` is supplied here)."""
    with tempfile.TemporaryDirectory(prefix="niflow-report-") as tmp:
        path = Path(tmp) / "figure.png"
        draw(*args, path, **kwargs)
        return path.read_bytes()


def r_bins(values: list[np.ndarray], width: float = 0.05) -> np.ndarray:
    """Common bin edges of width ``width`` from below the lowest value (at most -0.1) to 1."""
    finite = np.concatenate([v[np.isfinite(v)] for v in values] + [np.array([-0.1])])
    lo = np.floor(min(finite.min(), -0.1) / width) * width
    return np.round(np.arange(lo, 1.0 + width / 2, width), 10)


def r_histogram(area: str, r: np.ndarray, ridge: dict[str, np.ndarray],
                ceiling: np.ndarray | None = None) -> Chart:
    """Held-out r of every voxel of an area, beside each ridge baseline and the noise ceiling.

    Parameters
    ----------
    r : ndarray of shape (n_voxels,)
        niflow's held-out r.
    ridge : dict of feature set to ndarray of shape (n_voxels,)
        The baselines' held-out r on the same rows.
    ceiling : ndarray of shape (n_voxels,), optional
        Noise ceilings (NaN where unknown).

    Returns
    -------
    Chart whose ``data`` has ``edges`` (n_bins + 1,) and ``counts``: label → (n_bins,) as drawn.
    """
    series = {"niflow": np.asarray(r, float)}
    series.update({f"ridge on {k}": np.asarray(v, float) for k, v in ridge.items()})
    if ceiling is not None and np.isfinite(ceiling).any():
        series["noise ceiling"] = np.asarray(ceiling, float)
    edges = r_bins(list(series.values()))
    fig, ax = plt.subplots(figsize=(6.2, 3.6))
    counts = {}
    for i, (label, v) in enumerate(series.items()):
        v = v[np.isfinite(v)]
        med = float(np.median(v)) if v.size else float("nan")
        if label == "niflow":
            n, _, _ = ax.hist(v, edges, color=NIF_COLOUR, alpha=0.55,
                              label=f"niflow (median {med:.3f})")
            colour = NIF_COLOUR
        else:
            colour = "0.35" if label == "noise ceiling" else RIDGE_COLOURS[(i - 1) % 3]
            n, _, _ = ax.hist(v, edges, histtype="step", lw=1.8, color=colour,
                              ls="--" if label == "noise ceiling" else "-",
                              label=f"{label} (median {med:.3f})")
        counts[label] = np.asarray(n)
        ax.axvline(med, color=colour, lw=1, ls=":")
    ax.set_xlabel("held-out Pearson r (test rows)")
    ax.set_ylabel("voxels")
    ax.set_title(f"{area}: held-out r over {series['niflow'].size} voxels", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    return Chart(_png(fig), {"edges": edges, "counts": counts})


def predicted_measured(area: str, measured: np.ndarray, predicted: np.ndarray,
                       voxels: list[int], labels: list[str], r: np.ndarray) -> Chart:
    """Predicted against measured responses on the test rows, one panel per voxel.

    Parameters
    ----------
    measured, predicted : ndarray of shape (n_test, n_shown)
        Response units, the columns of the shown voxels.
    voxels : list of int
        Their input columns; ``labels`` says why each is shown ("best", "median", "chosen").
    r : ndarray of shape (n_shown,)
        Held-out r, for the titles.
    """
    n = len(voxels)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.3), squeeze=False)
    for j, ax in enumerate(axes[0]):
        m, p = measured[:, j], predicted[:, j]
        ax.plot(m, p, "o", ms=3.5, alpha=0.7, color=NIF_COLOUR)
        lo, hi = float(min(m.min(), p.min())), float(max(m.max(), p.max()))
        ax.plot([lo, hi], [lo, hi], "k--", lw=1)
        ax.set_xlabel("measured response")
        ax.set_ylabel("niflow prediction")
        ax.set_title(f"{area} voxel {voxels[j]} ({labels[j]}), r = {r[j]:.2f}", fontsize=9)
    fig.suptitle(f"{area}: predicted against measured, {measured.shape[0]} test rows "
                 "(dashed: identity)", fontsize=10)
    fig.tight_layout()
    return Chart(_png(fig), {"voxels": list(voxels), "labels": list(labels)})


def show_voxels(r: np.ndarray, voxel: np.ndarray, chosen: list[int] | None = None,
                ) -> tuple[list[int], list[str]]:
    """Rows (into ``r``) of the best, the median and the chosen voxels, and their labels."""
    finite = np.flatnonzero(np.isfinite(r))
    if not finite.size:
        return [], []
    order = finite[np.argsort(r[finite])]
    rows, labels = [int(order[-1]), int(order[len(order) // 2])], ["best", "median"]
    where = {int(v): i for i, v in enumerate(voxel)}
    for v in chosen or []:
        if int(v) in where and where[int(v)] not in rows:
            rows.append(where[int(v)])
            labels.append("chosen")
    return rows, labels


def visual_field_maps(area: str, prf: dict[str, np.ndarray], image_size: tuple[int, int],
                      visual_field_deg: float | None, keep: np.ndarray,
                      keep_note: str) -> Chart:
    """pRF centres coloured by polar angle and by eccentricity, and the coverage they give.

    Parameters
    ----------
    prf : dict with ``x``, ``y``, ``sigma``, ``ecc``, ``angle`` of shape (n_voxels,)
        Positions and sizes in the plotting unit (degrees: y up, centred; pixels: image
        coordinates), polar angle in degrees (0 = right, counter-clockwise, y up).
    keep : bool ndarray of shape (n_voxels,)
        Voxels drawn; ``keep_note`` says which ("r > 0.5").
    """
    unit = "deg" if visual_field_deg else "px"
    ok = keep & np.isfinite(prf["x"]) & np.isfinite(prf["y"]) & np.isfinite(prf["sigma"])
    x, y, s = prf["x"][ok], prf["y"][ok], prf["sigma"][ok]
    fig, axes = plt.subplots(1, 3, figsize=(15.0, 4.4))
    for ax, key, cmap, label, lim in ((axes[0], "angle", "hsv", "polar angle (deg)", (0, 360)),
                                      (axes[1], "ecc", "viridis", f"eccentricity ({unit})",
                                       None)):
        sc = ax.scatter(x, y, c=prf[key][ok], cmap=cmap, s=9,
                        vmin=None if lim is None else lim[0],
                        vmax=None if lim is None else lim[1])
        fig.colorbar(sc, ax=ax, fraction=0.046, pad=0.04, label=label)
        ax.set_title(f"{area}: pRF centres by {label.split(' (')[0]}", fontsize=9)
    cover, extent = _coverage(x, y, s, image_size, visual_field_deg)
    im = axes[2].imshow(cover, extent=extent, origin="upper", cmap="magma",
                        interpolation="nearest")
    fig.colorbar(im, ax=axes[2], fraction=0.046, pad=0.04, label="pRFs covering point (1σ)")
    axes[2].set_title(f"{area}: coverage, {int(ok.sum())} pRFs", fontsize=9)
    for ax in axes:
        plots.field_axes(ax, image_size, visual_field_deg)
    fig.suptitle(f"{area}: readout pRFs of voxels with {keep_note} ({int(ok.sum())} of "
                 f"{ok.size})", fontsize=10)
    fig.tight_layout()
    return Chart(_png(fig), {"n_shown": int(ok.sum()), "unit": unit,
                             "coverage_max": float(cover.max()) if cover.size else 0.0})


def _coverage(x: np.ndarray, y: np.ndarray, s: np.ndarray, image_size: tuple[int, int],
              visual_field_deg: float | None) -> tuple[np.ndarray, tuple]:
    """How many pRFs (disc of radius σ) cover each pixel centre, and the image's extent in
    the plotting unit."""
    h, w = image_size
    if visual_field_deg is None:
        px, py, dpp = np.arange(w, dtype=float), np.arange(h, dtype=float), 1.0
        extent = (-0.5, w - 0.5, h - 0.5, -0.5)
    else:
        dpp = degrees_per_pixel(image_size, visual_field_deg)
        px = (np.arange(w) - (w - 1) / 2) * dpp
        py = ((h - 1) / 2 - np.arange(h)) * dpp  # row 0 at the top, y up
        extent = (-w / 2 * dpp, w / 2 * dpp, -h / 2 * dpp, h / 2 * dpp)
    cover = np.zeros((h, w))
    for cx, cy, r in zip(x, y, s, strict=True):
        cover += ((px[None, :] - cx) ** 2 + (py[:, None] - cy) ** 2) <= r ** 2
    return cover, extent


def size_eccentricity(area: str, ecc: np.ndarray, sigma: np.ndarray, keep: np.ndarray,
                      unit: str) -> bytes:
    """One area's readout pRF size against eccentricity with its least-squares line."""
    return from_file_figure(plots.plot_size_eccentricity,
                            [(f"{area}: readout-map pRFs", {area: (ecc[keep], sigma[keep])})],
                            unit=unit)


def training_curve(log: list[dict], best_epoch: int | None) -> bytes:
    """Loss and validation median r per epoch (``log.jsonl``), the kept epoch marked."""
    return from_file_figure(plots.plot_training, log, best_epoch=best_epoch)


def nif_against_ridge(area: str, nif_r: np.ndarray, ridge: dict[str, np.ndarray]) -> bytes:
    """Per-voxel scatter of niflow's held-out r against each ridge baseline's."""
    return from_file_figure(plots.plot_model_comparison, {area: nif_r},
                            {k: {area: v} for k, v in ridge.items()})

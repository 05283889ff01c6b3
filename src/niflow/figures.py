"""Figures written into a run folder (PNG, matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

if "matplotlib.pyplot" not in sys.modules:
    # no display needed; a notebook or script that already chose a backend keeps it (every
    # figure here is saved and closed, which works with any backend)
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from niflow._atomic import atomic_write  # noqa: E402
from niflow.model.areas import Geometry  # noqa: E402


def _save(fig, path: Path) -> Path:
    atomic_write(path, lambda p: fig.savefig(p, dpi=110, bbox_inches="tight", format="png"))
    plt.close(fig)
    return Path(path)


def plot_receptive_fields(maps: np.ndarray, geometry: Geometry, voxels: np.ndarray,
                          r: np.ndarray, centres: tuple[np.ndarray, np.ndarray], area: str,
                          path: str | Path, image_size: tuple[int, int],
                          which: str = "best-predicted voxels",
                          visual_field_deg: float | None = None) -> Path:
    """Spatial maps of some voxels, in stimulus pixels or, with ``visual_field_deg``, in
    degrees of visual angle (y up, 0 at the image centre).

    Parameters
    ----------
    maps : ndarray of shape (n_shown, H, W)
        Rank-weighted spatial maps on the area grid (rows = y).
    voxels, r : ndarray of shape (n_shown,)
        Voxel indices (columns of the input) and their held-out r, for the titles.
    centres : tuple of two ndarrays of shape (n_shown,)
        Estimated ``(prf_x, prf_y)`` in stimulus pixels, marked with a cross.
    image_size : tuple of int
        Stimulus ``(height, width)``, the axes' extent.
    which : str
        What the voxels are, for the title ("best-predicted voxels", "chosen voxels").
    visual_field_deg : float, optional
        Angle the image width subtends; switches the axes to degrees.
    """
    n = len(maps)
    cols = min(4, max(n, 1))
    rows = int(np.ceil(n / cols)) if n else 1
    fig, axes = plt.subplots(rows, cols, figsize=(3.1 * cols, 2.9 * rows), squeeze=False)
    h, w = geometry.grid
    half = geometry.scale / 2
    # cell centres map to scale*i + offset; the image spans half a cell beyond them
    left, right = geometry.offset - half, geometry.scale * (w - 1) + geometry.offset + half
    bottom, top = geometry.scale * (h - 1) + geometry.offset + half, geometry.offset - half
    (left, right), (bottom, top), _ = _field_coords(np.array([left, right]),
                                                    np.array([bottom, top]), image_size,
                                                    visual_field_deg)
    cx, cy, _ = _field_coords(centres[0], centres[1], image_size, visual_field_deg)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    for i, ax in enumerate(axes.ravel()[:n]):
        im = ax.imshow(maps[i], extent=(left, right, bottom, top), origin="upper",
                       cmap="magma", interpolation="nearest")
        ax.plot(cx[i], cy[i], "c+", ms=10, mew=2)
        field_axes(ax, image_size, visual_field_deg)
        ax.set_title(f"{area} voxel {int(voxels[i])}  r={r[i]:.2f}", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="readout weight")
    fig.suptitle(f"{area}: spatial receptive fields of the {which} "
                 f"(+ = estimated centre)", fontsize=10)
    fig.tight_layout()
    return _save(fig, Path(path))


def plot_kernels(weights: np.ndarray, area: str, path: str | Path) -> Path:
    """First-layer convolution kernels on one symmetric colour scale (sign and size kept).

    Parameters
    ----------
    weights : ndarray of shape (out_channels, in_channels, k, k)
        One input channel: drawn blue (negative) to red (positive). Three (colour stimuli):
        each kernel drawn as an RGB image, channel c at ``0.5 + 0.5 · w_c / lim`` with ``lim``
        the largest |weight| of all kernels, so mid-grey is zero, a red blob is a kernel that
        weighs the red channel positively and a dark grey one weighs all channels
        negatively. Any other number of input channels: channel 0 only.
    """
    weights = np.asarray(weights, dtype=np.float64)
    colour = weights.shape[1] == 3
    k = weights if colour else weights[:, 0]
    n = k.shape[0]
    cols = min(8, n)
    rows = int(np.ceil(n / cols))
    lim = float(np.abs(k).max()) or 1.0
    fig, axes = plt.subplots(rows, cols, figsize=(1.5 * cols + 1.2, 1.6 * rows), squeeze=False)
    im = None
    for i, ax in enumerate(axes.ravel()):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= n:
            ax.axis("off")
            continue
        if colour:
            rgb = np.clip(0.5 + 0.5 * k[i].transpose(1, 2, 0) / lim, 0.0, 1.0)
            ax.imshow(rgb, interpolation="nearest")
        else:
            im = ax.imshow(k[i], cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
        ax.set_title(f"ch {i}", fontsize=8)
    scale = (f"RGB: grey = 0, full colour = ±{lim:.2g}" if colour else "shared colour scale")
    # above the kernels' titles (bbox_inches="tight" keeps it in the saved image)
    fig.suptitle(f"{area} convolution kernels ({k.shape[-1]}×{k.shape[-1]} px, {scale})",
                 fontsize=10, **({"y": 1.0 + 0.12 / rows} if colour else {}))
    if im is not None:
        fig.colorbar(im, ax=axes.ravel().tolist(), fraction=0.02, pad=0.02, label="weight")
    return _save(fig, Path(path))


def best_epoch_of(epochs: list[dict]) -> int | None:
    """The epoch with the highest validation median r (the first of ties, as early stopping
    keeps it), or None without validation scores."""
    scored = [(r["val_median_r"], -r["epoch"]) for r in epochs
              if r.get("val_median_r") is not None and np.isfinite(r["val_median_r"])]
    return -max(scored)[1] if scored else None


def plot_training(epochs: list[dict], path: str | Path,
                  best_epoch: int | None = None) -> Path:
    """Training loss and validation median r per epoch, the kept (best) epoch marked.

    Parameters
    ----------
    epochs : list of dict
        ``log.jsonl`` records: ``epoch``, ``train_loss``, ``val_median_r``.
    best_epoch : int, optional
        Epoch whose weights were kept; default :func:`best_epoch_of`.
    """
    fig, ax1 = plt.subplots(figsize=(5.5, 3.4))
    e = [r["epoch"] for r in epochs]
    ax1.plot(e, [r["train_loss"] for r in epochs], "o-", color="tab:blue", ms=3,
             label="training loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("training loss (MSE, z units)", color="tab:blue")
    best = best_epoch if best_epoch is not None else best_epoch_of(epochs)
    if any("val_median_r" in r for r in epochs):
        ax2 = ax1.twinx()
        val = [r.get("val_median_r", np.nan) for r in epochs]
        ax2.plot(e, val, "s-", color="tab:red", ms=3, label="validation median r")
        ax2.set_ylabel("validation median r", color="tab:red")
        if best in e:
            ax2.plot([best], [val[e.index(best)]], "*", color="gold", mec="k", ms=15,
                     zorder=5, label=f"best epoch {best} (kept)")
        # one legend under the axes, where it hides no point of either curve
        handles = [h for a in (ax1, ax2) for h in a.get_legend_handles_labels()[0]]
        ax1.legend(handles=handles, fontsize=7, loc="upper center", ncol=3,
                   bbox_to_anchor=(0.5, -0.2), frameon=False)
    if best is not None:
        ax1.axvline(best, color="0.3", ls="--", lw=1)
    ax1.set_title("Training curve" + (f" (kept: epoch {best})" if best is not None else ""))
    fig.tight_layout()
    return _save(fig, Path(path))


# ---------------------------------------------------------------------------------------------
# Science figures. Positions are drawn as the stimulus is seen: in degrees of visual angle
# (y up, 0 at the image centre) when the visual-field size is known, otherwise in stimulus
# pixels (x = column, y = row, drawn downward like the image).
# ---------------------------------------------------------------------------------------------

AREA_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")


def _colour(i: int) -> str:
    return AREA_COLOURS[i % len(AREA_COLOURS)]


def _legend(ax: matplotlib.axes.Axes, **kwargs) -> None:
    """A legend if anything is labelled (matplotlib warns on stderr otherwise)."""
    if ax.get_legend_handles_labels()[1]:
        ax.legend(**kwargs)


def _field_coords(x: np.ndarray, y: np.ndarray, image_size: tuple[int, int],
                  visual_field_deg: float | None) -> tuple[np.ndarray, np.ndarray, str]:
    """Stimulus pixels → plotting coordinates and the unit label."""
    if visual_field_deg is None:
        return np.asarray(x, float), np.asarray(y, float), "px"
    h, w = image_size
    dpp = visual_field_deg / w
    return ((np.asarray(x, float) - (w - 1) / 2) * dpp,
            ((h - 1) / 2 - np.asarray(y, float)) * dpp, "deg")


def field_axes(ax, image_size: tuple[int, int], visual_field_deg: float | None) -> None:
    """Limits, labels and aspect of a visual-field plot: stimulus pixels (rows downward) or,
    with ``visual_field_deg``, degrees from the centre (up positive)."""
    h, w = image_size
    if visual_field_deg is None:
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)  # image rows grow downward
        ax.set_xlabel("x (stimulus px)")
        ax.set_ylabel("y (stimulus px, downward)")
    else:
        dpp = visual_field_deg / w
        ax.set_xlim(-w / 2 * dpp, w / 2 * dpp)
        ax.set_ylim(-h / 2 * dpp, h / 2 * dpp)
        ax.set_xlabel("horizontal position (deg)")
        ax.set_ylabel("vertical position (deg, up)")
    ax.set_aspect("equal")


def plot_coverage(prfs: dict[str, dict[str, np.ndarray]], image_size: tuple[int, int],
                  path: str | Path, visual_field_deg: float | None = None,
                  keep: dict[str, np.ndarray] | None = None, title: str = "readout") -> Path:
    """Visual-field coverage per area: how many pRFs (within 1σ) cover each point.

    Parameters
    ----------
    prfs : dict of area to dict with ``prf_x``, ``prf_y``, ``prf_sigma`` (n_voxels,), px
    image_size : tuple of int
        Stimulus ``(height, width)``.
    keep : dict of area to bool ndarray of shape (n_voxels,), optional
        Voxels to include (e.g. well-predicted ones); default all finite.
    """
    h, w = image_size
    areas = list(prfs)
    fig, axes = plt.subplots(1, len(areas), figsize=(4.4 * len(areas), 4.0), squeeze=False)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    for ax, area in zip(axes[0], areas, strict=True):
        p = prfs[area]
        ok = np.isfinite(p["prf_x"]) & np.isfinite(p["prf_sigma"])
        if keep is not None and area in keep:
            ok &= np.asarray(keep[area], bool)
        cover = np.zeros((h, w))
        for x, y, s in zip(p["prf_x"][ok], p["prf_y"][ok], p["prf_sigma"][ok], strict=True):
            cover += ((xx - x) ** 2 + (yy - y) ** 2) <= s ** 2
        if visual_field_deg is None:
            extent = (-0.5, w - 0.5, h - 0.5, -0.5)
        else:
            dpp = visual_field_deg / w
            extent = (-w / 2 * dpp, w / 2 * dpp, -h / 2 * dpp, h / 2 * dpp)
        im = ax.imshow(cover, extent=extent, origin="upper", cmap="viridis",
                       interpolation="nearest")
        cx, cy, _ = _field_coords(p["prf_x"][ok], p["prf_y"][ok], image_size,
                                  visual_field_deg)
        ax.plot(cx, cy, ".", color="white", ms=2, alpha=0.6)
        field_axes(ax, image_size, visual_field_deg)
        ax.set_title(f"{area}: visual-field coverage ({int(ok.sum())} voxels)", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="pRFs covering point (1σ)")
    fig.suptitle(f"Coverage of the visual field by {title} pRFs (dots: centres)", fontsize=10)
    fig.tight_layout()
    return _save(fig, Path(path))


def plot_size_eccentricity(panels: list[tuple[str, dict[str, tuple[np.ndarray, np.ndarray]]]],
                           path: str | Path, unit: str = "px") -> Path:
    """pRF size against eccentricity per area, with a least-squares line per area.

    Parameters
    ----------
    panels : list of (title, {area: (eccentricity (n,), size (n,))})
        One panel each (e.g. readout maps, in-silico bar sweep).
    unit : str
        ``"px"`` or ``"deg"``, for the axis labels.
    """
    from niflow.interpret.receptive_fields import fit_line

    fig, axes = plt.subplots(1, len(panels), figsize=(5.0 * len(panels), 4.0), squeeze=False)
    for ax, (title, series) in zip(axes[0], panels, strict=True):
        for i, (area, (ecc, size)) in enumerate(series.items()):
            ecc, size = np.asarray(ecc, float), np.asarray(size, float)
            ok = np.isfinite(ecc) & np.isfinite(size)
            ax.plot(ecc[ok], size[ok], ".", color=_colour(i), ms=3, alpha=0.35)
            b0, b1 = fit_line(ecc[ok], size[ok])
            if np.isfinite(b1):
                xs = np.linspace(ecc[ok].min(), ecc[ok].max(), 20)
                sign = "+" if b1 >= 0 else "−"
                ax.plot(xs, b0 + b1 * xs, "-", color=_colour(i), lw=2.2,
                        label=f"{area}: σ = {b0:.2f} {sign} {abs(b1):.3f}·ecc "
                              f"(n={int(ok.sum())})")
        if not ax.lines:
            ax.text(0.5, 0.5, "no well-predicted voxels to show", transform=ax.transAxes,
                    ha="center", va="center", color="0.4")
        ax.set_xlabel(f"eccentricity ({unit})")
        ax.set_ylabel(f"pRF size σ ({unit})")
        ax.set_title(title, fontsize=9)
        _legend(ax, fontsize=7, loc="upper left")
        ax.grid(alpha=0.3)
    fig.suptitle("pRF size versus eccentricity per area (lines: least-squares fits)",
                 fontsize=10)
    fig.tight_layout()
    return _save(fig, Path(path))


def plot_prf_agreement(pairs: dict[str, dict[str, np.ndarray]], path: str | Path,
                       unit: str = "px") -> Path:
    """In-silico (bar sweep) against readout pRF centres and sizes, per area.

    Parameters
    ----------
    pairs : dict of area to dict with ``readout_x``, ``readout_y``, ``readout_sigma``,
        ``insilico_x``, ``insilico_y``, ``insilico_sigma`` (n,) in ``unit``
    """
    areas = list(pairs)
    fig, axes = plt.subplots(len(areas), 3, figsize=(12.0, 3.6 * len(areas)), squeeze=False)
    for row, area in zip(axes, areas, strict=True):
        p = pairs[area]
        d = np.hypot(p["insilico_x"] - p["readout_x"], p["insilico_y"] - p["readout_y"])
        for ax, key in zip(row[:2], ("x", "y"), strict=True):
            a, b = p[f"readout_{key}"], p[f"insilico_{key}"]
            ax.plot(a, b, ".", ms=3, alpha=0.5)
            both = np.concatenate([a, b])
            both = both[np.isfinite(both)]
            if both.size:  # an area may have no voxel to compare
                ax.plot([both.min(), both.max()], [both.min(), both.max()], "k--", lw=1,
                        label="identity")
            ax.set_xlabel(f"readout-map centre {key} ({unit})")
            ax.set_ylabel(f"in-silico centre {key} ({unit})")
            ax.set_title(f"{area}: pRF centre {key}", fontsize=9)
            _legend(ax, fontsize=7)
        ax = row[2]
        ax.plot(p["readout_sigma"], p["insilico_sigma"], ".", ms=3, alpha=0.5)
        ax.set_xlabel(f"readout-map size σ ({unit})")
        ax.set_ylabel(f"in-silico size σ ({unit})")
        median = f"{np.nanmedian(d):.2f} {unit}" if np.isfinite(d).any() else "n/a (no voxel)"
        ax.set_title(f"{area}: size; centre distance median {median}", fontsize=9)
    fig.suptitle("In-silico bar-sweep pRFs against readout-map pRFs", fontsize=10)
    fig.tight_layout()
    return _save(fig, Path(path))


def plot_tuning(tuning: dict[str, dict[str, np.ndarray]], path: str | Path,
                sf_unit: str = "cycles/px") -> Path:
    """Distributions of preferred orientation and preferred spatial frequency per area.

    Parameters
    ----------
    tuning : dict of area to dict with ``preferred_orientation`` (deg),
        ``orientation_selectivity`` and ``preferred_sf`` (n_voxels,) in ``sf_unit``
    """
    areas = list(tuning)
    fig, axes = plt.subplots(len(areas), 3, figsize=(12.0, 3.3 * len(areas)), squeeze=False)
    for row, area in zip(axes, areas, strict=True):
        t = tuning[area]
        row[0].hist(t["preferred_orientation"], bins=np.arange(0, 181, 15), color="tab:blue",
                    edgecolor="white")
        row[0].set_xlabel("preferred orientation (deg, 0 = horizontal, CCW)")
        row[0].set_ylabel("voxels")
        row[0].set_xticks(np.arange(0, 181, 45))
        row[0].set_title(f"{area}: preferred orientation", fontsize=9)
        row[1].hist(t["orientation_selectivity"], bins=np.linspace(0, 1, 21),
                    color="tab:green", edgecolor="white")
        row[1].set_xlabel("orientation selectivity (0 = untuned, 1 = one orientation)")
        row[1].set_ylabel("voxels")
        row[1].set_title(f"{area}: orientation selectivity", fontsize=9)
        sf = np.asarray(t["preferred_sf"], float)
        sf = sf[np.isfinite(sf) & (sf > 0)]
        if sf.size:
            row[2].hist(sf, bins=np.geomspace(sf.min() * 0.95, sf.max() * 1.05, 16),
                        color="tab:orange", edgecolor="white")
            row[2].set_xscale("log")
            # five plain-decimal ticks: a log axis would label 2×10⁻¹ or crowd minor labels
            row[2].xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            row[2].xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            ticks = np.geomspace(sf.min(), sf.max(), 5) if sf.max() > sf.min() else sf[:1]
            row[2].set_xticks(ticks)
            row[2].set_xticklabels([f"{v:.3g}" for v in ticks])
        row[2].set_xlabel(f"preferred spatial frequency ({sf_unit})")
        row[2].set_ylabel("voxels")
        row[2].set_title(f"{area}: preferred spatial frequency", fontsize=9)
    fig.suptitle("In-silico grating tuning of every voxel", fontsize=10)
    fig.tight_layout()
    return _save(fig, Path(path))


def plot_flow(rows: list[dict], channel_norms: dict[tuple[str, str], np.ndarray],
              path: str | Path) -> Path:
    """Information flow: what ablating a source costs, and the inter-area weight norms.

    Ablation is drawn only for areas with several sources: when an area has one, removing
    it removes all of the area's input and the "drop" is simply its held-out r, so a chain
    (stimulus → V1 → V2) gets the held-out r per area instead. Weight-norm maps are drawn
    only where the sources have several channels (the stimulus's one channel would make a
    one-column map).

    Parameters
    ----------
    rows : list of dict
        ``FlowResult.row()`` records (target, source, median_r, median_drop_zero,
        median_drop_mean).
    channel_norms : dict of (target, source) to ndarray of shape (C_target, C_source)
    """
    targets = list(dict.fromkeys(r["target"] for r in rows))
    n_src = {t: sum(r["target"] == t for r in rows) for t in targets}
    maps = [t for t in targets
            if sum(channel_norms[(t, r["source"])].shape[1] for r in rows
                   if r["target"] == t) > 1]
    fig, axes = plt.subplots(1, 1 + len(maps), figsize=(5.0 + 4.0 * len(maps), 4.0),
                             squeeze=False,
                             gridspec_kw={"width_ratios": [1.4] + [1] * len(maps)})
    _flow_bars(axes[0, 0], [r for r in rows if n_src[r["target"]] > 1], rows)
    for ax, target in zip(axes[0, 1:], maps, strict=True):
        srcs = [r["source"] for r in rows if r["target"] == target]
        blocks = [channel_norms[(target, s)] for s in srcs]
        im = ax.imshow(np.concatenate(blocks, axis=1), cmap="magma", aspect="auto",
                       interpolation="nearest")
        edge, ticks = 0, []
        for b in blocks:
            ticks.append(edge + b.shape[1] / 2 - 0.5)
            edge += b.shape[1]
            ax.axvline(edge - 0.5, color="white", lw=1.5)
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"from {s}" for s in srcs], fontsize=8)
        ax.set_xlabel("input channel (grouped by source)")
        ax.set_ylabel(f"{target} output channel")
        ax.set_title(f"{target}: conv weight norm per channel pair", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="kernel L2 norm")
    fig.suptitle("Information flow between areas", fontsize=10)
    fig.tight_layout()
    return _save(fig, Path(path))


def _flow_bars(ax, multi: list[dict], rows: list[dict]) -> None:
    """Ablation costs of the sources of multi-source areas, else held-out r per area."""
    if multi:
        pos = np.arange(len(multi))
        ax.bar(pos - 0.2, [r["median_drop_zero"] for r in multi], 0.4,
               label="source set to 0")
        ax.bar(pos + 0.2, [r["median_drop_mean"] for r in multi], 0.4,
               label="source set to its mean")
        ax.set_xticks(pos)
        ax.set_xticklabels([f"{r['source']}→{r['target']}" for r in multi], rotation=20,
                           fontsize=8)
        ax.set_ylabel("median drop in held-out r")
        ax.set_title("Ablation: cost of removing each input", fontsize=9)
        ax.axhline(0, color="k", lw=0.8)
        _legend(ax, fontsize=7)
        return
    per_target = list({r["target"]: r for r in rows}.values())
    pos = np.arange(len(per_target))
    ax.bar(pos, [r["median_r"] for r in per_target], 0.6, color="tab:blue")
    ax.set_xticks(pos)
    ax.set_xticklabels([f"{r['source']}→{r['target']}" for r in per_target], fontsize=8)
    ax.set_ylabel("median held-out r")
    ax.set_title("A chain: every area has one source, so ablating it\n"
                 "costs all of its held-out r (shown); no ablation to compare", fontsize=9)
    ax.axhline(0, color="k", lw=0.8)


def plot_model_comparison(nif_r: dict[str, np.ndarray], other_r: dict[str, dict[str, np.ndarray]],
                          path: str | Path) -> Path:
    """Per-voxel held-out r of NIF against each baseline, one panel per area.

    Parameters
    ----------
    nif_r : dict of area to ndarray of shape (n_voxels,)
    other_r : dict of baseline name to dict of area to ndarray of shape (n_voxels,)
        Same voxel order as ``nif_r``.
    """
    areas = list(nif_r)
    fig, axes = plt.subplots(1, len(areas), figsize=(4.4 * len(areas), 4.2), squeeze=False)
    every = np.concatenate([np.ravel(v) for v in nif_r.values()] +
                           [np.ravel(v) for rs in other_r.values() for v in rs.values()])
    lo = min(-0.2, float(np.nanmin(every)) - 0.03) if every.size else -0.2
    for ax, area in zip(axes[0], areas, strict=True):
        for i, (name, rs) in enumerate(other_r.items()):
            if area not in rs:
                continue
            ax.plot(rs[area], nif_r[area], ".", ms=3, alpha=0.5, color=_colour(i + 1),
                    label=f"ridge on {name}: median {np.nanmedian(rs[area]):.3f}")
        ax.plot([lo, 1], [lo, 1], "k--", lw=1)
        ax.set_xlim(lo, 1)
        ax.set_ylim(lo, 1)
        ax.set_xlabel("baseline held-out r")
        ax.set_ylabel("NIF held-out r")
        ax.set_title(f"{area}: NIF (median {np.nanmedian(nif_r[area]):.3f}) vs baselines",
                     fontsize=9)
        _legend(ax, fontsize=7, loc="lower right")
        ax.set_aspect("equal")
    fig.suptitle("Same test rows, per voxel: points above the diagonal favour NIF", fontsize=10)
    fig.tight_layout()
    return _save(fig, Path(path))


def plot_noise_ceiling(r: dict[str, np.ndarray], ceiling: dict[str, np.ndarray],
                       path: str | Path) -> Path:
    """Held-out r against each voxel's noise ceiling, one panel per area."""
    areas = list(r)
    fig, axes = plt.subplots(1, len(areas), figsize=(4.4 * len(areas), 4.2), squeeze=False)
    for ax, area in zip(axes[0], areas, strict=True):
        c, rr = np.asarray(ceiling[area], float), np.asarray(r[area], float)
        ok = np.isfinite(c) & np.isfinite(rr)
        ax.plot(c[ok], rr[ok], ".", ms=3, alpha=0.5)
        ax.plot([0, 1], [0, 1], "k--", lw=1, label="r = ceiling")
        ax.set_xlim(0, 1)
        ax.set_ylim(min(-0.1, float(np.nanmin(rr)) if rr.size else 0), 1)
        ax.set_xlabel("noise ceiling (√ split-half reliability, Spearman–Brown)")
        ax.set_ylabel("held-out r")
        with np.errstate(invalid="ignore", divide="ignore"):
            med = np.nanmedian(rr[ok] / c[ok]) if ok.any() else np.nan
        ax.set_title(f"{area}: median r / ceiling = {med:.3f}", fontsize=9)
        _legend(ax, fontsize=7, loc="upper left")
    fig.suptitle("Prediction accuracy against the noise ceiling", fontsize=10)
    fig.tight_layout()
    return _save(fig, Path(path))


def plot_hrfs(curves: np.ndarray, lags_s: np.ndarray, voxels: np.ndarray, r: np.ndarray,
              area: str, path: str | Path) -> Path:
    """Learned haemodynamic responses of chosen voxels.

    Parameters
    ----------
    curves : ndarray of shape (n, n_lags)
        Each voxel's HRF at ``lags_s``.
    lags_s : ndarray of shape (n_lags,)
        Seconds after the stimulus.
    voxels, r : ndarray of shape (n,)
        Voxel numbers (input columns) and held-out r, for the legend.
    """
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for i, (c, v, rv) in enumerate(zip(curves, voxels, r, strict=True)):
        peak = c.max() if np.isfinite(c).all() and c.max() > 0 else 1.0
        ax.plot(lags_s, c / peak, color=_colour(i), lw=1.3,
                label=f"voxel {int(v)}, r {rv:.2f}, peak {lags_s[np.argmax(c)]:.1f} s")
    ax.axhline(0, color="0.6", lw=0.8)
    ax.set_xlabel("seconds after the stimulus")
    ax.set_ylabel("HRF (peak = 1)")
    ax.set_title(f"{area}: learned HRFs of the best-predicted voxels")
    _legend(ax, fontsize=6, loc="upper right")
    fig.tight_layout()
    return _save(fig, Path(path))


def plot_hrf_latencies(peaks: dict[str, np.ndarray], path: str | Path,
                       note: str = "") -> Path:
    """Distribution of the voxels' HRF peak latencies, one histogram per area.

    Parameters
    ----------
    peaks : dict of area to ndarray of shape (n_voxels,)
        Peak latency (seconds) of each voxel shown.
    note : str
        Which voxels are shown, for the title.
    """
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    finite = [p[np.isfinite(p)] for p in peaks.values()]
    values = np.concatenate(finite) if finite else np.zeros(0)
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    bins = np.linspace(lo - 0.25, hi + 0.25, 25)
    for i, (area, p) in enumerate(peaks.items()):
        p = p[np.isfinite(p)]
        if p.size:
            ax.hist(p, bins=bins, histtype="step", lw=1.5, color=AREA_COLOURS[i % 6],
                    label=f"{area} (n={p.size}, median {np.median(p):.2f} s)")
    ax.set_xlabel("HRF peak latency (s)")
    ax.set_ylabel("voxels")
    ax.set_title("HRF peak latencies" + (f" ({note})" if note else ""))
    _legend(ax, fontsize=7)
    fig.tight_layout()
    return _save(fig, Path(path))


def plot_motion_tuning(tuning: dict[str, dict[str, np.ndarray]], path: str | Path) -> Path:
    """Per area: direction selectivity, preferred direction of the selective voxels and
    preferred temporal frequency (in-silico drifting gratings of a movie run)."""
    areas = list(tuning)
    fig, axes = plt.subplots(len(areas), 3, figsize=(12.0, 3.3 * len(areas)), squeeze=False)
    for row, area in zip(axes, areas, strict=True):
        t = tuning[area]
        dsi = np.asarray(t["direction_selectivity"], float)
        row[0].hist(dsi, bins=np.linspace(0, 1, 21), color="tab:purple", edgecolor="white")
        row[0].set_xlabel("direction selectivity (0 = either way, 1 = one direction)")
        picked = np.asarray(t["preferred_direction"], float)[dsi > 0.2]
        row[1].hist(picked, bins=np.arange(0, 361, 22.5), color="tab:blue", edgecolor="white")
        row[1].set_xlabel("preferred direction (deg, 0 = rightwards, CCW), selectivity > 0.2")
        row[1].set_xticks(np.arange(0, 361, 90))
        tf = np.asarray(t["preferred_tf_hz"], float)
        levels = np.unique(tf)
        row[2].bar([f"{v:g}" for v in levels], [(tf == v).sum() for v in levels],
                   color="tab:orange")
        row[2].set_xlabel("preferred temporal frequency (Hz; 0 = static)")
        for ax, what in zip(row, ("direction selectivity", "preferred direction",
                                  "temporal frequency"), strict=True):
            ax.set_ylabel("voxels")
            ax.set_title(f"{area}: {what}", fontsize=9)
    fig.suptitle("In-silico drifting-grating tuning of every voxel", fontsize=10)
    fig.tight_layout()
    return _save(fig, Path(path))

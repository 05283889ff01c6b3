"""Figures written into a run folder (PNG, matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from niflow._atomic import atomic_write  # noqa: E402
from niflow.model.areas import Geometry  # noqa: E402


def _save(fig, path: Path) -> Path:
    atomic_write(path, lambda p: fig.savefig(p, dpi=110, bbox_inches="tight", format="png"))
    plt.close(fig)
    return Path(path)


def plot_receptive_fields(maps: np.ndarray, geometry: Geometry, voxels: np.ndarray,
                          r: np.ndarray, centres: tuple[np.ndarray, np.ndarray], area: str,
                          path: str | Path, image_size: tuple[int, int]) -> Path:
    """Spatial maps of chosen voxels drawn in stimulus pixel coordinates.

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
    """
    n = len(maps)
    cols = min(4, max(n, 1))
    rows = int(np.ceil(n / cols)) if n else 1
    fig, axes = plt.subplots(rows, cols, figsize=(3.1 * cols, 2.9 * rows), squeeze=False)
    h, w = geometry.grid
    half = geometry.scale / 2
    # cell centres map to scale*i + offset; the image spans half a cell beyond them
    extent = (geometry.offset - half, geometry.scale * (w - 1) + geometry.offset + half,
              geometry.scale * (h - 1) + geometry.offset + half, geometry.offset - half)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    for i, ax in enumerate(axes.ravel()[:n]):
        im = ax.imshow(maps[i], extent=extent, origin="upper", cmap="magma",
                       interpolation="nearest")
        ax.plot(centres[0][i], centres[1][i], "c+", ms=10, mew=2)
        ax.set_xlim(-0.5, image_size[1] - 0.5)
        ax.set_ylim(image_size[0] - 0.5, -0.5)
        ax.set_title(f"{area} voxel {int(voxels[i])}  r={r[i]:.2f}", fontsize=9)
        ax.set_xlabel("x (stimulus px)")
        ax.set_ylabel("y (stimulus px)")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="readout weight")
    fig.suptitle(f"{area}: spatial receptive fields of the best-predicted voxels "
                 f"(+ = estimated centre)", fontsize=10)
    fig.tight_layout()
    return _save(fig, Path(path))


def plot_kernels(weights: np.ndarray, area: str, path: str | Path) -> Path:
    """First-layer convolution kernels on one symmetric colour scale (sign and size kept).

    Parameters
    ----------
    weights : ndarray of shape (out_channels, in_channels, k, k)
        Only input channel 0 is drawn when there are several.
    """
    k = weights[:, 0]
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
        im = ax.imshow(k[i], cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
        ax.set_title(f"ch {i}", fontsize=8)
    fig.suptitle(f"{area} convolution kernels ({k.shape[-1]}×{k.shape[-1]} px, "
                 f"shared colour scale)", fontsize=10)
    if im is not None:
        fig.colorbar(im, ax=axes.ravel().tolist(), fraction=0.02, pad=0.02, label="weight")
    return _save(fig, Path(path))


def plot_training(epochs: list[dict], path: str | Path) -> Path:
    """Training loss and validation median r per epoch."""
    fig, ax1 = plt.subplots(figsize=(5.5, 3.4))
    e = [r["epoch"] for r in epochs]
    ax1.plot(e, [r["train_loss"] for r in epochs], "o-", color="tab:blue", ms=3)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("training loss (MSE, z units)", color="tab:blue")
    if any("val_median_r" in r for r in epochs):
        ax2 = ax1.twinx()
        ax2.plot(e, [r.get("val_median_r", np.nan) for r in epochs], "s-", color="tab:red",
                 ms=3)
        ax2.set_ylabel("validation median r", color="tab:red")
    ax1.set_title("Training curve")
    fig.tight_layout()
    return _save(fig, Path(path))

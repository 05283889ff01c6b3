"""Per-voxel maps of a run as NIfTI volumes on the areas' masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from niflow.evaluate.statistics import read_table
from niflow.runs.outputs import PROBE_CSV, VOXELS_CSV

NIFTI_MEASURES = {
    VOXELS_CSV: ("r_test", "r2_test", "q_fdr", "prf_x", "prf_y", "prf_sigma", "prf_ecc",
                 "prf_angle", "prf_ecc_deg", "prf_sigma_deg", "hrf_peak_s", "hrf_fwhm_s"),
    "stats_voxels.csv": ("r_normalised", "noise_ceiling"),
    PROBE_CSV: ("prf_x", "prf_y", "prf_sigma", "eccentricity", "polar_angle",
                "preferred_orientation", "orientation_selectivity", "preferred_sf"),
}


def export_nifti(run_dir: str | Path, masks: dict[str, str | Path],
                 out_dir: str | Path | None = None) -> list[Path]:
    """Write a run's per-voxel results as 3-D NIfTI images in each area's mask space.

    The run must have been trained on responses read with
    :func:`niflow.data.nifti.load_nifti_responses` (or ``load_nifti_movie``) and these masks
    (a voxel's input column is its index in the mask's C-ordered voxel list). From
    ``voxels.csv``: held-out r, R², FDR q, readout pRF centre, size, eccentricity, polar
    angle (and degrees if known), a movie run's HRF peak and width (seconds); from
    ``stats_voxels.csv`` (``niflow evaluate``): noise-normalised r and noise ceiling; from
    ``probe_voxels.csv`` (``niflow probe``): the in-silico pRF and tuning, as
    ``insilico_*``. Measures with no finite value are skipped. Voxels outside the mask are
    NaN (so that they differ from r = 0), and so are mask voxels without results. A mask for
    an area the run does not have is a :class:`~niflow.data.errors.DataError`, raised before
    anything is written.

    Returns
    -------
    list of Path
        ``<out_dir>/<area>_<measure>.nii.gz`` (default ``out_dir``: ``run_dir/nifti``).
    """
    from niflow.data.errors import DataError
    from niflow.data.nifti import voxel_maps_to_nifti
    from niflow.runs.run import RunError

    run_dir = Path(run_dir)
    if not (run_dir / VOXELS_CSV).exists():
        raise RunError(f"{run_dir}: not a finished run (no {VOXELS_CSV})")
    out = Path(out_dir) if out_dir is not None else run_dir / "nifti"
    areas = sorted(set(read_table(run_dir / VOXELS_CSV)["area"].tolist()))
    unknown = [a for a in masks if a not in areas]
    if unknown:
        raise DataError(f"--mask {unknown[0]}={masks[unknown[0]]}: the run {run_dir} has no "
                        f"area {unknown[0]!r} (its areas: {', '.join(areas)})")
    written: list[Path] = []
    for name, measures in NIFTI_MEASURES.items():
        path = run_dir / name
        if not path.exists():
            continue
        t = read_table(path)
        prefix = "insilico_" if name == PROBE_CSV else ""
        cols = {prefix + m: t[m].astype(float) for m in measures
                if m in t and np.isfinite(t[m].astype(float)).any()}
        # stats or probe tables may cover fewer areas (e.g. probed on some): map those
        here = {a: m for a, m in masks.items() if a in set(t["area"].tolist())}
        if cols and here:
            written += voxel_maps_to_nifti(cols, t["area"], t["voxel"], here, out)
    return written

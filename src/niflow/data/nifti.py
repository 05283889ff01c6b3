"""NIfTI volumes and ROI masks: voxel time series in, per-voxel maps out (nibabel)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from niflow._atomic import atomic_write
from niflow.data.errors import DataError
from niflow.data.io import _reason

AFFINE_ATOL = 1e-4


def _nib():
    try:
        import nibabel
    except ImportError:  # pragma: no cover - nibabel is a dependency
        raise DataError("reading NIfTI needs nibabel: pip install nibabel") from None
    return nibabel


def _load_image(path: str | Path):
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    try:
        return _nib().load(str(path))
    except Exception as err:  # nibabel raises ImageFileError, OSError, EOFError...
        raise DataError(f"{path}: not a readable NIfTI image ({_reason(err)})") from None


def _image_data(path: Path, img) -> np.ndarray:
    try:
        return np.asanyarray(img.dataobj)
    except Exception as err:  # truncated or corrupt data blocks
        raise DataError(f"{path}: cannot read the image data ({_reason(err)})") from None


def load_mask(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an ROI mask image: nonzero voxels are in the ROI.

    Returns
    -------
    mask : ndarray of shape (X, Y, Z), bool
    affine : ndarray of shape (4, 4)
    """
    path = Path(path)
    data, affine = _load_volume(path, "a mask must be a 3-D image")
    mask = np.asarray(data) != 0
    if not mask.any():
        raise DataError(f"{path}: the mask is empty (no nonzero voxel)")
    return mask, affine


def _load_volume(path: Path, requirement: str) -> tuple[np.ndarray, np.ndarray]:
    """A 3-D image (a trailing axis of length 1 is dropped) and its affine (4, 4)."""
    img = _load_image(path)
    data = _image_data(path, img)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DataError(f"{path}: {requirement}, got shape {data.shape}")
    return data, np.asarray(img.affine, dtype=np.float64)


def _load_bold(paths: list[Path]) -> tuple[np.ndarray, np.ndarray, Path]:
    """Responses as (X, Y, Z, n_samples) from one 4-D image or one 3-D image per sample."""
    if len(paths) == 1:
        img = _load_image(paths[0])
        data = _image_data(paths[0], img)
        if data.ndim != 4:
            raise DataError(f"{paths[0]}: expected a 4-D image (x, y, z, samples), got shape "
                            f"{data.shape}; give one 3-D image per sample instead")
        return np.asarray(data, dtype=np.float32), np.asarray(img.affine, float), paths[0]
    vols, affine = [], None
    for p in paths:
        data, img_affine = _load_volume(p, "expected a 3-D image (one sample)")
        if vols and data.shape != vols[0].shape:
            raise DataError(f"{p}: shape {data.shape} differs from {paths[0]} "
                            f"{vols[0].shape}")
        if affine is not None and not np.allclose(img_affine, affine, atol=AFFINE_ATOL):
            raise DataError(f"{p}: affine differs from {paths[0]}'s; resample the images to "
                            f"one space first")
        affine = img_affine
        vols.append(np.asarray(data, dtype=np.float32))
    return np.stack(vols, axis=-1), affine, paths[0]


def _tr_seconds(img) -> float:
    """The repetition time in a 4-D image's header (pixdim[4] in its time unit), or 0
    without one: a header without a time unit holds no TR (nibabel, for one, writes 1)."""
    zooms = img.header.get_zooms()
    scale = {"sec": 1.0, "msec": 1e-3, "usec": 1e-6}.get(img.header.get_xyzt_units()[1])
    if scale is None or len(zooms) < 4 or not np.isfinite(zooms[3]) or zooms[3] <= 0:
        return 0.0
    return float(zooms[3]) * scale


def _checked_masks(masks: dict[str, str | Path], grid: tuple[int, ...], affine: np.ndarray,
                   first: Path) -> dict[str, np.ndarray]:
    """Each area's mask (X, Y, Z), bool, checked against the responses' grid and affine."""
    out = {}
    for area, mpath in masks.items():
        mask, m_affine = load_mask(mpath)
        if mask.shape != grid:
            raise DataError(f"{mpath}: mask of area {area!r} has shape {mask.shape} but the "
                            f"responses {first} have {grid}")
        if not np.allclose(m_affine, affine, atol=AFFINE_ATOL):
            raise DataError(f"{mpath}: mask of area {area!r} has a different affine from "
                            f"{first}; masks must be in the responses' space")
        out[area] = mask
    return out


def _masked_runs(paths: list[Path], masks: dict[str, str | Path],
                 ) -> tuple[list[dict[str, np.ndarray]], list[float]]:
    """Per 4-D image, every area's voxels (n_volumes, n_voxels) float32, and its header's TR.

    Each image is masked as it is read, so memory holds the areas' voxels, not the brain."""
    out, trs, grid, affine = [], [], None, None
    for p in paths:
        img = _load_image(p)
        data = _image_data(p, img)
        if data.ndim != 4:
            raise DataError(f"{p}: expected a 4-D image (x, y, z, volumes) for a run, got "
                            f"shape {data.shape}")
        img_affine = np.asarray(img.affine, float)
        if grid is None:
            grid = _checked_masks(masks, data.shape[:3], img_affine, p)
            affine = img_affine
        elif data.shape[:3] != next(iter(grid.values())).shape:
            raise DataError(f"{p}: grid {data.shape[:3]} differs from {paths[0]}'s "
                            f"{next(iter(grid.values())).shape}")
        elif not np.allclose(img_affine, affine, atol=AFFINE_ATOL):
            raise DataError(f"{p}: affine differs from {paths[0]}'s; resample the images to "
                            f"one space first")
        out.append({a: np.asarray(data[m].T, dtype=np.float32) for a, m in grid.items()})
        trs.append(_tr_seconds(img))
    return out, trs


def is_time_series(path: str | Path) -> bool:
    """Whether the image is 4-D with more than one volume (read from its header)."""
    shape = _load_image(path).shape
    return len(shape) == 4 and shape[3] > 1


def _movie_tr(paths: list[Path], trs: list[float]) -> float:
    """The one TR the headers agree on (seconds)."""
    if 0.0 in trs:
        raise DataError(f"{paths[trs.index(0.0)]}: the header gives no repetition time "
                        f"(pixdim[4] with a time unit); give --tr SECONDS")
    found = sorted({round(t, 6) for t in trs})
    if len(found) > 1:
        raise DataError(f"{paths[0]}: the images' headers give different repetition times "
                        f"{found} s; give --tr SECONDS if they are one TR")
    return found[0]


def load_nifti_movie(runs: list[str | Path], masks: dict[str, str | Path],
                     repeats: list[str | Path] | None = None, tr: float | None = None,
                     ) -> dict[str, np.ndarray]:
    """A movie response file (:mod:`niflow.data.movie`'s contract) from one 4-D image per run
    and one ROI mask per area.

    Parameters
    ----------
    runs : list of path
        One 4-D image (x, y, z, volumes) per run, in the order the runs were shown; they get
        the labels 1, 2, ….
    masks : dict of area name to mask path
        3-D images on the runs' grid (shape and affine).
    repeats : list of path, optional
        Repeats of the test run, one 4-D image each, all of one length: their mean becomes
        one more run (the last label), and ``<AREA>_repeats`` holds them.
    tr : float, optional
        Seconds per volume; default the images' headers (pixdim[4]), which must agree.

    Returns
    -------
    dict of str to ndarray
        ``<AREA>`` (n_TR, n_voxels) float32 (columns in C order of the mask's voxels),
        ``run`` (n_TR,) int64, ``tr`` (scalar) and, with ``repeats``, ``<AREA>_repeats``
        (n_repeats, n_TR_test, n_voxels).
    """
    paths = [Path(p) for p in runs]
    rep_paths = [Path(p) for p in (repeats or [])]
    if not paths and not rep_paths:
        raise DataError("no response image given")
    if not masks:
        raise DataError("no ROI mask given; pass one mask image per area (e.g. V1=v1.nii.gz)")
    series, trs = _masked_runs(paths + rep_paths, masks)
    tr = _movie_tr(paths + rep_paths, trs) if tr is None else tr
    if not (np.isfinite(tr) and tr > 0):
        raise DataError(f"--tr {tr}: must be a positive number of seconds")
    n_volumes = [next(iter(s.values())).shape[0] for s in series]
    series, reps = series[:len(paths)], series[len(paths):]
    if reps:
        n = n_volumes[len(paths)]
        odd = next((i for i, m in enumerate(n_volumes[len(paths):]) if m != n), None)
        if odd is not None:
            raise DataError(f"{rep_paths[odd]}: a repeat of the test run must have its {n} "
                            f"volumes (as {rep_paths[0]}), got {n_volumes[len(paths) + odd]}")
        if len(reps) < 2:
            raise DataError(f"{rep_paths[0]}: one repeat of the test run; a noise ceiling "
                            f"needs at least 2 (or pass it as a run)")
        series.append({a: np.mean([r[a] for r in reps], axis=0) for a in masks})
    out: dict[str, np.ndarray] = {a: np.concatenate([s[a] for s in series]) for a in masks}
    if reps:
        out.update({a + "_repeats": np.stack([r[a] for r in reps]) for a in masks})
    out["run"] = np.repeat(np.arange(1, len(series) + 1),
                           [next(iter(s.values())).shape[0] for s in series])
    out["tr"] = np.float64(tr)
    return out


def movie_import_summary(arrays: dict[str, np.ndarray], areas: list[str],
                         n_repeats: int) -> str:
    """What :func:`load_nifti_movie` returned, in one line (with the test run to give)."""
    runs = np.unique(arrays["run"]).tolist()
    test = (f"; run {runs[-1]} is the mean of the {n_repeats} repeats ({areas[0]}_repeats "
            f"…): --test-runs {runs[-1]}") if n_repeats else ""
    return (f"movie responses: runs {runs}, {arrays['run'].size} volumes, TR "
            f"{float(arrays['tr']):g} s; "
            + ", ".join(f"{a}: {arrays[a].shape[1]} voxels" for a in areas) + test)


def load_nifti_responses(bold: str | Path | list[str | Path],
                         masks: dict[str, str | Path]) -> dict[str, np.ndarray]:
    """Voxel responses per area from NIfTI images and one ROI mask per area.

    Parameters
    ----------
    bold : path or list of paths
        One 4-D image (x, y, z, samples) or one 3-D image per sample, in sample order.
    masks : dict of area name to mask path
        3-D images on the same grid (shape and affine) as ``bold``.

    Returns
    -------
    dict of str to ndarray of shape (n_samples, n_voxels), float32
        Columns in C order of the mask's voxel indices (see the note above).
    """
    paths = [Path(p) for p in ([bold] if isinstance(bold, str | Path) else bold)]
    if not paths:
        raise DataError("no response image given")
    if not masks:
        raise DataError("no ROI mask given; pass one mask image per area (e.g. V1=v1.nii.gz)")
    data, affine, first = _load_bold(paths)
    return {area: np.ascontiguousarray(data[mask].T)  # boolean indexing is C order
            for area, mask in _checked_masks(masks, data.shape[:3], affine, first).items()}


def nifti_from_voxels(values: np.ndarray, mask_path: str | Path, out_path: str | Path,
                      fill: float = np.nan) -> Path:
    """Write one value per mask voxel as a 3-D image in the mask's space, atomically.

    Parameters
    ----------
    values : ndarray of shape (n_mask_voxels,)
        In the mask's voxel order (C order of indices); NaN stays NaN.
    mask_path : path
        The area's ROI mask; its affine and header are kept.
    fill : float
        Value outside the mask; NaN (default) keeps it apart from a value of 0 (r = 0).
    """
    nib = _nib()
    mask, _ = load_mask(mask_path)
    values = np.asarray(values, dtype=np.float32).ravel()
    if values.size != mask.sum():
        raise DataError(f"{mask_path}: the mask has {int(mask.sum())} voxels but "
                        f"{values.size} values were given")
    ref = _load_image(mask_path)
    vol = np.full(mask.shape, fill, dtype=np.float32)
    vol[mask] = values
    header = ref.header.copy()
    header.set_data_dtype(np.float32)
    img = nib.Nifti1Image(vol, ref.affine, header)
    img.header.set_slope_inter(1.0, 0.0)  # values as given, no rescaling
    import gzip

    data = img.to_bytes()
    if str(out_path).endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    return atomic_write(out_path, lambda p: p.write_bytes(data))


def voxel_maps_to_nifti(columns: dict[str, np.ndarray], areas: np.ndarray,
                        voxels: np.ndarray, masks: dict[str, str | Path],
                        out_dir: str | Path, fill: float = np.nan) -> list[Path]:
    """Write per-voxel results of a run back into each area's mask space.

    Parameters
    ----------
    columns : dict of measure name to ndarray of shape (n_rows,)
        E.g. ``r_test``, ``prf_x`` from ``voxels.csv``.
    areas, voxels : ndarray of shape (n_rows,)
        Area name and input column (= index in the mask's voxel order) of every row.
    masks : dict of area to mask path
    out_dir : path
        Gets ``<area>_<measure>.nii.gz``; mask voxels without a row (dropped) are NaN.
    fill : float
        Value outside the mask (default NaN, as for :func:`nifti_from_voxels`).

    Returns
    -------
    list of Path
    """
    out = []
    for area, mpath in masks.items():
        mask, _ = load_mask(mpath)
        rows = np.flatnonzero(np.asarray(areas) == area)
        if not rows.size:
            raise DataError(f"no results for area {area!r}; areas with results are "
                            f"{sorted(set(np.asarray(areas).tolist()))}")
        idx = np.asarray(voxels)[rows].astype(np.int64)
        if idx.max() >= mask.sum():
            raise DataError(f"{mpath}: results index voxel {int(idx.max())} but the mask of "
                            f"area {area!r} has only {int(mask.sum())} voxels")
        for name, col in columns.items():
            vals = np.full(int(mask.sum()), np.nan, dtype=np.float32)
            vals[idx] = np.asarray(col, dtype=np.float64)[rows]
            out.append(nifti_from_voxels(vals, mpath, Path(out_dir) / f"{area}_{name}.nii.gz",
                                         fill))
    return out

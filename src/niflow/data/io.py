"""Read and write the array files users bring: MATLAB v5 and v7.3 ``.mat``, ``.npz``, HDF5.

Every failure is a :class:`DataError` whose one-line message names the file, the variable and
the problem. MATLAB v7.3 files are HDF5 files written in column-major order, so their arrays
come back with all axes reversed; :func:`load_arrays` undoes that so a v7.3 ``stim`` has the
same (n_samples, height, width) shape as its v5 twin.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import scipy.io

from niflow._atomic import atomic_write

MAT73_HEADER = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created by: niflow. HDF5 schema 1.00 ."


class DataError(ValueError):
    """Input data cannot be used as given; the message says which file and variable."""


def _reason(err: BaseException) -> str:
    """An exception's text on one line (library messages sometimes span several)."""
    text = " ".join(str(err).split())
    return text or type(err).__name__


def _is_hdf5(path: Path) -> bool:
    try:
        return h5py.is_hdf5(path)
    except OSError:
        return False


def _load_mat_v5(path: Path) -> dict[str, np.ndarray]:
    try:
        raw = scipy.io.loadmat(path, squeeze_me=False)
    except Exception as err:  # scipy raises many types for corrupt files
        raise DataError(f"{path}: not a readable MATLAB file ({_reason(err)})") from None
    return {k: v for k, v in raw.items() if not k.startswith("__")}


def _load_hdf5(path: Path, reverse_axes: bool) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    try:
        with h5py.File(path, "r") as fh:
            for name, obj in fh.items():
                if name.startswith("#") or not isinstance(obj, h5py.Dataset):
                    continue
                arr = obj[()]
                if reverse_axes and isinstance(arr, np.ndarray) and arr.ndim > 1:
                    arr = arr.transpose(tuple(range(arr.ndim - 1, -1, -1)))
                arr = np.asarray(arr)
                if reverse_axes and obj.attrs.get("MATLAB_class") == b"char":
                    # MATLAB text is stored as uint16 codes; return text (as v5 files give)
                    # so that it is never mistaken for numbers
                    rows = arr.reshape(-1, arr.shape[-1] if arr.ndim else 1) if arr.size else []
                    arr = np.array(["".join(map(chr, row)) for row in rows] or [""])
                out[name] = arr
    except Exception as err:  # h5py raises OSError, RuntimeError, TypeError... on corruption
        raise DataError(f"{path}: not a readable HDF5 file ({_reason(err)})") from None
    return out


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.ndarray):  # a .npy holds one array (no context manager)
            return {"arr_0": data}
        with data:
            return {k: data[k] for k in data.files}
    except Exception as err:  # zip, pickle and format errors all mean "not an npz we read"
        raise DataError(f"{path}: not a readable .npz/.npy file ({_reason(err)})") from None


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Read every variable of a ``.mat`` (v5 or v7.3), ``.npz``/``.npy`` or HDF5 file.

    Returns
    -------
    dict of str to ndarray
        Variables by name, in the file's row-major convention (v7.3 axes un-reversed).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    suffix = path.suffix.lower()
    if suffix == ".mat":
        if _is_hdf5(path):
            return _load_hdf5(path, reverse_axes=True)
        return _load_mat_v5(path)
    if suffix in (".npz", ".npy"):
        return _load_npz(path)
    if suffix in (".h5", ".hdf5", ".hdf"):
        if not _is_hdf5(path):
            raise DataError(f"{path}: not an HDF5 file")
        return _load_hdf5(path, reverse_axes=False)
    raise DataError(
        f"{path}: unsupported file type {suffix!r}; use .mat (v5 or v7.3), .npz or .h5")


def _numeric(path: Path, name: str, arr: np.ndarray) -> np.ndarray:
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
        kind = getattr(arr, "dtype", type(arr))
        raise DataError(f"{path}: variable {name!r} is not a numeric array (got {kind})")
    return arr


def load_stimuli(path: str | Path, variable: str = "stim") -> np.ndarray:
    """Read stimuli.

    Returns
    -------
    ndarray of shape (n_samples, height, width) or (n_samples, channels, height, width)
        In the file's dtype (uint8 or float).
    """
    path = Path(path)
    arrays = load_arrays(path)
    if variable not in arrays:
        raise DataError(
            f"{path}: variable {variable!r} not found; variables are {sorted(arrays)}")
    stim = _numeric(path, variable, arrays[variable])
    if stim.ndim not in (3, 4):
        raise DataError(
            f"{path}: variable {variable!r} has shape {stim.shape}; expected (n_samples, "
            f"height, width) or (n_samples, channels, height, width)")
    if stim.dtype.kind == "f" and not np.isfinite(stim).all():
        raise DataError(f"{path}: variable {variable!r} contains NaN or Inf")
    return stim


def load_responses(path: str | Path) -> dict[str, np.ndarray]:
    """Read voxel responses: one 2-D variable per area.

    Returns
    -------
    dict of str to ndarray of shape (n_samples, n_voxels), float32
        Areas in the file's order.
    """
    path = Path(path)
    arrays = load_arrays(path)
    if not arrays:
        raise DataError(f"{path}: no variables found; expected one (n_samples, n_voxels) "
                        f"array per area, e.g. 'V1', 'V2'")
    out: dict[str, np.ndarray] = {}
    for name, arr in arrays.items():
        arr = _numeric(path, name, arr)
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2:
            raise DataError(
                f"{path}: variable {name!r} has shape {arr.shape}; expected (n_samples, "
                f"n_voxels)")
        out[name] = arr.astype(np.float32, copy=False)
    rows = {name: a.shape[0] for name, a in out.items()}
    if len(set(rows.values())) > 1:
        raise DataError(f"{path}: areas have different numbers of rows {rows}")
    return out


def save_mat(path: str | Path, arrays: dict[str, np.ndarray], version: str = "5") -> Path:
    """Write arrays as a MATLAB file, atomically.

    ``version="5"`` uses scipy; ``"7.3"`` writes the HDF5-based format MATLAB reads with
    ``load`` (512-byte header block, axes reversed to column-major).
    """
    if version == "5":
        return atomic_write(path, lambda p: scipy.io.savemat(
            p, arrays, do_compression=False, oned_as="column"))
    if version == "7.3":
        return atomic_write(path, lambda p: _write_mat73(p, arrays))
    raise ValueError(f"unknown MATLAB file version {version!r}; use '5' or '7.3'")


def _write_mat73(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with h5py.File(path, "w", userblock_size=512) as fh:
        for name, arr in arrays.items():
            arr = np.asarray(arr)
            fh.create_dataset(name, data=arr.transpose(tuple(range(arr.ndim - 1, -1, -1))))
            fh[name].attrs["MATLAB_class"] = np.bytes_(_matlab_class(arr.dtype))
    with open(path, "r+b") as fh:
        fh.write(MAT73_HEADER.ljust(116, b" ")[:116])
        fh.write(b"\x00" * 8 + b"\x00\x02" + b"IM")


def _matlab_class(dtype: np.dtype) -> str:
    return {"f8": "double", "f4": "single", "u1": "uint8", "i1": "int8", "u2": "uint16",
            "i2": "int16", "u4": "uint32", "i4": "int32", "u8": "uint64", "i8": "int64",
            "b1": "logical"}[dtype.str[1:]]


def save_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write arrays as an uncompressed ``.npz``, atomically."""
    return atomic_write(path, lambda p: _savez(p, arrays))


def _savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    # through a file object: given a name, np.savez appends ".npz" when the name lacks it,
    # which would leave the real temporary file behind and an empty file at ``path``
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)

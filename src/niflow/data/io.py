"""Read and write the array files users bring: MATLAB v5 and v7.3 ``.mat``, ``.npz``, HDF5.

Every failure is a :class:`DataError` whose one-line message names the file, the variable and
the problem. MATLAB v7.3 files are HDF5 files written in column-major order, so their arrays
come back with all axes reversed; :func:`load_arrays` undoes that so a v7.3 ``stim`` has the
same (n_samples, height, width) shape as its v5 twin.
"""

from __future__ import annotations

import mmap
import struct
import zlib
from pathlib import Path

import h5py
import numpy as np
import scipy.io

from niflow._atomic import atomic_write
from niflow.data.errors import DataError

MAT73_HEADER = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created by: niflow. HDF5 schema 1.00 ."


def _reason(err: BaseException) -> str:
    """An exception's text on one line (library messages sometimes span several)."""
    text = " ".join(str(err).split())
    return text or type(err).__name__


def _is_hdf5(path: Path) -> bool:
    try:
        return h5py.is_hdf5(path)
    except OSError:
        return False


# MATLAB v5 element types: numbers (miINT8 ... miUINT64; 8, 10 and 11 are reserved), text
# (miUTF8/16/32), and the containers miMATRIX and miCOMPRESSED
_MI_NUMBERS = frozenset({1, 2, 3, 4, 5, 6, 7, 9, 12, 13})
_MI_TEXT = frozenset({16, 17, 18})
_MI_INT8, _MI_INT32, _MI_UINT32, _MI_MATRIX, _MI_COMPRESSED = 1, 5, 6, 14, 15
_MI_TYPES = _MI_NUMBERS | _MI_TEXT | {_MI_MATRIX, _MI_COMPRESSED}
# MATLAB array classes: cell 1, struct 2, object 3, char 4, sparse 5, numbers 6..15,
# function handle 16, opaque 17
_MX_NUMBERS = frozenset(range(6, 16))


class _Mat5Walker:
    """Check the structure of a MATLAB v5 file the way scipy's reader will walk it.

    scipy trusts the file: an element type out of range, or a complex flag on a variable
    without an imaginary part, makes it read past its tables and crash the interpreter
    (segmentation fault). A damaged file must end in a clean :class:`DataError` instead, so
    every variable is walked first: element tags (types and sizes within bounds) and, per
    array class, the elements scipy will read. Only tags are read (the file is
    memory-mapped); compressed variables are inflated.
    """

    def __init__(self, path: Path, order: str) -> None:
        self.path, self.order = path, order

    def damaged(self, what: str) -> DataError:
        return DataError(f"{self.path}: damaged MATLAB file ({what}); re-export it")

    def elements(self, buf, pos: int, end: int):
        """Yield ``(type, start of data, size of data)`` for each element in [pos, end)."""
        while end - pos >= 8:
            first, second = struct.unpack_from(self.order + "II", buf, pos)
            if first >> 16:  # a small element: type and size share the first word
                mdtype, nbytes = first & 0xFFFF, first >> 16
                if mdtype not in _MI_NUMBERS | _MI_TEXT or nbytes > 4:
                    raise self.damaged(f"bad element tag at byte {pos}")
                yield mdtype, pos + 4, nbytes
                pos += 8
                continue
            mdtype, nbytes = first, second
            if mdtype not in _MI_TYPES:
                raise self.damaged(f"unknown element type {mdtype} at byte {pos}")
            if nbytes > end - pos - 8:
                raise self.damaged(f"element at byte {pos} runs past its end")
            yield mdtype, pos + 8, nbytes
            # compressed elements are not padded, all others to 8 bytes
            pos += 8 + nbytes + (0 if mdtype == _MI_COMPRESSED else -nbytes % 8)

    def file(self, buf, size: int) -> None:
        for mdtype, start, nbytes in self.elements(buf, 128, size):
            if mdtype == _MI_COMPRESSED:
                try:
                    inner = zlib.decompress(buf[start:start + nbytes])
                except (zlib.error, MemoryError) as err:
                    raise self.damaged(f"compressed variable: {_reason(err)}") from None
                for kind, pos, n in self.elements(inner, 0, len(inner)):
                    self.matrix(inner, kind, pos, n)
                    break
            else:
                self.matrix(buf, mdtype, start, nbytes)

    def matrix(self, buf, mdtype: int, start: int, nbytes: int) -> None:
        """One miMATRIX element (a variable, a cell or a struct field)."""
        if mdtype != _MI_MATRIX:
            raise self.damaged(f"expected a variable (miMATRIX), got element type {mdtype}")
        if nbytes == 0:
            return  # an empty array
        parts = self.elements(buf, start, start + nbytes)

        def take(allowed: frozenset[int] | set[int], what: str) -> tuple[int, int, int]:
            part = next(parts, None)
            if part is None or part[0] not in allowed:
                raise self.damaged(f"{what} of the variable at byte {start - 8} is missing")
            return part

        _, pos, n = take({_MI_UINT32}, "array flags")
        if n < 4:
            raise self.damaged(f"array flags at byte {pos} are too short")
        word = struct.unpack_from(self.order + "I", buf, pos)[0]
        mxclass, complex_ = word & 0xFF, bool(word & 0x800)
        if mxclass == 17:  # opaque (MATLAB objects): nested variables, checked as such
            for part in parts:
                if part[0] == _MI_MATRIX:
                    self.matrix(buf, *part)
            return
        _, pos, n = take({_MI_INT32}, "dimensions")
        dims = struct.unpack_from(self.order + f"{n // 4}i", buf, pos)
        if len(dims) < 2 or min(dims) < 0:
            raise self.damaged(f"impossible dimensions {dims} at byte {pos}")
        count = int(np.prod(dims, dtype=object))
        take({_MI_INT8}, "name")
        if mxclass in _MX_NUMBERS or mxclass == 4:
            take(_MI_NUMBERS | _MI_TEXT if mxclass == 4 else _MI_NUMBERS, "data")
            if complex_:
                take(_MI_NUMBERS, "imaginary part")
        elif mxclass == 5:  # sparse: row indices, column starts, values
            for what in ("row indices", "column starts", "values"):
                take(_MI_NUMBERS, what)
            if complex_:
                take(_MI_NUMBERS, "imaginary part")
        elif mxclass == 1:
            for _ in range(count):
                self.matrix(buf, *take({_MI_MATRIX}, "cell"))
        elif mxclass in (2, 3):
            if mxclass == 3:
                take({_MI_INT8}, "class name")
            _, pos, n = take({_MI_INT32}, "field name length")
            length = struct.unpack_from(self.order + "i", buf, pos)[0] if n >= 4 else 0
            _, _, n = take({_MI_INT8}, "field names")
            fields = n // length if length > 0 else 0
            for _ in range(count * fields):
                self.matrix(buf, *take({_MI_MATRIX}, "field"))
        elif mxclass == 16:
            self.matrix(buf, *take({_MI_MATRIX}, "function handle"))
        else:
            raise self.damaged(f"unknown array class {mxclass} at byte {start - 8}")


def _check_mat5_structure(path: Path) -> None:
    with open(path, "rb") as fh:
        size = fh.seek(0, 2)
        if size < 128:
            return  # too short for a v5 header: scipy reports it
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            order = {b"IM": "<", b"MI": ">"}.get(buf[126:128])
            if order is not None:  # otherwise a v4 file, read by scipy's Python code
                _Mat5Walker(path, order).file(buf, size)


def _load_mat_v5(path: Path) -> dict[str, np.ndarray]:
    _check_mat5_structure(path)
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
                _check_fits_in_memory(path, name, obj.size * obj.dtype.itemsize)
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
    except DataError:
        raise
    except Exception as err:  # h5py raises OSError, RuntimeError, TypeError... on corruption
        raise DataError(f"{path}: not a readable HDF5 file ({_reason(err)})") from None
    return out


def _check_fits_in_memory(path: Path, name: str, nbytes: int) -> None:
    # a damaged header can claim any size; refuse before allocating rather than after
    from niflow._system import available_memory, format_bytes

    free = available_memory()
    if free is not None and nbytes > free:
        raise DataError(f"{path}: variable {name!r} claims {format_bytes(nbytes)}, more than "
                        f"the {format_bytes(free)} of memory available (a damaged file, or "
                        f"data too large for this machine)")


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
    try:
        with open(path, "rb"):
            pass
    except OSError as err:  # e.g. permission denied: say so, not "not a MATLAB file"
        raise DataError(f"{path}: cannot read the file ({err.strerror})") from None
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


def load_stimuli(path: str | Path, variable: str = "stim") -> np.ndarray:
    """Read stimuli: grey or colour images, one per row.

    Returns
    -------
    ndarray of shape (n_samples, height, width) or colour (n_samples, height, width, 3)
        or (n_samples, 3, height, width).
        As stored (axes of MATLAB v7.3 files un-reversed), in the file's dtype (uint8 or
        float). A 4-D array whose last axis is 3 is channel-last colour, else one whose axis
        1 is 3 is channel-first colour; any other 4-D array raises a :class:`DataError`
        naming the file, the variable and the shape (:mod:`niflow.data.layout`). The
        network's input is always (n_samples, channels, height, width)
        (:func:`niflow.data.dataset.scale_stimuli`).
    """
    from niflow.data.validate import check_stimulus_array

    path = Path(path)
    arrays = load_arrays(path)
    if variable not in arrays:
        hint = ""
        if arrays and all(getattr(a, "ndim", 0) <= 2 for a in arrays.values()):
            hint = " (only 2-D variables: is this the response file? pass it as --bold)"
        raise DataError(
            f"{path}: variable {variable!r} not found; variables are {sorted(arrays)}{hint}")
    return check_stimulus_array(arrays[variable], str(path), variable)


def load_responses(path: str | Path) -> dict[str, np.ndarray]:
    """Read voxel responses: one 2-D variable per area.

    Returns
    -------
    dict of str to ndarray of shape (n_samples, n_voxels), float32
        Areas in the file's order. Row counts are compared with the stimuli's (and with
        each other) by :mod:`niflow.data.validate`, which can tell a transposed array.
    """
    from niflow.data.validate import check_response_array

    path = Path(path)
    arrays = load_arrays(path)
    if not arrays:
        raise DataError(f"{path}: no variables found; expected one (n_samples, n_voxels) "
                        f"array per area, e.g. 'V1', 'V2'")
    out: dict[str, np.ndarray] = {}
    for name, arr in arrays.items():
        arr = check_response_array(arr, str(path), name)
        with np.errstate(over="ignore"):
            out[name] = arr.astype(np.float32, copy=False)
        if arr.dtype.kind == "f" and np.isfinite(arr).sum() != np.isfinite(out[name]).sum():
            raise DataError(f"{path}: variable {name!r} has values beyond the float32 range "
                            f"(|x| > 3.4e38); rescale it")
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


# ---------------------------------------------------------------------------------------------
# Repeated measurements
# ---------------------------------------------------------------------------------------------


def load_response_repeats(path: str | Path,
                          ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    """Read responses that may carry a leading repeat axis.

    Every area variable is either (n_samples, n_voxels) or (n_repeats, n_samples, n_voxels);
    with a repeat axis the responses returned are the mean over repeats.

    Returns
    -------
    responses : dict of str to ndarray of shape (n_samples, n_voxels), float32
    repeats : dict of str to ndarray of shape (n_repeats, n_samples, n_voxels), or None
        None when the file has no repeat axis.
    """
    path = Path(path)
    arrays = load_arrays(path)
    if not arrays:
        raise DataError(f"{path}: no variables found; expected one array per area")
    ndims = {name: np.ndim(a) for name, a in arrays.items()}
    if not any(d == 3 for d in ndims.values()):
        return load_responses(path), None
    if any(d != 3 for d in ndims.values()):
        raise DataError(f"{path}: some areas have a repeat axis and some do not "
                        f"(dimensions {ndims}); give every area as (n_repeats, n_samples, "
                        f"n_voxels) or none")
    for name, a in arrays.items():
        if not isinstance(a, np.ndarray) or a.dtype.kind not in "biuf":
            raise DataError(f"{path}: variable {name!r} is not a numeric array")
    repeats = {name: a.astype(np.float32, copy=False) for name, a in arrays.items()}
    shapes = {name: a.shape[:2] for name, a in repeats.items()}
    if len(set(shapes.values())) > 1:
        raise DataError(f"{path}: areas differ in (n_repeats, n_samples) {shapes}")
    return {name: a.mean(0) for name, a in repeats.items()}, repeats


def stack_repeats(paths: list[str | Path]) -> dict[str, np.ndarray]:
    """Read one response file per repeat and stack them.

    Returns
    -------
    dict of str to ndarray of shape (n_repeats, n_samples, n_voxels), float32
        Areas present in every file.
    """
    if len(paths) < 2:
        raise DataError(f"a noise ceiling needs at least 2 repeat files, got {len(paths)}")
    loaded = [load_responses(p) for p in paths]
    areas = [a for a in loaded[0] if all(a in r for r in loaded[1:])]
    if not areas:
        raise DataError(f"repeat files {[str(p) for p in paths]} share no area variable")
    out = {}
    for a in areas:
        shapes = {str(p): r[a].shape for p, r in zip(paths, loaded, strict=True)}
        if len(set(shapes.values())) > 1:
            raise DataError(f"area {a!r} has different shapes in the repeat files {shapes}")
        out[a] = np.stack([r[a] for r in loaded])
    return out


# ---------------------------------------------------------------------------------------------
# NIfTI
# ---------------------------------------------------------------------------------------------
#
# Voxel order: a mask's voxels are taken in C order of their (i, j, k) array indices
# (``np.flatnonzero(mask)`` of the 3-D array as nibabel returns it), so column ``v`` of an
# area's response matrix is the v-th nonzero voxel of its mask in that order, and writing a
# result vector back puts element ``v`` at the same voxel.



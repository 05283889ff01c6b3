"""Property-based tests of the loaders and of validation (hypothesis).

Random arrays (shapes with 0 to 4 axes, empty axes, every dtype family: bool, unsigned and
signed integers, float16/32/64 with NaN and Inf, complex, text, object) are written with the
libraries users write with (scipy, numpy, h5py, and h5py the way MATLAB writes v7.3 files),
and valid files are damaged (truncated, bytes flipped, windows overwritten). Every outcome
must be either a correct load, whose values equal what was written (under the file format's
own shape rules), or a clean :class:`DataError`; any other exception fails the test. Where
the outcome is predictable from the array (e.g. a 2-D ``stim`` can never load), the test
says which of the two it must be.

Examples are derandomised (the same on every run) and bounded in number, so the suite is
reproducible and fast.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import scipy.io
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from niflow.config import ConfigError, preset
from niflow.data.errors import DataError
from niflow.data.io import load_arrays, load_responses, load_stimuli
from niflow.runs.inputs import check_arrays, validate_inputs

SETTINGS = {"derandomize": True, "deadline": None, "database": None,
            "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large,
                                      HealthCheck.filter_too_much]}
# validation warns about every dropped voxel; here that is expected, not news
pytestmark = pytest.mark.filterwarnings("ignore::niflow.data.dataset.DroppedVoxelsWarning")
WORKDIR = Path(tempfile.mkdtemp(prefix="niflow-properties-"))
atexit.register(shutil.rmtree, WORKDIR, ignore_errors=True)

NUMERIC = [np.bool_, np.uint8, np.uint16, np.int16, np.int32, np.int64, np.uint64,
           np.float16, np.float32, np.float64, np.complex64, np.complex128]


def _numeric_arrays(max_dims: int = 4, max_side: int = 5):
    shape = hnp.array_shapes(min_dims=0, max_dims=max_dims, min_side=0, max_side=max_side)
    return st.sampled_from(NUMERIC).flatmap(
        lambda dt: hnp.arrays(np.dtype(dt), shape,
                              elements=_elements(np.dtype(dt))))


def _elements(dtype: np.dtype):
    if dtype.kind == "f":
        width = 16 if dtype.itemsize == 2 else 32 if dtype.itemsize == 4 else 64
        return st.floats(width=width, allow_nan=True, allow_infinity=True)
    if dtype.kind == "c":
        return st.complex_numbers(allow_nan=True, allow_infinity=True,
                                  width=dtype.itemsize * 8)
    return None  # hypothesis's default covers the whole range of integers and bools


def _image_stacks():
    """Arrays that may be valid stimuli: 3-D or 4-D (valid when grey or colour, see
    :mod:`niflow.data.layout`), non-empty, finite."""
    shape = hnp.array_shapes(min_dims=3, max_dims=4, min_side=1, max_side=4)
    dtypes = st.sampled_from([np.bool_, np.uint8, np.int16, np.float16, np.float32,
                              np.float64])
    return dtypes.flatmap(lambda dt: hnp.arrays(
        np.dtype(dt), shape,
        elements=st.floats(-1e3, 1e3, width=16) if np.dtype(dt).kind == "f" else None))


ARRAYS = st.one_of(
    _numeric_arrays(),
    _image_stacks(),
    hnp.arrays(np.dtype("U3"), hnp.array_shapes(min_dims=0, max_dims=2, min_side=0,
                                                max_side=3)),
    st.just(np.array([1, "a", None], dtype=object)),
)


# --------------------------------------------------------------------------- writers


def _mat5(path: Path, arrays: dict[str, np.ndarray]) -> None:
    scipy.io.savemat(path, arrays)


MATLAB_CLASS = {"b": "logical", "u1": "uint8", "u2": "uint16", "i2": "int16", "i4": "int32",
                "i8": "int64", "u8": "uint64", "f4": "single", "f8": "double"}


def _mat73(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """As MATLAB writes v7.3: HDF5 after a 512-byte header, axes reversed (column-major)."""
    with h5py.File(path, "w", userblock_size=512) as fh:
        for name, arr in arrays.items():
            key = "b" if arr.dtype.kind == "b" else arr.dtype.str[1:]
            if key not in MATLAB_CLASS:
                raise TypeError(f"MATLAB has no class for {arr.dtype}")
            # np.ascontiguousarray would make a 0-d array 1-d
            fh.create_dataset(name, data=np.array(arr.T, order="C"))
            fh[name].attrs["MATLAB_class"] = np.bytes_(MATLAB_CLASS[key])
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024"
    with open(path, "r+b") as fh:
        fh.write(header.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM")


def _h5(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with h5py.File(path, "w") as fh:
        for name, arr in arrays.items():
            fh.create_dataset(name, data=arr)


WRITERS = {
    "mat5": (".mat", _mat5),
    "mat73": (".mat", _mat73),
    "npz": (".npz", lambda p, a: np.savez(p, **a)),
    "npz_compressed": (".npz", lambda p, a: np.savez_compressed(p, **a)),
    "h5": (".h5", _h5),
}


def _write(fmt: str, arrays: dict[str, np.ndarray], name: str = "data") -> Path:
    suffix, write = WRITERS[fmt]
    path = WORKDIR / f"{name}{suffix}"
    path.unlink(missing_ok=True)
    try:
        write(path, arrays)
    except Exception:  # the writing library does not support this array: not our concern
        assume(False)
    return path


def _stored_shape(fmt: str, arr: np.ndarray) -> tuple[int, ...]:
    """The shape a format gives back: MATLAB v5 makes every array at least 2-D (a 1-D array
    becomes a row, an empty one 0 × 0)."""
    if fmt == "mat5" and arr.ndim < 2:
        return (1, 1) if arr.ndim == 0 else (1, arr.size) if arr.size else (0, 0)
    return arr.shape


def _same_values(loaded: np.ndarray, written: np.ndarray, shape: tuple[int, ...]) -> bool:
    if loaded.shape != shape:
        return False
    a, b = loaded.reshape(-1), written.reshape(-1)
    if written.dtype.kind in "fc":
        return bool(np.array_equal(a.astype(written.dtype), b, equal_nan=True))
    return bool(np.array_equal(a, b))


def _load(func, *args):
    """Call a loader: return its result, or None after a clean DataError."""
    try:
        return func(*args)
    except DataError as err:
        assert "\n" not in str(err)
        return None


# --------------------------------------------------------------------------- round trips


@settings(max_examples=60, **SETTINGS)
@given(fmt=st.sampled_from(list(WRITERS)), arr=ARRAYS)
def test_load_arrays_returns_what_was_written(fmt, arr):
    path = _write(fmt, {"x": arr})
    got = _load(load_arrays, path)
    if arr.dtype.kind in "biufc":  # numbers must always come back, value for value
        assert got is not None and set(got) == {"x"}
        assert _same_values(got["x"], arr, _stored_shape(fmt, arr)), (got["x"], arr)
    elif got is not None:
        assert isinstance(got["x"], np.ndarray)


@settings(max_examples=60, **SETTINGS)
@given(fmt=st.sampled_from(list(WRITERS)), arr=ARRAYS,
       other=_numeric_arrays(max_dims=2, max_side=3))
def test_load_stimuli_loads_exactly_the_valid_image_stacks(fmt, arr, other):
    path = _write(fmt, {"stim": arr, "labels": other})
    got = _load(load_stimuli, path)
    event("loaded" if got is not None else "refused")
    shape = _stored_shape(fmt, arr)
    # 4-D: colour channel-last (last axis 3) or channel-first (axis 1 is 3, or 1 for grey)
    layout_ok = len(shape) == 3 or (len(shape) == 4 and (shape[3] == 3 or shape[1] in (1, 3)))
    valid = (arr.dtype.kind in "biuf" and layout_ok and arr.size > 0
             and (arr.dtype.kind != "f" or bool(np.isfinite(arr).all())))
    assert (got is not None) == valid, (arr.dtype, shape)
    if got is not None:
        assert _same_values(got, arr, shape)


@settings(max_examples=60, **SETTINGS)
@given(fmt=st.sampled_from(list(WRITERS)),
       v1=st.one_of(ARRAYS, hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=2,
                                                                    max_side=4))),
       v2=_numeric_arrays(max_dims=2))
def test_load_responses_loads_exactly_the_valid_areas(fmt, v1, v2):
    path = _write(fmt, {"V1": v1, "V2": v2})
    got = _load(load_responses, path)
    event("loaded" if got is not None else "refused")

    def valid(arr: np.ndarray) -> bool:
        if arr.dtype.kind not in "biuf" or len(_stored_shape(fmt, arr)) not in (1, 2):
            return False
        with np.errstate(over="ignore"):  # finite values must stay finite in float32
            return bool((np.isfinite(arr) == np.isfinite(arr.astype(np.float32))).all())

    assert (got is not None) == (valid(v1) and valid(v2))
    if got is not None:
        for name, arr in (("V1", v1), ("V2", v2)):
            shape = _stored_shape(fmt, arr)
            shape = (shape[0], 1) if len(shape) == 1 else shape
            assert got[name].dtype == np.float32
            with np.errstate(over="ignore"):
                assert _same_values(got[name], arr.astype(np.float32), shape)


# --------------------------------------------------------------------------- damaged files


def _valid_file(fmt: str) -> bytes:
    rng = np.random.default_rng(5)
    arrays = {"stim": rng.integers(0, 256, (6, 5, 4), dtype=np.uint8),
              "V1": rng.normal(size=(6, 3)).astype(np.float32)}
    suffix, write = WRITERS[fmt]
    path = WORKDIR / f"valid_{fmt}{suffix}"
    write(path, arrays)
    return path.read_bytes()


VALID = {fmt: _valid_file(fmt) for fmt in WRITERS}


@st.composite
def _damage(draw, blob: bytes) -> bytes:
    kind = draw(st.sampled_from(["truncate", "flip", "overwrite"]))
    n = len(blob)
    if kind == "truncate":
        return blob[:draw(st.integers(0, n - 1))]
    data = bytearray(blob)
    if kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, n - 1))] ^= draw(st.integers(1, 255))
    else:
        start = draw(st.integers(0, n - 1))
        patch = draw(st.binary(min_size=1, max_size=64))
        data[start:start + len(patch)] = patch
    return bytes(data)


@pytest.mark.parametrize("fmt", list(WRITERS))
@settings(max_examples=40, **SETTINGS)
@given(data=st.data())
def test_damaged_files_load_or_fail_cleanly(fmt, data):
    blob = data.draw(_damage(VALID[fmt]))
    path = WORKDIR / f"damaged{WRITERS[fmt][0]}"
    path.write_bytes(blob)
    arrays = _load(load_arrays, path)
    if arrays is not None:
        assert all(isinstance(k, str) for k in arrays)
    stim = _load(load_stimuli, path)
    if stim is not None:
        assert stim.ndim in (3, 4) and stim.dtype.kind in "biuf"
    resp = _load(load_responses, path)
    if resp is not None:
        assert all(r.ndim == 2 and r.dtype == np.float32 for r in resp.values())


# --------------------------------------------------------------------------- validation


@st.composite
def _training_inputs(draw):
    """Stimuli, responses and a test-row spec: mostly consistent, sometimes not."""
    consistent = draw(st.booleans())
    n = draw(st.integers(6, 14) if consistent else st.integers(1, 14))
    side = draw(st.integers(4, 10) if consistent else st.integers(1, 10))
    dtype = draw(st.sampled_from([np.uint8, np.float32, np.float64]))
    stim = draw(hnp.arrays(np.dtype(dtype), (n, side, side)))
    if dtype != np.uint8 and (consistent or draw(st.booleans())):
        stim = np.nan_to_num(stim, nan=0.0, posinf=1.0, neginf=0.0)
    # values far apart: a voxel either varies clearly or not at all (the round-off
    # threshold has its own tests)
    values = st.sampled_from([0.0, 1.0, -2.5, 3.0] if consistent else
                             [0.0, 1.0, -2.5, 3.0, np.nan, np.inf])
    responses = {}
    areas = [["V1"], ["V1", "V2"], ["V2"]] + ([] if consistent else [["V1", "V3"]])
    for area in draw(st.sampled_from(areas)):
        rows = n if consistent else draw(st.sampled_from([n, n, n + 1, max(n - 1, 0)]))
        arr = draw(hnp.arrays(np.float64, (rows, draw(st.integers(0 if not consistent else 1,
                                                                  5))), elements=values))
        if consistent:  # a few damaged voxels among good ones
            arr[:, 0] = np.arange(rows) % 3  # one voxel that always varies
            if arr.shape[1] > 2 and draw(st.booleans()):
                arr[draw(st.integers(0, rows - 1)), 1] = np.nan
        elif draw(st.booleans()):
            arr = arr.T  # transposed, as MATLAB exports often are
        responses[area] = arr
    if consistent:
        start, stop = draw(st.integers(n - 3, n - 1)), n
    else:
        start, stop = draw(st.integers(-2, n + 2)), draw(st.integers(-2, n + 2))
    return stim, responses, f"{start}:{stop}"


def _check_invariants(inputs, stim, responses, spec) -> None:
    n = stim.shape[0]
    split = inputs.split
    parts = np.concatenate([split.train, split.val, split.test])
    assert np.array_equal(np.sort(parts), np.arange(n))  # a partition of the rows
    assert np.array_equal(split.test, np.arange(n)[slice(*map(int, spec.split(":")))])
    fit = np.concatenate([split.train, split.val])
    assert set(inputs.voxel_index) == set(responses)
    for area, keep in inputs.voxel_index.items():
        arr = responses[area]
        assert arr.shape[0] == n and keep.size > 0
        for j in range(arr.shape[1]):  # kept exactly when finite and varying on fit rows
            usable = bool(np.isfinite(arr[:, j]).all()) and np.ptp(arr[fit, j]) > 0
            assert (j in keep) == usable
    assert len(inputs.warnings) == sum(
        1 for a, k in inputs.voxel_index.items() if k.size < responses[a].shape[1])


@settings(max_examples=80, **SETTINGS)
@given(case=_training_inputs())
def test_check_arrays_accepts_only_consistent_inputs(case):
    stim, responses, spec = case
    cfg = preset("basicnif")
    try:
        inputs = check_arrays(stim, responses, cfg, spec)
    except (DataError, ConfigError) as err:
        event(f"refused: {type(err).__name__}")
        assert "\n" not in str(err)
        n = stim.shape[0]
        # basicnif pools twice by 2: images under 4 pixels leave V2 without a grid
        assert (not np.isfinite(stim).all() or stim.shape[1] < 4
                or any(r.shape[0] != n or r.shape[1] == 0 for r in responses.values())
                or "V3" in responses or "test rows" in str(err)
                or "training rows" in str(err) or "usable" in str(err)), str(err)
        return
    event("accepted")
    _check_invariants(inputs, stim, responses, spec)


@settings(max_examples=30, **SETTINGS)
@given(case=_training_inputs(), fmt=st.sampled_from(["npz", "mat5", "h5"]))
def test_validate_inputs_on_files(case, fmt):
    stim, responses, spec = case
    stim_path = _write(fmt, {"stim": stim}, "stim")
    bold_path = _write(fmt, responses, "bold")
    cfg = preset("basicnif")
    try:
        inputs = validate_inputs(stim_path, bold_path, cfg, spec)
    except (DataError, ConfigError) as err:
        event(f"refused: {type(err).__name__}")
        assert "\n" not in str(err)
        return
    event("accepted")
    loaded = {a: r.astype(np.float64) for a, r in load_responses(bold_path).items()}
    _check_invariants(inputs, stim, loaded, spec)
    assert inputs.test_rows.size > 0


# --------------------------------------------------------------------------- known crashes

CRASH_CHECK = r"""
import io, struct, sys
import numpy as np, scipy.io
from niflow.data.io import DataError, load_arrays

buf = io.BytesIO()
scipy.io.savemat(buf, {"x": np.arange(6, dtype=np.uint8).reshape(2, 3), "y": np.ones((2, 2))})
good = buf.getvalue()
# the layout scipy writes: variable tag at 128, array flags at 136 (class and flag bytes at
# 144 and 145), dimensions at 152, the name 'x' as a small element at 168, data tag at 176
assert struct.unpack_from("<II", good, 128) == (14, 56)
assert struct.unpack_from("<II", good, 176) == (2, 6) and good[144] == 9
damages = {
    "bad type": good[:176] + struct.pack("<I", 0xB902) + good[180:],
    "complex flag": good[:145] + bytes([good[145] | 0x08]) + good[146:],
}
for name, blob in damages.items():
    path = sys.argv[1] + "/" + name.replace(" ", "_") + ".mat"
    open(path, "wb").write(blob)
    try:
        load_arrays(path)
    except DataError as err:
        print(name, "->", err)
"""


def test_damaged_mat5_files_that_crash_scipy_are_refused(tmp_path):
    """Two damages that make scipy's reader crash the interpreter (segmentation fault) in
    scipy 1.17: an element type out of range, and a complex flag on a real variable. In a
    subprocess, so that a regression fails this test instead of killing the test run."""
    res = subprocess.run([sys.executable, "-c", CRASH_CHECK, str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("bad type -> ") and "unknown element type 47362" in lines[0]
    assert lines[1].startswith("complex flag -> ") and "imaginary part" in lines[1]
    assert all("damaged MATLAB file" in line for line in lines)

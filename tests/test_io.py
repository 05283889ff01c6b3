"""File loaders: round trips through every supported format, errors, atomic writes.

References are independent of niflow: files are written with scipy, numpy and h5py directly
(as users' files are) and compared with the arrays that went in.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
from scipy.io.matlab import matfile_version

from niflow.config import preset
from niflow.data.errors import DataError
from niflow.data.io import load_arrays, load_responses, load_stimuli, save_mat, save_npz
from niflow.runs.inputs import check_arrays

# distinct sizes on every axis, so that a transposed array can never pass for the original
N, H, W = 7, 5, 6
NV1, NV2 = 4, 3


@pytest.fixture()
def arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1234)
    return {
        "stim": rng.integers(0, 256, size=(N, H, W), dtype=np.uint8),
        "V1": rng.normal(size=(N, NV1)).astype(np.float32),
        "V2": rng.normal(size=(N, NV2)),  # float64
    }


def _mat73_header() -> bytes:
    text = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5"
    return text.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"


def _write_matlab_like_73(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """A v7.3 file as MATLAB writes it: HDF5 with a 512-byte user block holding the MATLAB
    header, every array stored column-major (all axes reversed)."""
    with h5py.File(path, "w", userblock_size=512) as fh:
        for name, arr in arrays.items():
            fh.create_dataset(name, data=np.ascontiguousarray(arr.T))  # .T reverses all axes
            fh[name].attrs["MATLAB_class"] = np.bytes_(
                {"u1": "uint8", "f4": "single", "f8": "double"}[arr.dtype.str[1:]])
    with open(path, "r+b") as fh:
        fh.write(_mat73_header())


def _write_h5(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with h5py.File(path, "w") as fh:
        for name, arr in arrays.items():
            fh.create_dataset(name, data=arr)


WRITERS = {
    "mat5-scipy": ("data.mat", lambda p, a: scipy.io.savemat(p, a)),
    "mat5-niflow": ("data.mat", lambda p, a: save_mat(p, a, version="5")),
    "mat73-niflow": ("data.mat", lambda p, a: save_mat(p, a, version="7.3")),
    "mat73-matlab-like": ("data.mat", _write_matlab_like_73),
    "npz": ("data.npz", lambda p, a: np.savez(p, **a)),
    "npz-compressed": ("data.npz", lambda p, a: np.savez_compressed(p, **a)),
    "npz-niflow": ("data.npz", save_npz),
    "h5": ("data.h5", _write_h5),
    "hdf5": ("data.hdf5", _write_h5),
}


@pytest.mark.parametrize("fmt", list(WRITERS))
def test_round_trip(tmp_path, arrays, fmt):
    name, write = WRITERS[fmt]
    path = tmp_path / name
    write(path, arrays)

    stim = load_stimuli(path)
    assert stim.shape == (N, H, W)
    assert stim.dtype == np.uint8
    np.testing.assert_array_equal(stim, arrays["stim"])

    # a stimulus file may hold other variables; the responses file here holds only areas
    resp_path = tmp_path / f"resp{path.suffix}"
    write(resp_path, {"V1": arrays["V1"], "V2": arrays["V2"]})
    resp = load_responses(resp_path)
    assert list(resp) == ["V1", "V2"]
    for area, nv in (("V1", NV1), ("V2", NV2)):
        assert resp[area].shape == (N, nv)
        assert resp[area].dtype == np.float32
        np.testing.assert_array_equal(resp[area], arrays[area].astype(np.float32))


def test_matlab_like_73_is_read_in_row_major_order(tmp_path, arrays):
    path = tmp_path / "matlab.mat"
    _write_matlab_like_73(path, arrays)
    with h5py.File(path, "r") as fh:  # what is on disk is column-major
        assert fh["stim"].shape == (W, H, N)
        assert fh["V1"].shape == (NV1, N)
    got = load_arrays(path)
    assert set(got) == {"stim", "V1", "V2"}
    assert got["stim"].shape == (N, H, W)
    np.testing.assert_array_equal(got["stim"], arrays["stim"])
    np.testing.assert_array_equal(got["V1"], arrays["V1"])
    np.testing.assert_array_equal(got["V2"], arrays["V2"])


def test_float_stimuli_keep_their_dtype(tmp_path):
    stim = np.random.default_rng(0).random((N, H, W))
    for path in (tmp_path / "s.mat", tmp_path / "s.npz"):
        (save_mat if path.suffix == ".mat" else save_npz)(path, {"stim": stim})
        got = load_stimuli(path)
        assert got.dtype == np.float64
        np.testing.assert_array_equal(got, stim)


def test_four_d_stimuli_and_other_variable_name(tmp_path):
    stim = np.random.default_rng(0).integers(0, 256, (N, 3, H, W), dtype=np.uint8)
    path = tmp_path / "s.mat"
    save_mat(path, {"images": stim}, version="7.3")
    got = load_stimuli(path, variable="images")
    assert got.shape == (N, 3, H, W)
    np.testing.assert_array_equal(got, stim)


def test_npy_file(tmp_path, arrays):
    path = tmp_path / "stim.npy"
    np.save(path, arrays["stim"])
    got = load_arrays(path)
    assert list(got) == ["arr_0"]
    np.testing.assert_array_equal(got["arr_0"], arrays["stim"])
    np.testing.assert_array_equal(load_stimuli(path, variable="arr_0"), arrays["stim"])


def test_one_d_response_becomes_one_voxel(tmp_path):
    v = np.arange(N, dtype=np.float64)
    path = tmp_path / "r.npz"
    np.savez(path, V1=v)
    got = load_responses(path)
    assert got["V1"].shape == (N, 1)
    np.testing.assert_array_equal(got["V1"][:, 0], v.astype(np.float32))


def test_mat73_written_by_niflow_is_hdf5_with_matlab_header(tmp_path, arrays):
    path = tmp_path / "x.mat"
    save_mat(path, arrays, version="7.3")
    assert h5py.is_hdf5(path)
    head = path.read_bytes()[:128]
    assert head.startswith(b"MATLAB 7.3 MAT-file")
    assert head[124:128] == b"\x00\x02IM"  # version 0x0200, little-endian marker
    assert matfile_version(str(path)) == (2, 0)  # scipy's own reading of the header
    with h5py.File(path, "r") as fh:  # stored column-major, as MATLAB expects
        assert fh["stim"].shape == (W, H, N)
        assert fh["stim"].attrs["MATLAB_class"] == b"uint8"
        assert fh["V2"].attrs["MATLAB_class"] == b"double"


def test_mat5_written_by_niflow_is_read_by_scipy(tmp_path, arrays):
    path = tmp_path / "x.mat"
    save_mat(path, arrays, version="5")
    assert matfile_version(str(path))[0] == 1
    raw = scipy.io.loadmat(path)
    np.testing.assert_array_equal(raw["stim"], arrays["stim"])
    np.testing.assert_array_equal(raw["V2"], arrays["V2"])


def test_save_mat_rejects_unknown_version(tmp_path, arrays):
    with pytest.raises(ValueError, match="7.3"):
        save_mat(tmp_path / "x.mat", arrays, version="6")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- errors


def _raises(func, path: Path, *fragments: str) -> DataError:
    with pytest.raises(DataError) as info:
        func(path)
    msg = str(info.value)
    assert str(path) in msg
    for frag in fragments:
        assert frag in msg, (frag, msg)
    assert "\n" not in msg
    return info.value


def test_missing_file(tmp_path):
    _raises(load_stimuli, tmp_path / "nope.mat", "not found")
    _raises(load_responses, tmp_path / "nope.npz", "not found")


def test_folder_is_not_a_file(tmp_path):
    folder = tmp_path / "dir.mat"
    folder.mkdir()
    _raises(load_stimuli, folder)


def test_unsupported_extension(tmp_path):
    path = tmp_path / "stim.txt"
    path.write_text("1 2 3\n")
    _raises(load_stimuli, path, ".txt")


@pytest.mark.parametrize("suffix", [".mat", ".npz", ".h5", ".npy"])
def test_random_bytes(tmp_path, suffix):
    path = tmp_path / f"junk{suffix}"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
    _raises(load_stimuli, path)
    _raises(load_responses, path)


@pytest.mark.parametrize("suffix", [".mat", ".npz"])
def test_empty_file(tmp_path, suffix):
    path = tmp_path / f"empty{suffix}"
    path.write_bytes(b"")
    _raises(load_arrays, path)


@pytest.mark.parametrize("fmt", ["mat5-scipy", "mat73-niflow", "npz-compressed", "h5"])
def test_damaged_file_fails_cleanly(tmp_path, arrays, fmt):
    """Overwrite 16-byte windows all over a valid file: every load either succeeds (the
    damage hit raw data) or raises DataError, never another exception."""
    name, write = WRITERS[fmt]
    good = tmp_path / f"good{Path(name).suffix}"
    write(good, arrays)
    blob = good.read_bytes()
    bad = tmp_path / name
    rng = np.random.default_rng(7)
    n_errors = 0
    for start in range(0, len(blob) - 16, 8):
        damaged = bytearray(blob)
        damaged[start:start + 16] = rng.integers(0, 256, 16, np.uint8).tobytes()
        bad.write_bytes(bytes(damaged))
        try:
            load_arrays(bad)
        except DataError as err:
            assert str(bad) in str(err)
            assert "\n" not in str(err)
            n_errors += 1
    assert n_errors > 0


def test_truncated_files(tmp_path, arrays):
    for fmt in ("mat5-scipy", "mat73-niflow", "npz", "h5"):
        name, write = WRITERS[fmt]
        good = tmp_path / f"good{Path(name).suffix}"
        write(good, arrays)
        bad = tmp_path / name
        bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
        _raises(load_arrays, bad)


def test_missing_stim_variable_lists_variables(tmp_path, arrays):
    path = tmp_path / "s.mat"
    scipy.io.savemat(path, {"images": arrays["stim"], "labels": np.arange(N)})
    err = _raises(load_stimuli, path, "'stim'", "images", "labels")
    assert "not found" in str(err)


def test_stim_wrong_rank(tmp_path, arrays):
    path = tmp_path / "s.npz"
    np.savez(path, stim=arrays["stim"][0])  # 2-D
    _raises(load_stimuli, path, "'stim'", str((H, W)))


def test_stim_with_nan(tmp_path):
    stim = np.random.default_rng(0).random((N, H, W))
    stim[3, 2, 1] = np.nan
    path = tmp_path / "s.mat"
    save_mat(path, {"stim": stim}, version="7.3")
    _raises(load_stimuli, path, "'stim'", "NaN")


def test_stim_with_inf(tmp_path):
    stim = np.random.default_rng(0).random((N, H, W)).astype(np.float32)
    stim[0, 0, 0] = np.inf
    path = tmp_path / "s.npz"
    np.savez(path, stim=stim)
    _raises(load_stimuli, path, "'stim'")


def test_non_numeric_stimulus(tmp_path):
    path = tmp_path / "s.npz"
    np.savez(path, stim=np.array([["a", "b"], ["c", "d"]]))
    _raises(load_stimuli, path, "'stim'", "numeric")


def test_non_numeric_response_variable(tmp_path, arrays):
    path = tmp_path / "b.mat"
    scipy.io.savemat(path, {"V1": arrays["V1"], "note": "subject 3"})
    _raises(load_responses, path, "'note'", "numeric")


def test_matlab_73_text_is_not_numeric(tmp_path, arrays):
    """MATLAB v7.3 stores ``note = 'S01'`` as uint16 codes of shape (3, 1) marked char; like
    the v5 twin, it must not pass for a one-row area."""
    path = tmp_path / "b.mat"
    _write_matlab_like_73(path, {"V1": arrays["V1"]})
    with h5py.File(path, "r+") as fh:
        fh.create_dataset("note", data=np.array([[ord(c)] for c in "S01"], dtype=np.uint16))
        fh["note"].attrs["MATLAB_class"] = np.bytes_("char")
    assert load_arrays(path)["note"].tolist() == ["S01"]
    _raises(load_responses, path, "'note'", "numeric")
    v5 = tmp_path / "b5.mat"
    scipy.io.savemat(v5, {"V1": arrays["V1"], "note": "S01"})
    assert load_arrays(v5)["note"].tolist() == ["S01"]


def test_complex_response_variable(tmp_path, arrays):
    path = tmp_path / "b.npz"
    np.savez(path, V1=arrays["V1"] + 1j)
    _raises(load_responses, path, "'V1'")


def test_responses_with_different_row_counts(tmp_path, arrays):
    """The loader reads each area as stored; validation, which also sees the stimuli (and so
    can tell a transposed array from a short one), compares the row counts."""
    path = tmp_path / "b.mat"
    scipy.io.savemat(path, {"V1": arrays["V1"], "V2": arrays["V2"][:-2]})
    resp = load_responses(path)
    assert {a: r.shape for a, r in resp.items()} == {"V1": (N, NV1), "V2": (N - 2, NV2)}
    with pytest.raises(DataError) as info:
        check_arrays(arrays["stim"], resp, preset("default"), "5:7",
                     sources={"stim": "s.mat", "bold": str(path)})
    msg = str(info.value)
    for frag in (str(path), "'V2'", f"has {N - 2} rows", f"has {N} images"):
        assert frag in msg, (frag, msg)


def test_three_d_response_variable(tmp_path, arrays):
    path = tmp_path / "b.h5"
    _write_h5(path, {"V1": arrays["V1"], "V2": np.zeros((N, 2, 3))})
    _raises(load_responses, path, "'V2'", str((N, 2, 3)))


def test_response_file_without_variables(tmp_path):
    path = tmp_path / "b.h5"
    _write_h5(path, {})
    _raises(load_responses, path, "no variables")


# --------------------------------------------------------------------------- atomic writes


@pytest.mark.parametrize("save", [
    lambda p, a: save_mat(p, a, version="5"),
    lambda p, a: save_mat(p, a, version="7.3"),
    lambda p, a: save_npz(p.with_suffix(".npz"), a),
], ids=["mat5", "mat73", "npz"])
def test_no_temporary_files_left(tmp_path, arrays, save):
    target = tmp_path / "out.mat"
    save(target, arrays)
    save(target, arrays)  # overwriting leaves nothing behind either
    files = sorted(os.listdir(tmp_path))
    assert len(files) == 1 and files[0].startswith("out."), files
    np.testing.assert_array_equal(load_stimuli(tmp_path / files[0]), arrays["stim"])


def test_save_npz_keeps_the_given_name(tmp_path, arrays):
    target = tmp_path / "predictions.bin"  # np.savez would append ".npz" to a name
    save_npz(target, arrays)
    assert os.listdir(tmp_path) == ["predictions.bin"]
    with np.load(target) as data:
        np.testing.assert_array_equal(data["V2"], arrays["V2"])


def _partial_then_fail(file, *args, **kwargs):
    if hasattr(file, "write"):
        file.write(b"PARTIAL")
        file.flush()
    else:
        Path(file).write_bytes(b"PARTIAL")
    raise RuntimeError("disk full (simulated)")


def test_failed_save_mat_keeps_previous_file(tmp_path, arrays, monkeypatch):
    target = tmp_path / "params.mat"
    save_mat(target, arrays)
    before = target.read_bytes()
    monkeypatch.setattr(scipy.io, "savemat", _partial_then_fail)
    with pytest.raises(RuntimeError, match="disk full"):
        save_mat(target, {"stim": arrays["stim"][:1]})
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ["params.mat"]
    np.testing.assert_array_equal(load_stimuli(target), arrays["stim"])


def test_failed_save_npz_keeps_previous_file(tmp_path, arrays, monkeypatch):
    target = tmp_path / "pred.npz"
    save_npz(target, arrays)
    before = target.read_bytes()
    monkeypatch.setattr(np, "savez", _partial_then_fail)
    with pytest.raises(RuntimeError, match="disk full"):
        save_npz(target, {"V1": arrays["V1"]})
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ["pred.npz"]


def test_failed_first_write_leaves_nothing(tmp_path, arrays, monkeypatch):
    monkeypatch.setattr(scipy.io, "savemat", _partial_then_fail)
    with pytest.raises(RuntimeError):
        save_mat(tmp_path / "new.mat", arrays)
    assert os.listdir(tmp_path) == []

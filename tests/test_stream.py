"""Streaming from HDF5 gives the same data as loading in memory."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from niflow.data.dataset import DroppedVoxelsWarning, build_dataset
from niflow.data.errors import DataError
from niflow.data.io import save_mat
from niflow.data.stream import open_streaming


@pytest.fixture
def arrays():
    rng = np.random.default_rng(0)
    stim = rng.integers(0, 256, (50, 12, 10), dtype=np.uint8)
    resp = {"V1": (rng.normal(size=(50, 7)) * 3 + 100).astype(np.float32),
            "V2": rng.normal(size=(50, 4)).astype(np.float32)}
    resp["V1"][:, 3] = 5.0  # constant: dropped
    resp["V2"][10, 1] = np.nan  # NaN in one row: dropped
    return stim, resp


def _write(tmp_path, stim, resp, kind):
    if kind == "h5":
        s, b = tmp_path / "stim.h5", tmp_path / "bold.h5"
        with h5py.File(s, "w") as fh:
            fh["stim"] = stim
        with h5py.File(b, "w") as fh:
            for a, r in resp.items():
                fh[a] = r
    else:
        s, b = tmp_path / "stim.mat", tmp_path / "bold.mat"
        save_mat(s, {"stim": stim}, version="7.3")
        save_mat(b, resp, version="7.3")
    return s, b


@pytest.mark.parametrize("kind", ["h5", "mat73"])
def test_streaming_matches_in_memory_dataset(tmp_path, arrays, kind):
    stim, resp = arrays
    s, b = _write(tmp_path, stim, resp, kind)
    test = np.arange(40, 50)
    with pytest.warns(DroppedVoxelsWarning):
        mem = build_dataset(stim, resp, test, val_fraction=0.2, seed=3)
    with pytest.warns(DroppedVoxelsWarning):
        st = open_streaming(s, b, test, val_fraction=0.2, seed=3, chunk_rows=7, num_workers=0)
    assert st.areas == mem.areas and st.image_shape == mem.image_shape
    for part in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(st.split, part), getattr(mem.split, part))
    for area in mem.areas:
        np.testing.assert_array_equal(st.voxel_index[area], mem.voxel_index[area])
        np.testing.assert_allclose(st.scalers[area].mean, mem.scalers[area].mean, rtol=1e-6)
        np.testing.assert_allclose(st.scalers[area].std, mem.scalers[area].std, rtol=1e-5)
    rows = np.array([7, 2, 41, 19, 2 + 1])
    x, y = st.read(rows)
    np.testing.assert_array_equal(x, mem.stim[rows])
    for area in mem.areas:
        np.testing.assert_allclose(y[area], mem.responses[area][rows], rtol=1e-5, atol=1e-5)


def test_worker_processes_give_the_same_batches_in_order(tmp_path, arrays):
    stim, resp = arrays
    s, b = _write(tmp_path, stim, resp, "h5")
    with pytest.warns(DroppedVoxelsWarning):
        st = open_streaming(s, b, np.arange(40, 50), num_workers=2)
    order = np.random.default_rng(1).permutation(st.split.train)
    got = list(st.iter_batches([order[i:i + 6] for i in range(0, order.size, 6)]))
    assert len(got) == int(np.ceil(order.size / 6))
    for i, (x, y) in enumerate(got):
        rows = order[6 * i:6 * i + 6]
        want_x, want_y = st.read(rows)
        np.testing.assert_array_equal(x.numpy(), want_x)
        for area in y:
            np.testing.assert_array_equal(y[area].numpy(), want_y[area])


def test_streaming_rejects_non_hdf5_and_row_mismatch(tmp_path, arrays):
    stim, resp = arrays
    np.savez(tmp_path / "stim.npz", stim=stim)
    with pytest.raises(DataError, match="streaming needs an HDF5"):
        open_streaming(tmp_path / "stim.npz", tmp_path / "stim.npz", np.arange(40, 50))
    s, b = _write(tmp_path, stim, {"V1": resp["V1"][:30]}, "h5")
    with pytest.raises(DataError, match="'V1' has 30 rows but the stimuli have 50"):
        open_streaming(s, b, np.arange(40, 50))


def test_contiguous_datasets_are_read_directly_and_alike(tmp_path, arrays):
    """Contiguous row-major datasets are read directly at their file offset; chunked,
    compressed and MATLAB v7.3 (column-major) ones through h5py; the rows are the same."""
    from niflow.data.stream import H5Array

    stim, _ = arrays
    layouts = {"contiguous": {}, "chunked": {"chunks": (4, 12, 10)},
               "gzip": {"chunks": (8, 12, 10), "compression": "gzip"}}
    path = tmp_path / "s.h5"
    with h5py.File(path, "w") as fh:
        for name, kw in layouts.items():
            fh.create_dataset(name, data=stim, **kw)
    save_mat(tmp_path / "s.mat", {"stim": stim}, version="7.3")
    rows = np.array([0, 3, 17, 18, 49])
    arrays_ = {name: H5Array.open(path, name) for name in layouts}
    arrays_["mat73"] = H5Array.open(tmp_path / "s.mat", "stim")
    for name, arr in arrays_.items():
        assert (arr.contiguous_offset() is not None) == (name == "contiguous"), name
        np.testing.assert_array_equal(arr.read(rows), stim[rows])
        np.testing.assert_array_equal(arr.read(np.arange(50)), stim)  # one run, one read
    # a file rewritten in place is looked at afresh, never read at the old offset
    with h5py.File(path, "w") as fh:
        fh["contiguous"] = stim[::-1].copy()
    np.testing.assert_array_equal(H5Array.open(path, "contiguous").read(rows),
                                  stim[::-1][rows])

"""Row specs, splits, stimulus scaling and z-scoring fitted on the training rows only."""

from __future__ import annotations

import numpy as np
import pytest

from niflow.data.dataset import (
    DroppedVoxelsWarning,
    Standardizer,
    build_dataset,
    make_split,
    parse_rows,
    voxel_usability,
)
from niflow.data.errors import DataError

# --------------------------------------------------------------------------- parse_rows


@pytest.mark.parametrize("spec", ["288:360", "-72:", "288:", "-72:360", " 288 : 360 "])
def test_parse_rows_slices(spec):
    np.testing.assert_array_equal(parse_rows(spec, 360), np.arange(288, 360))


def test_parse_rows_slice_with_step():
    np.testing.assert_array_equal(parse_rows("0:10:3", 10), [0, 3, 6, 9])


def test_parse_rows_list():
    got = parse_rows("0,5,9", 360)
    np.testing.assert_array_equal(got, [0, 5, 9])
    assert got.dtype == np.int64
    np.testing.assert_array_equal(parse_rows("9, 0 ,5", 360), [0, 5, 9])  # sorted
    np.testing.assert_array_equal(parse_rows("-1,0", 360), [0, 359])  # negative from the end


@pytest.mark.parametrize("spec", [None, "", "   "])
def test_parse_rows_empty(spec):
    got = parse_rows(spec, 10)
    assert got.size == 0


def test_parse_rows_text_files(tmp_path):
    txt = tmp_path / "test_rows.txt"
    txt.write_text("288 289\n290\n\n291, 292\n")
    np.testing.assert_array_equal(parse_rows(str(txt), 360), [288, 289, 290, 291, 292])
    np.testing.assert_array_equal(parse_rows(txt, 360), [288, 289, 290, 291, 292])
    csv = tmp_path / "rows.csv"
    csv.write_text("3,1,2\n")
    np.testing.assert_array_equal(parse_rows(str(csv), 10), [1, 2, 3])


def test_parse_rows_npy_file(tmp_path):
    path = tmp_path / "rows.npy"
    np.save(path, np.array([7, 2, 5], dtype=np.int32))
    np.testing.assert_array_equal(parse_rows(str(path), 10), [2, 5, 7])
    np.save(path, np.array([[1.0, 3.0]]))  # integral doubles, as MATLAB exports them
    np.testing.assert_array_equal(parse_rows(str(path), 10), [1, 3])


@pytest.mark.parametrize("spec", [
    "0:400",      # stop past the end
    "-400:",      # start before the beginning
    "360",        # single index past the end
    "-361",       # negative index before the beginning
    "1,1",        # repeated
    "5,-355",     # repeated after wrapping negatives
    "abc",        # garbage
    "1:x",
    "1:2:3:4",
    "0:10:0",     # zero step
    "1;2",
])
def test_parse_rows_errors(spec):
    with pytest.raises(DataError) as info:
        parse_rows(spec, 360)
    assert "\n" not in str(info.value)


def test_parse_rows_file_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        parse_rows(str(tmp_path / "missing.txt"), 10)
    bad = tmp_path / "bad.txt"
    bad.write_text("1 two 3")
    with pytest.raises(DataError, match="bad.txt"):
        parse_rows(str(bad), 10)
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(DataError, match="binary.txt"):
        parse_rows(str(binary), 10)
    junk = tmp_path / "junk.npy"
    junk.write_bytes(b"not an npy file at all")
    with pytest.raises(DataError, match="junk.npy"):
        parse_rows(str(junk), 10)
    frac = tmp_path / "frac.npy"
    np.save(frac, np.array([1.5, 2.0]))
    with pytest.raises(DataError, match="frac.npy"):
        parse_rows(str(frac), 10)
    out = tmp_path / "out.txt"
    out.write_text("3 12")
    with pytest.raises(DataError):
        parse_rows(str(out), 10)


# --------------------------------------------------------------------------- make_split


def test_make_split_partitions_rows():
    n, test = 100, np.arange(80, 100)
    split = make_split(n, test, val_fraction=0.1, seed=3)
    parts = [split.train, split.val, split.test]
    for p in parts:
        assert np.all(np.diff(p) > 0)  # sorted, no repeats
    assert not set(split.train) & set(split.val)
    assert not set(split.train) & set(split.test)
    assert not set(split.val) & set(split.test)
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(n))
    np.testing.assert_array_equal(split.test, test)
    assert split.val.size == round(0.1 * 80)
    assert set(split.to_dict()) == {"train", "val", "test"}
    assert split.to_dict()["val"] == split.val.tolist()


def test_make_split_seeded():
    test = np.arange(0, 30)
    a = make_split(200, test, 0.2, seed=0)
    b = make_split(200, test, 0.2, seed=0)
    c = make_split(200, test, 0.2, seed=1)
    np.testing.assert_array_equal(a.val, b.val)
    np.testing.assert_array_equal(a.train, b.train)
    assert not np.array_equal(a.val, c.val)
    assert a.val.size == c.val.size == 34


def test_make_split_without_validation():
    split = make_split(10, np.array([8, 9]), val_fraction=0.0)
    assert split.val.size == 0
    np.testing.assert_array_equal(split.train, np.arange(8))


def test_make_split_too_few_rows():
    with pytest.raises(DataError):
        make_split(10, np.arange(1, 10))
    with pytest.raises(DataError):  # two rows left, both would become validation rows
        make_split(10, np.arange(2, 10), val_fraction=0.1)


# --------------------------------------------------------------------------- build_dataset


def _data(n=60, seed=0):
    rng = np.random.default_rng(seed)
    stim = rng.integers(0, 256, (n, 8, 9), dtype=np.uint8)
    resp = {
        "V1": (rng.normal(size=(n, 5)) * [1, 2, 3, 4, 5] + [0, 10, -3, 100, 7]).astype(
            np.float32),
        "V2": rng.normal(size=(n, 3)).astype(np.float32),
    }
    return stim, resp


def test_zscore_uses_training_rows_only():
    stim, resp = _data()
    test = np.arange(50, 60)
    data = build_dataset(stim, resp, test, val_fraction=0.2, seed=1)
    fit_rows = np.setdiff1d(np.arange(60), test)  # train + validation rows
    np.testing.assert_array_equal(
        np.sort(np.concatenate([data.split.train, data.split.val])), fit_rows)
    for area, r in resp.items():
        r64 = r.astype(np.float64)
        mean = r64[fit_rows].mean(0)
        std = r64[fit_rows].std(0)
        np.testing.assert_allclose(data.scalers[area].mean, mean, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(data.scalers[area].std, std, rtol=1e-6)
        expected = (r64 - mean) / std
        np.testing.assert_allclose(data.responses[area], expected, rtol=1e-5, atol=1e-5)
        assert data.responses[area].dtype == np.float32
        # fit rows standardised exactly; test rows are not (they did not take part)
        np.testing.assert_allclose(data.responses[area][fit_rows].mean(0), 0, atol=1e-5)
        np.testing.assert_allclose(data.responses[area][fit_rows].std(0), 1, rtol=1e-5)
        np.testing.assert_array_equal(data.raw[area], r)


def test_test_rows_have_no_influence():
    stim, resp = _data()
    test = np.arange(40, 60)
    base = build_dataset(stim, resp, test, val_fraction=0.1, seed=0)
    wild = {a: r.copy() for a, r in resp.items()}
    for r in wild.values():
        r[test] = 1e6 + 1e5 * np.arange(r.shape[1])
    other = build_dataset(stim, wild, test, val_fraction=0.1, seed=0)
    fit_rows = np.setdiff1d(np.arange(60), test)
    for area in resp:
        np.testing.assert_array_equal(other.scalers[area].mean, base.scalers[area].mean)
        np.testing.assert_array_equal(other.scalers[area].std, base.scalers[area].std)
        np.testing.assert_array_equal(other.responses[area][fit_rows],
                                      base.responses[area][fit_rows])
    np.testing.assert_array_equal(other.split.val, base.split.val)


def test_inputs_not_modified():
    stim, resp = _data()
    stim0, resp0 = stim.copy(), {a: r.copy() for a, r in resp.items()}
    build_dataset(stim, resp, np.arange(50, 60))
    np.testing.assert_array_equal(stim, stim0)
    for a in resp:
        np.testing.assert_array_equal(resp[a], resp0[a])


def test_standardizer_maps_a_constant_voxel_to_zeros():
    x = np.c_[np.full(20, 3.7), np.arange(20.0)].astype(np.float32)
    sc = Standardizer.fit(x)
    z = sc.transform(x)
    assert np.isfinite(z).all() and np.all(sc.std > 0)
    np.testing.assert_array_equal(z[:, 0], 0.0)


def test_constant_and_nan_voxels_are_dropped_with_a_warning_keeping_input_indices():
    stim, resp = _data()
    resp["V1"][:, 2] = 3.7
    resp["V1"][7, 0] = np.nan
    resp["V2"][:50, 0] = -1234.5  # constant on the fitting rows only
    with pytest.warns(DroppedVoxelsWarning) as record:
        data = build_dataset(stim, resp, np.arange(50, 60))
    messages = sorted(str(w.message) for w in record)
    assert "'V1': dropped 2 of" in messages[0] and "1 with NaN/Inf, 1 constant" in messages[0]
    assert "'V2': dropped 1 of" in messages[1]
    np.testing.assert_array_equal(data.voxel_index["V1"], [1, 3, 4])
    assert 0 not in data.voxel_index["V2"]
    for area in data.areas:
        assert np.isfinite(data.responses[area]).all()
        np.testing.assert_array_equal(data.raw[area], resp[area][:, data.voxel_index[area]])


def test_constant_means_round_off_whatever_the_unit():
    """A voxel is constant when it varies by float round-off of its own scale: responses in
    tiny or huge units keep their voxels, round-off-level wobble does not count."""
    rows = np.arange(10)
    wave = np.sin(rows.astype(np.float64))
    resp = np.c_[1e-24 * wave, 1e12 + 1e9 * wave, 1e3 + 1e-7 * wave, np.zeros(10),
                 np.float32(5.0) + np.spacing(np.float32(5.0)) * (rows == 3)]
    keep, nonfinite, constant = voxel_usability(resp, rows)
    np.testing.assert_array_equal(keep, [True, True, False, False, False])
    assert not nonfinite.any()
    z = Standardizer.fit(resp[:, :2]).transform(resp[:, :2])
    np.testing.assert_allclose(z.std(0), 1.0, rtol=1e-5)


def test_area_without_usable_voxels_is_an_error():
    stim, resp = _data()
    resp["V2"][:] = 1.0
    with pytest.raises(DataError, match="'V2'.*none of its"):
        build_dataset(stim, resp, np.arange(50, 60))


def test_uint8_stimuli_scaled_to_unit_range():
    stim, resp = _data()
    stim[0, 0, 0], stim[1, 0, 0] = 0, 255
    data = build_dataset(stim, resp, np.arange(50, 60))
    assert data.stim.shape == (60, 1, 8, 9)
    assert data.stim.dtype == np.float32
    np.testing.assert_allclose(data.stim[:, 0], stim / 255.0, rtol=1e-6)
    assert data.stim.min() == 0.0 and data.stim.max() == 1.0
    assert data.image_shape == (1, 8, 9)
    assert data.areas == ["V1", "V2"]
    assert data.n_voxels == {"V1": 5, "V2": 3}
    np.testing.assert_array_equal(data.voxel_index["V1"], np.arange(5))


def test_float_stimuli_divided_by_training_max():
    rng = np.random.default_rng(2)
    stim = rng.random((60, 4, 4)) * 10.0
    stim[50:] = 1000.0  # test rows: must not set the scale
    _, resp = _data()
    test = np.arange(50, 60)
    data = build_dataset(stim, resp, test)
    peak = stim[:50].max()
    np.testing.assert_allclose(data.stim[:, 0], stim / peak, rtol=1e-6)
    assert data.stim[:50].max() == pytest.approx(1.0)


def test_float_stimuli_within_unit_range_unchanged():
    rng = np.random.default_rng(3)
    stim = rng.random((60, 4, 4)).astype(np.float32) * 0.9
    stim[55] = 50.0  # a test row above 1 does not trigger scaling
    _, resp = _data()
    data = build_dataset(stim, resp, np.arange(50, 60))
    np.testing.assert_array_equal(data.stim[:, 0], stim)


def test_four_d_stimuli_keep_channels():
    rng = np.random.default_rng(4)
    stim = rng.integers(0, 256, (60, 3, 4, 5), dtype=np.uint8)
    _, resp = _data()
    data = build_dataset(stim, resp, np.arange(50, 60))
    assert data.stim.shape == (60, 3, 4, 5)
    np.testing.assert_allclose(data.stim, stim / 255.0, rtol=1e-6)


def test_row_count_mismatch_names_area_and_counts():
    stim, resp = _data()
    resp["V2"] = resp["V2"][:57]
    with pytest.raises(DataError) as info:
        build_dataset(stim, resp, np.arange(50, 60))
    msg = str(info.value)
    assert "V2" in msg and "57" in msg and "60" in msg


def test_standardizer_inverse():
    rng = np.random.default_rng(5)
    x = (rng.normal(size=(40, 6)) * [1e-3, 1, 10, 1e3, 1, 5] + [0, 1e2, -5, 1e4, 0, 3]).astype(
        np.float32)
    s = Standardizer.fit(x)
    z = s.transform(x)
    back = s.inverse(z)
    assert back.dtype == np.float32
    # a float32 round trip is exact up to a few units in the last place of the inputs
    eps = float(np.finfo(np.float32).eps)
    tol = 4 * eps * (np.abs(x).astype(np.float64) + np.abs(s.mean))
    assert np.all(np.abs(back.astype(np.float64) - x) <= tol)
    # and it reproduces the naive statistics
    np.testing.assert_allclose(s.mean, x.astype(np.float64).mean(0), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(s.std, x.astype(np.float64).std(0), rtol=1e-6)

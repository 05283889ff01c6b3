"""NIfTI in and out: masks → voxel columns → images, shapes and affines checked."""

from __future__ import annotations

import re

import nibabel as nib
import numpy as np
import pytest
import scipy.io

from niflow.cli.main import main
from niflow.data.errors import DataError
from niflow.data.nifti import (
    load_nifti_movie,
    load_nifti_responses,
    nifti_from_voxels,
    voxel_maps_to_nifti,
)
from niflow.runs.nifti import export_nifti

SHAPE = (6, 5, 4)
AFFINE = np.array([[2.0, 0, 0, -10], [0, 2.0, 0, -20], [0, 0, 2.5, 5], [0, 0, 0, 1]])


def save(path, data, affine=AFFINE):
    nib.save(nib.Nifti1Image(np.asarray(data), affine), str(path))
    return path


@pytest.fixture()
def volumes(tmp_path):
    rng = np.random.default_rng(0)
    bold = rng.normal(size=(*SHAPE, 7)).astype(np.float32)
    v1 = np.zeros(SHAPE, np.uint8)
    v1[1:4, 0:3, 1:3] = 1
    v2 = np.zeros(SHAPE, np.int16)
    v2[4:6, 2:5, 0] = 3  # any nonzero value is in the mask
    v2[0, 4, 3] = 1
    return {"dir": tmp_path, "bold": bold,
            "bold_path": save(tmp_path / "bold.nii.gz", bold),
            "masks": {"V1": save(tmp_path / "v1.nii.gz", v1),
                      "V2": save(tmp_path / "v2.nii", v2)},
            "mask_arrays": {"V1": v1 != 0, "V2": v2 != 0}}


def c_order_voxels(mask):
    """Mask voxels in C order of their (i, j, k) indices, by explicit loops."""
    return [(i, j, k) for i in range(mask.shape[0]) for j in range(mask.shape[1])
            for k in range(mask.shape[2]) if mask[i, j, k]]


def test_voxel_columns_follow_the_c_order_of_the_mask(volumes):
    resp = load_nifti_responses(volumes["bold_path"], volumes["masks"])
    for area, mask in volumes["mask_arrays"].items():
        idx = c_order_voxels(mask)
        assert resp[area].shape == (7, len(idx))
        expected = np.array([[volumes["bold"][i, j, k, t] for (i, j, k) in idx]
                             for t in range(7)])
        np.testing.assert_array_equal(resp[area], expected)


def test_one_3d_image_per_sample_equals_one_4d_image(volumes):
    d = volumes["dir"]
    paths = [save(d / f"s{t}.nii.gz", volumes["bold"][..., t]) for t in range(7)]
    a = load_nifti_responses(paths, volumes["masks"])
    b = load_nifti_responses(volumes["bold_path"], volumes["masks"])
    for area in a:
        np.testing.assert_array_equal(a[area], b[area])


def test_round_trip_mask_voxels_image(volumes):
    d = volumes["dir"]
    resp = load_nifti_responses(volumes["bold_path"], volumes["masks"])
    for area, mask in volumes["mask_arrays"].items():
        out = nifti_from_voxels(resp[area][4], volumes["masks"][area], d / f"{area}.nii.gz",
                                fill=-1.0)
        img = nib.load(str(out))
        np.testing.assert_allclose(img.affine, AFFINE)
        data = np.asarray(img.dataobj)
        assert data.shape == SHAPE
        np.testing.assert_array_equal(data[mask], volumes["bold"][..., 4][mask])
        np.testing.assert_array_equal(data[~mask], -1.0)


def test_results_table_back_to_images_skips_dropped_voxels(volumes):
    d = volumes["dir"]
    n1 = int(volumes["mask_arrays"]["V1"].sum())
    kept = np.array([0, 2, 5, n1 - 1])  # voxel 1 etc. were dropped before fitting
    areas = np.array(["V1"] * len(kept))
    paths = voxel_maps_to_nifti({"r_test": np.array([0.1, 0.2, 0.3, 0.4])}, areas, kept,
                                {"V1": volumes["masks"]["V1"]}, d / "maps")
    assert [p.name for p in paths] == ["V1_r_test.nii.gz"]
    data = np.asarray(nib.load(str(paths[0])).dataobj)
    vox = c_order_voxels(volumes["mask_arrays"]["V1"])
    for j, (i, jj, k) in enumerate(vox):
        want = {0: 0.1, 2: 0.2, 5: 0.3, n1 - 1: 0.4}.get(j, np.nan)
        np.testing.assert_allclose(data[i, jj, k], want, rtol=1e-6)


def test_mismatched_shapes_and_affines_are_one_line_data_errors(volumes):
    d = volumes["dir"]
    small = save(d / "small.nii.gz", np.ones((6, 5, 3), np.uint8))
    moved = AFFINE.copy()
    moved[0, 3] += 2.0
    shifted = save(d / "shifted.nii.gz", np.ones(SHAPE, np.uint8), moved)
    empty = save(d / "empty.nii.gz", np.zeros(SHAPE, np.uint8))
    four_d = save(d / "fourd.nii.gz", np.ones((*SHAPE, 2), np.uint8))
    cases = {small: "has shape (6, 5, 3)", shifted: "different affine", empty: "empty",
             four_d: "3-D image"}
    for mask, fragment in cases.items():
        with pytest.raises(DataError, match=re.escape(fragment)) as err:
            load_nifti_responses(volumes["bold_path"], {"V1": mask})
        assert "\n" not in str(err.value)
    with pytest.raises(DataError, match="expected a 4-D image"):
        load_nifti_responses(volumes["masks"]["V1"], volumes["masks"])
    other = save(d / "other.nii.gz", volumes["bold"][..., 0], moved)
    with pytest.raises(DataError, match="affine differs"):
        load_nifti_responses([volumes["masks"]["V1"], other],
                             volumes["masks"])
    (d / "junk.nii.gz").write_bytes(b"not an image")
    with pytest.raises(DataError, match="not a readable NIfTI"):
        load_nifti_responses(d / "junk.nii.gz", volumes["masks"])
    with pytest.raises(DataError, match="4 values"):
        nifti_from_voxels(np.zeros(4), volumes["masks"]["V1"], d / "x.nii.gz")


def test_cli_import_then_export(volumes, capsys):
    d = volumes["dir"]
    masks = [f"{a}={p}" for a, p in volumes["masks"].items()]
    args = ["nifti", "import", "--nifti", str(volumes["bold_path"]), "--out", str(d / "b.mat")]
    for m in masks:
        args += ["--mask", m]
    assert main(args) == 0
    mat = scipy.io.loadmat(d / "b.mat")
    np.testing.assert_array_equal(mat["V2"], load_nifti_responses(
        volumes["bold_path"], volumes["masks"])["V2"])
    # a run folder's voxel table (as training writes it) back into the masks' space
    run = d / "run"
    run.mkdir()
    n2 = int(volumes["mask_arrays"]["V2"].sum())
    rows = ["area,voxel,r_test,r2_test,prf_x,prf_y,prf_sigma,q_fdr,prf_ecc_deg"]
    rows += [f"V2,{v},{v / 10},0.1,1,2,3,0.01,nan" for v in range(n2)]
    (run / "voxels.csv").write_text("\n".join(rows) + "\n")
    paths = export_nifti(run, {"V2": volumes["masks"]["V2"]})
    names = sorted(p.name for p in paths)
    # measures with no finite value (prf_ecc_deg) are skipped
    assert names == sorted(f"V2_{m}.nii.gz" for m in
                           ("r_test", "r2_test", "prf_x", "prf_y", "prf_sigma", "q_fdr"))
    r = np.asarray(nib.load(str(run / "nifti" / "V2_r_test.nii.gz")).dataobj)
    vox = c_order_voxels(volumes["mask_arrays"]["V2"])
    np.testing.assert_allclose([r[v] for v in vox], np.arange(n2) / 10, rtol=1e-6)
    capsys.readouterr()
    assert main(["nifti", "export", str(run), "--mask", "V1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "AREA=FILE" in err
    assert main(["nifti", "export", str(run), "--mask", f"V1={volumes['masks']['V1']}",
                 "--out", str(d / "none")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"the run {run} has no area 'V1' (its areas: V2)" in err
    assert not (d / "none").exists()  # nothing written


def test_exported_maps_are_nan_outside_the_mask(volumes):
    """Every exported map is NaN outside its mask, so r = 0 inside stays distinguishable."""
    d = volumes["dir"]
    run = d / "run"
    run.mkdir()
    n1, n2 = (int(volumes["mask_arrays"][a].sum()) for a in ("V1", "V2"))
    rows = ["area,voxel,r_test,prf_sigma"]
    rows += [f"V1,{v},{0.0 if v % 2 else v / 100},{v + 1}" for v in range(n1)]
    rows += [f"V2,{v},0.0,2" for v in range(n2)]
    (run / "voxels.csv").write_text("\n".join(rows) + "\n")
    # a probe table for V1 alone: its maps are written for V1, none for V2, and no error
    probe = ["area,voxel,prf_sigma"] + [f"V1,{v},{v / 2}" for v in range(n1)]
    (run / "probe_voxels.csv").write_text("\n".join(probe) + "\n")
    paths = export_nifti(run, volumes["masks"])
    assert sorted(p.name for p in paths) == sorted(
        ["V1_r_test.nii.gz", "V1_prf_sigma.nii.gz", "V2_r_test.nii.gz", "V2_prf_sigma.nii.gz",
         "V1_insilico_prf_sigma.nii.gz"])
    for path in paths:
        area = path.name.split("_")[0]
        mask = volumes["mask_arrays"][area]
        data = np.asarray(nib.load(str(path)).dataobj)
        assert data.dtype == np.float32
        assert np.isnan(data[~mask]).all(), path.name
        assert np.isfinite(data[mask]).all(), path.name
    r = np.asarray(nib.load(str(run / "nifti" / "V1_r_test.nii.gz")).dataobj)
    vox = c_order_voxels(volumes["mask_arrays"]["V1"])
    want = [0.0 if v % 2 else v / 100 for v in range(n1)]
    np.testing.assert_allclose([r[v] for v in vox], want, rtol=1e-6)


def test_movie_runs_and_test_repeats_become_the_movie_contract(tmp_path, capsys):
    """One 4-D image per run (TR from the headers, milliseconds converted) and the test
    run's repeats → areas in C order of the masks, run labels 1..k in order, the repeats'
    mean as the last run and ``<AREA>_repeats``; read back by the movie reader against a
    stimulus file of the same runs; a movie run's HRF maps go back to NIfTI."""
    import h5py

    from niflow.data.movie import read_movie

    rng = np.random.default_rng(1)
    lengths, n_test = [12, 9, 15], 8
    runs = [rng.normal(size=(*SHAPE, n)).astype(np.float32) for n in lengths]
    reps = [rng.normal(size=(*SHAPE, n_test)).astype(np.float32) for _ in range(3)]

    def save_tr(path, data, tr, unit="sec"):
        img = nib.Nifti1Image(data, AFFINE)
        img.header.set_zooms((2.0, 2.0, 2.5, tr))
        img.header.set_xyzt_units("mm", unit)
        nib.save(img, str(path))
        return str(path)

    run_paths = [save_tr(tmp_path / f"run{i}.nii.gz", r, 1.5) for i, r in enumerate(runs)]
    run_paths[1] = save_tr(tmp_path / "run1.nii.gz", runs[1], 1500.0, "msec")
    rep_paths = [save_tr(tmp_path / f"rep{i}.nii.gz", r, 1.5) for i, r in enumerate(reps)]
    v1 = np.zeros(SHAPE, bool)
    v1[1:3, 2:4, 1] = True
    v1[5, 0, 3] = True
    save(tmp_path / "v1.nii.gz", v1.astype(np.uint8))
    out = tmp_path / "bold.npz"
    assert main(["nifti", "import", "--nifti", *run_paths, "--repeats", *rep_paths,
                 "--mask", f"V1={tmp_path / 'v1.nii.gz'}", "--out", str(out)]) == 0
    assert "--test-runs 4" in capsys.readouterr().out
    got = np.load(out)
    idx = c_order_voxels(v1)
    series = [*runs, np.mean(reps, axis=0)]
    want = np.concatenate([[[s[i, j, k, t] for (i, j, k) in idx] for t in range(s.shape[3])]
                           for s in series])
    np.testing.assert_allclose(got["V1"], want, rtol=1e-6)
    assert got["run"].tolist() == sum(([i + 1] * s.shape[3] for i, s in enumerate(series)), [])
    assert float(got["tr"]) == 1.5
    assert got["V1_repeats"].shape == (3, n_test, len(idx))
    np.testing.assert_array_equal(got["V1_repeats"][2], [[reps[2][i, j, k, t] for (i, j, k)
                                                          in idx] for t in range(n_test)])
    # a stimulus of the same runs at 2 fps (3 frames per 1.5-s volume) reads as one data set
    with h5py.File(tmp_path / "stim.h5", "w") as fh:
        fh["stim"] = np.zeros((3 * got["run"].size, 8, 8), np.uint8)
        fh["fps"] = 2.0
        fh["run"] = np.repeat(got["run"], 3)
    files = read_movie(tmp_path / "stim.h5", out)
    assert files.timing.runs == [1, 2, 3, 4] and files.repeats("V1", [4]).shape[0] == 3

    # headers without a TR (no time unit: nibabel's default pixdim[4] is 1), or with two,
    # need --tr
    bare = [str(save(tmp_path / f"bare{i}.nii.gz", r)) for i, r in enumerate(runs[:2])]
    no_tr = "the header gives no repetition time (pixdim[4] with a time unit); give --tr"
    for paths, text in ((bare, no_tr),
                        ([run_paths[0], save_tr(tmp_path / "slow.nii.gz", runs[1], 2.0)],
                         "different repetition times [1.5, 2.0] s")):
        with pytest.raises(DataError, match=re.escape(text)):
            load_nifti_movie(paths, {"V1": tmp_path / "v1.nii.gz"})
    assert float(load_nifti_movie(bare, {"V1": tmp_path / "v1.nii.gz"}, tr=0.8)["tr"]) == 0.8


def test_a_movie_runs_hrf_maps_are_exported(volumes):
    d = volumes["dir"]
    n1, n2 = (int(volumes["mask_arrays"][a].sum()) for a in ("V1", "V2"))
    rows = ["area,voxel,r_test,hrf_peak_s,hrf_fwhm_s"]
    rows += [f"V1,{v},0.1,{4 + v / 10},{5 + v / 10}" for v in range(n1)]
    rows += [f"V2,{v},0.2,{6 + v / 10},{7 + v / 10}" for v in range(n2)]
    run = d / "run"
    run.mkdir()
    (run / "voxels.csv").write_text("\n".join(rows) + "\n")
    export_nifti(run, volumes["masks"])
    for area, base in (("V1", 4.0), ("V2", 6.0)):
        img = np.asarray(nib.load(str(run / "nifti" / f"{area}_hrf_peak_s.nii.gz")).dataobj)
        mask = volumes["mask_arrays"][area]
        np.testing.assert_allclose(img[mask], base + np.arange(mask.sum()) / 10, rtol=1e-6)
        assert np.isnan(img[~mask]).all()

"""NIfTI in and out: masks → voxel columns → images, shapes and affines checked."""

from __future__ import annotations

import re

import nibabel as nib
import numpy as np
import pytest
import scipy.io

from niflow.cli.main import main
from niflow.data.errors import DataError
from niflow.data.nifti import load_nifti_responses, nifti_from_voxels, voxel_maps_to_nifti
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

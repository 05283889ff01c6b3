"""Movie runs: ``niflow train`` on a movie data set writes the run folder's contract in
volumes (split by run, per-voxel HRF columns, the repeats' noise ceiling), loads back, and
refuses bad inputs with one line."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest

from _cli import run_many
from _configs import movie_config
from niflow import config as cfgmod
from niflow.data.errors import DataError
from niflow.data.io import save_mat
from niflow.data.movie import read_movie
from niflow.data.simulate.movie import simulate_movie, write_movie_simulation
from niflow.evaluate.statistics import read_table
from niflow.runs.movie import train_movie
from niflow.runs.movie_evaluation import evaluate_movie_folder, evaluate_movie_run
from niflow.runs.run import MovieRun, load_run

_config = movie_config


@pytest.fixture(scope="module")
def movie_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("movie_run")
    sim = simulate_movie(n_train_runs=3, run_seconds=60.0, fps=4.0, tr=1.0, size=20,
                         n_voxels={"V1": 30, "V2": 12}, ceiling_range=(0.6, 0.8), seed=2)
    paths = write_movie_simulation(sim, root / "data")
    run = train_movie(paths["stim"], paths["bold"], root / "run", _config(), [sim.test_run],
                      progress=False)
    return sim, paths, run, root / "run"


def test_the_run_folder_holds_the_contract_in_volumes(movie_run):
    sim, paths, run, out = movie_run
    names = {p.name for p in out.iterdir()}
    assert {"run.json", "config.json", "split.json", "model.pt", "log.jsonl", "metrics.json",
            "voxels.csv", "stats.json", "stats_voxels.csv", "predictions.npz"} <= names
    assert {"hrf_V1.png", "hrf_V2.png", "hrf_latency.png", "rf_V1.png", "training.png"} <= {
        p.name for p in (out / "figures").iterdir()}
    split = json.loads((out / "split.json").read_text())
    with h5py.File(paths["bold"], "r") as fh:
        vol_run = np.asarray(fh["run"][()])
        bold = {a: np.asarray(fh[a][()]) for a in ("V1", "V2")}
        repeats = {a: np.asarray(fh[f"{a}_repeats"][()]) for a in ("V1", "V2")}
    assert split["kind"] == "movie" and split["test_runs"] == [sim.test_run]
    assert np.array_equal(split["test"], np.flatnonzero(vol_run == sim.test_run))
    # validation is a whole training run, never a test volume
    assert set(vol_run[split["val"]]) == set(split["val_runs"]) and len(split["val_runs"]) == 1
    assert not set(split["val_runs"]) & set(split["train_runs"])
    pred = np.load(out / "predictions.npz")
    assert np.array_equal(pred["test_rows"], split["test"])
    table = read_table(out / "voxels.csv")
    for area in ("V1", "V2"):
        measured = bold[area][split["test"]]
        assert np.allclose(pred[f"measured_{area}"], measured, atol=1e-6)
        m = table["area"] == area
        # r in the table is the Pearson r of the stored predictions, computed naively here
        r = [np.corrcoef(pred[area][:, v], measured[:, v])[0, 1]
             for v in range(measured.shape[1])]
        assert np.allclose(table["r_test"][m].astype(float), r, atol=1e-5)
        # the ceiling comes from the repeats: sqrt of a split-half reliability, within the
        # range a naive two-halves estimate spans
        ceiling = table["noise_ceiling"][m].astype(float)
        rep = repeats[area]
        half = rep.shape[0] // 2
        a, b = rep[:half].mean(0), rep[half:2 * half].mean(0)
        rel = np.array([np.corrcoef(a[:, v], b[:, v])[0, 1] for v in range(rep.shape[2])])
        naive = np.sqrt(np.clip(2 * rel / (1 + rel), 0, None))
        assert np.median(np.abs(ceiling - naive)) < 0.08
        true_ceiling = np.median(sim.truth[area]["noise_ceiling"])
        assert np.median(ceiling) == pytest.approx(true_ceiling, abs=0.1)
        peaks = table["hrf_peak_s"][m].astype(float)
        assert np.allclose(peaks, run.video.hrf_parameters()[area]["hrf_peak_s"], atol=0.01)
        assert np.all((peaks > 2) & (peaks < 11)) and np.all(table["hrf_fwhm_s"][m].astype(
            float) > 1)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["kind"] == "movie" and metrics["n_test_rows"] == len(split["test"])
    # the image runs' science outputs: retinotopy columns, coverage and information flow
    assert {"prf_ecc", "prf_angle", "p_perm"} <= set(table)
    assert np.isnan(table["p_perm"].astype(float)).all()
    x = table["prf_x"].astype(float) - (20 - 1) / 2
    y = table["prf_y"].astype(float) - (20 - 1) / 2
    assert np.allclose(table["prf_ecc"].astype(float), np.hypot(x, y), atol=1e-3)
    assert {"coverage.png", "size_ecc.png", "flow.png"} <= {
        p.name for p in (out / "figures").iterdir()}
    flow = read_table(out / "flow.csv")
    assert list(zip(flow["target"], flow["source"], strict=True)) == [("V1", "stimulus"),
                                                                       ("V2", "V1")]
    v2 = flow["target"] == "V2"
    # V2 reads only V1: without it, V2's prediction has nothing left to follow
    assert float(flow["median_drop_zero"][v2][0]) > 0.1
    assert float(flow["median_drop_mean"][v2][0]) > 0.1


def test_a_movie_run_predicts_held_out_volumes_above_chance(movie_run):
    _, _, _, out = movie_run
    table = read_table(out / "voxels.csv")
    r = table["r_test"][table["area"] == "V1"].astype(float)
    # 60 test volumes of an autocorrelated signal: chance r is within about ±0.2; the
    # simulation's V1 ceiling is 0.6-0.8
    assert np.median(r) > 0.25


def test_the_loaded_run_predicts_what_training_stored(movie_run):
    _, paths, _, out = movie_run
    run = load_run(out)
    assert isinstance(run, MovieRun)
    files = read_movie(paths["stim"], paths["bold"])
    pred = np.load(out / "predictions.npz")
    got = run.predict_volumes(files, pred["test_rows"])
    for area in ("V1", "V2"):
        assert np.allclose(got[area], pred[area], rtol=1e-4, atol=1e-4)
    with pytest.raises(TypeError, match="predict_volumes"):
        run.predict(np.zeros((2, 20, 20)))
    other = read_movie(paths["stim"], paths["bold"])
    other.stim = other.stim.read(np.arange(other.timing.n_frames))[:, :16, :16]
    with pytest.raises(ValueError, match=r"frames of shape \(1, 16, 16\).*\(1, 20, 20\)"):
        run.predict_volumes(other, pred["test_rows"])
    prf = run.receptive_fields("V1")
    table = read_table(out / "voxels.csv")
    assert np.allclose(prf["prf_x"], table["prf_x"][table["area"] == "V1"].astype(float),
                       atol=1e-3)


def test_bad_movie_inputs_get_one_line(movie_run, tmp_path):
    sim, paths, _, _ = movie_run
    stim, bold = str(paths["stim"]), str(paths["bold"])
    save_mat(tmp_path / "img.mat", {"stim": np.zeros((20, 16, 16), np.uint8)})
    save_mat(tmp_path / "img_bold.mat", {"V1": np.zeros((20, 5), np.float32)})
    with h5py.File(tmp_path / "tiny.h5", "w") as fh:
        fh["stim"] = np.zeros((320, 4, 4), np.uint8)
        fh["fps"] = 4.0
        fh["run"] = np.repeat([1, 2, 3, 4], 80)
    with h5py.File(tmp_path / "slow_bold.h5", "w") as fh:
        fh["V1"] = np.random.default_rng(0).standard_normal((80, 5)).astype(np.float32)
        fh["tr"] = 4.0
        fh["run"] = np.repeat([1, 2, 3, 4], 20)
    with h5py.File(bold, "r") as src, h5py.File(tmp_path / "lh_bold.h5", "w") as fh:
        for name in src:
            fh[name] = src[name][()]
        fh["lh.V1"] = fh["V2"][()]  # not an area name (a V3 or hV4 would be added)
    # MATLAB-style exports: frames or volumes on the last axis
    with h5py.File(stim, "r") as src, h5py.File(tmp_path / "hwn.h5", "w") as fh:
        fh["stim"] = np.moveaxis(src["stim"][()], 0, -1)
        fh["fps"], fh["run"] = src["fps"][()], src["run"][()]
    with h5py.File(stim, "r") as src, h5py.File(tmp_path / "hw3n.h5", "w") as fh:
        fh["stim"] = np.moveaxis(np.repeat(src["stim"][()][..., None], 3, axis=-1), 0, -1)
        fh["fps"] = src["fps"][()]  # no run labels: the frame count comes from the BOLD
    with h5py.File(bold, "r") as src, h5py.File(tmp_path / "vt_bold.h5", "w") as fh:
        for name in src:
            fh[name] = src[name][()].T if name == "V2" else src[name][()]
    with h5py.File(bold, "r") as src, h5py.File(tmp_path / "one_run_bold.h5", "w") as fh:
        fh["V1"], fh["tr"] = src["V1"][()], src["tr"][()]
    jobs = {
        "stim_t": ["train", "--stim", "hwn.h5", "--bold", bold, "--out", "h",
                   "--test-runs", "4"],
        "colour_t": ["train", "--stim", "hw3n.h5", "--bold", "one_run_bold.h5", "--out", "i",
                     "--test-runs", "0"],
        "bold_t": ["train", "--stim", stim, "--bold", "vt_bold.h5", "--out", "j",
                   "--test-runs", "4"],
        "no_runs": ["train", "--stim", "one_run.h5", "--bold", "one_run_b.h5", "--out", "a"],
        "area": ["train", "--stim", stim, "--bold", "lh_bold.h5", "--out", "g",
                 "--test-runs", "4"],
        "unknown_run": ["train", "--stim", stim, "--bold", bold, "--out", "b",
                        "--test-runs", "9"],
        "rows": ["train", "--stim", stim, "--bold", bold, "--out", "c", "--test-runs", "4",
                 "--test-rows", "0:10"],
        "static": ["train", "--stim", "img.mat", "--bold", "img_bold.mat", "--out", "d",
                   "--test-runs", "1"],
        "durations": ["train", "--stim", "tiny.h5", "--bold", "slow_bold.h5", "--out", "f",
                      "--test-runs", "4"],
        "precision": ["train", "--stim", stim, "--bold", bold, "--out", "p", "--test-runs", "4",
                      "--precision", "bfloat16"],
    }
    with h5py.File(tmp_path / "one_run.h5", "w") as fh:  # a single run: nothing to hold out
        fh["stim"], fh["fps"] = np.zeros((80, 20, 20), np.uint8), 4.0
    with h5py.File(tmp_path / "one_run_b.h5", "w") as fh:
        fh["V1"] = np.random.default_rng(2).standard_normal((20, 30)).astype(np.float32)
        fh["tr"] = 1.0
    with h5py.File(tmp_path / "fps2.h5", "w") as fh:  # a consistent movie at another fps
        fh["stim"] = np.zeros((80, 20, 20), np.uint8)
        fh["fps"], fh["run"] = 2.0, np.repeat([1, 2], 40)
    with h5py.File(tmp_path / "fps2_bold.h5", "w") as fh:
        fh["V1"] = np.random.default_rng(1).standard_normal((40, 30)).astype(np.float32)
        fh["tr"], fh["run"] = 1.0, np.repeat([1, 2], 20)
    run_dir = str(movie_run[3])
    jobs["evaluate"] = ["evaluate", run_dir, "--stim", stim, "--bold", bold]
    jobs["evaluate_fps"] = ["evaluate", run_dir, "--stim", "fps2.h5", "--bold", "fps2_bold.h5"]
    jobs["evaluate_run"] = ["evaluate", run_dir, "--stim", stim, "--bold", bold, "--runs", "9"]
    # run 3 is as long as the repeated run 4: only the repeats' mean tells them apart (before,
    # run 3 was scored against run 4's noise ceiling)
    jobs["evaluate_other"] = ["evaluate", run_dir, "--stim", stim, "--bold", bold, "--runs",
                              "3"]
    jobs["evaluate_rows"] = ["evaluate", run_dir, "--stim", stim, "--bold", bold, "--rows",
                             "0:5"]
    res = run_many(jobs, tmp_path)
    n = sim.stim.shape[0]
    want = {"stim_t": f"hwn.h5: variable 'stim' has shape (20, 20, {n}) and looks transposed: "
                      f"expected (n_frames, H, W) = ({n}, 20, 20); move the frame axis first "
                      f"(numpy: np.moveaxis(stim, -1, 0); MATLAB: stim = permute(stim, "
                      f"[3 1 2]))",
            "colour_t": f"hw3n.h5: variable 'stim' has shape (20, 20, 3, {n}) and looks "
                        f"transposed: expected (n_frames, H, W, 3) = ({n}, 20, 20, 3)",
            "bold_t": "vt_bold.h5: variable 'V2' has shape (12, 240) and looks transposed: "
                      "expected (n_TR, n_voxels) = (240, 12); transpose it (numpy: V2.T; "
                      "MATLAB: V2 = V2')",
            "no_runs": "one_run_b.h5: one run only; a movie run holds out whole runs: give "
                       "--test-runs with two or more runs in the files",
            "unknown_run": "test run(s) [9] not found",
            "rows": "--test-rows is not available for movie data",
            "static": "for images use --test-rows",
            "durations": "each run must last as long in both files",
            "precision": "command line: train.precision 'bfloat16' is for image models; video "
                         "models train in float32",
            "area": "lh_bold.h5: area variable(s) ['lh.V1'] cannot name areas (use "
                    "letters, digits and underscores, not starting with a digit, and not "
                    "'stimulus'); rename them",
            "evaluate": f"bold.h5: variable 'V1_repeats' repeats 60 volumes but runs "
                        f"[1, 2, 3, 4] have 240: score the runs they repeat with --runs "
                        f"{sim.test_run}",
            "evaluate_fps": "fps2.h5: variable 'fps' is 2 but",
            "evaluate_run": "run(s) [9] not found in",
            "evaluate_other": "bold.h5: the mean of 'V1_repeats' is not 'V1' on runs [3]: "
                              f"score the runs they repeat with --runs {sim.test_run}",
            "evaluate_rows": "--rows is for image runs"}
    for name, text in want.items():
        r = res[name]
        assert r.rc != 0, name
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and text in lines[0], (name, r.stderr)
    for name in jobs:
        if "--out" in jobs[name]:
            assert not (tmp_path / jobs[name][jobs[name].index("--out") + 1]).exists()


def _one_run_files(paths, run_label: int, folder) -> tuple:
    """A second session's files: only run ``run_label`` of the data set (relabelled 1), with
    its repeats."""
    with h5py.File(paths["stim"], "r") as src, h5py.File(folder / "s.h5", "w") as fh:
        keep = np.asarray(src["run"][()]) == run_label
        fh["stim"], fh["fps"], fh["run"] = src["stim"][()][keep], src["fps"][()], \
            np.ones(int(keep.sum()), np.int64)
    with h5py.File(paths["bold"], "r") as src, h5py.File(folder / "b.h5", "w") as fh:
        keep = np.asarray(src["run"][()]) == run_label
        for name in src:
            if name in ("V1", "V2"):
                fh[name] = src[name][()][keep]
            elif name.endswith("_repeats"):
                fh[name] = src[name][()]
        fh["tr"], fh["run"] = src["tr"][()], np.ones(int(keep.sum()), np.int64)
    return folder / "s.h5", folder / "b.h5"


def test_a_movie_run_scores_another_sessions_file_as_its_own_test_run(movie_run, tmp_path):
    sim, paths, _, out = movie_run
    stim2, bold2 = _one_run_files(paths, sim.test_run, tmp_path)
    run = load_run(out)
    res = evaluate_movie_folder(run, read_movie(stim2, bold2), None, tmp_path / "api")
    trained = read_table(out / "stats_voxels.csv")
    # frames before a run never reach its predictions, so the test run alone scores as it
    # did inside the training file: the same r and the same ceiling from the same repeats
    for area in ("V1", "V2"):
        m = trained["area"] == area
        assert np.array_equal(res[area]["voxel"], trained["voxel"][m].astype(int))
        assert np.allclose(res[area]["stats"]["r"], trained["r"][m].astype(float), atol=2e-4)
        assert np.allclose(res[area]["stats"]["noise_ceiling"],
                           trained["noise_ceiling"][m].astype(float), atol=1e-5)
    # and r is the plain Pearson r of the run's predictions against the file's volumes
    files = read_movie(stim2, bold2)
    pred = run.predict_volumes(files)
    naive = [np.corrcoef(pred["V2"][:, v], files.responses["V2"][:, v])[0, 1]
             for v in range(pred["V2"].shape[1])]
    assert np.allclose(res["V2"]["stats"]["r"], naive, atol=1e-6)
    # a file sampled at another TR: every other volume at TR 2 s is predicted as before
    with h5py.File(bold2, "r") as src, h5py.File(tmp_path / "b_tr2.h5", "w") as fh:
        for name in ("V1", "V2"):
            fh[name] = src[name][()][::2]
            fh[f"{name}_repeats"] = src[f"{name}_repeats"][()][:, ::2]
        fh["tr"], fh["run"] = 2 * float(src["tr"][()]), src["run"][()][::2]
    slow = run.predict_volumes(read_movie(stim2, tmp_path / "b_tr2.h5"))
    for area in ("V1", "V2"):
        assert np.allclose(slow[area], pred[area][::2], atol=1e-5)
    stats = json.loads((tmp_path / "api" / "stats.json").read_text())
    assert stats["runs"] == [1] and stats["n_volumes"] == files.timing.n_volumes
    assert (tmp_path / "api" / "figures" / "noise_ceiling.png").stat().st_size > 0
    # the command line: the training file's test run picked with --runs
    cli = run_many({
        "ok": ["evaluate", str(out), "--stim", str(paths["stim"]), "--bold",
               str(paths["bold"]), "--runs", str(sim.test_run), "--out", "cli", "--json",
               "cli.json"]}, tmp_path)
    assert cli["ok"].rc == 0, cli["ok"].stderr
    assert "V1" in cli["ok"].stdout and "p-values not computed" in cli["ok"].stdout
    table = read_table(tmp_path / "cli" / "stats_voxels.csv")
    assert np.allclose(table["r"].astype(float), trained["r"].astype(float), atol=2e-4)
    payload = json.loads((tmp_path / "cli.json").read_text())
    assert payload["V1"]["median_r"] == pytest.approx(
        float(np.median(trained["r"][trained["area"] == "V1"].astype(float))), abs=2e-4)


def test_movie_evaluation_flags_unusable_voxels_and_missing_columns(movie_run, tmp_path):
    sim, paths, _, out = movie_run
    stim2, bold2 = _one_run_files(paths, sim.test_run, tmp_path)
    run = load_run(out)
    with h5py.File(bold2, "a") as fh:
        v1 = fh["V1"][()]
        v1[3, 2] = np.nan
        del fh["V1"]
        fh["V1"] = v1
        del fh["V2"], fh["V2_repeats"]  # an area the file lacks is left out
    with pytest.warns(UserWarning, match=r"1 voxel\(s\) of 'V1' have NaN or Inf.*columns "
                      r"\[2\]"):
        res = evaluate_movie_run(run, read_movie(stim2, bold2))
    assert set(res) == {"V1"}
    r = res["V1"]["stats"]["r"]
    assert np.isnan(r[run.voxel_index["V1"] == 2]).all() and np.isfinite(r).sum() == r.size - 1
    with h5py.File(bold2, "a") as fh:
        v1 = fh["V1"][()][:, :5]
        del fh["V1"], fh["V1_repeats"]
        fh["V1"] = v1
    with pytest.raises(DataError, match=r"variable 'V1' has 5 voxels but the run reads voxel "):
        evaluate_movie_run(run, read_movie(stim2, bold2))


def _bold_copy(src, dst, change) -> None:
    """Copy a response file, every variable passed through ``change(name, array)``."""
    with h5py.File(src, "r") as fi, h5py.File(dst, "w") as fo:
        for name in fi:
            fo[name] = change(name, np.asarray(fi[name][()]))


def test_unusable_movie_voxels_are_dropped_as_if_never_there(movie_run, tmp_path):
    """Voxels with NaN in a volume or in a repeat of the test run, or constant on the
    training runs, are dropped with one warning per area (as static runs drop them); the run
    keeps the file's voxel numbers and equals, voxel for voxel, a run on a file from which
    those voxels were removed. An area with no usable voxel is refused in one line."""
    from niflow.data.dataset import DroppedVoxelsWarning
    from niflow.data.errors import DataError
    from niflow.runs.movie_baseline import movie_baseline_folder

    sim, paths, _, _ = movie_run
    bad = {"V1": [2, 5], "V2": [1]}

    def spoil(name, a):
        a = a.astype(np.float32) if a.dtype.kind == "f" else a
        if name == "V1":
            a[7, 2] = np.nan
            a[:, 5] = 3.0
        if name == "V2_repeats":
            a[1, 4, 1] = np.inf
        return a

    def remove(name, a):
        area = name.split("_")[0]
        return np.delete(a, bad[area], axis=-1) if area in bad else a

    _bold_copy(paths["bold"], tmp_path / "spoilt.h5", spoil)
    _bold_copy(paths["bold"], tmp_path / "removed.h5", remove)
    with pytest.warns(DroppedVoxelsWarning) as caught:
        train_movie(paths["stim"], tmp_path / "spoilt.h5", tmp_path / "dropped", _config(2),
                    [sim.test_run], progress=False)
    notes = sorted(str(w.message) for w in caught if w.category is DroppedVoxelsWarning)
    assert len(notes) == 2
    assert "'V1': dropped 2 of 30 voxels (1 with NaN/Inf, 1 constant" in notes[0]
    assert "'V2': dropped 1 of 12 voxels (1 with NaN/Inf, 0 constant" in notes[1]
    train_movie(paths["stim"], tmp_path / "removed.h5", tmp_path / "reference", _config(2),
                [sim.test_run], progress=False)
    got = read_table(tmp_path / "dropped" / "voxels.csv")
    ref = read_table(tmp_path / "reference" / "voxels.csv")
    pred_got = np.load(tmp_path / "dropped" / "predictions.npz")
    pred_ref = np.load(tmp_path / "reference" / "predictions.npz")
    for area, n in (("V1", 30), ("V2", 12)):
        kept = np.setdiff1d(np.arange(n), bad[area])
        m = got["area"] == area
        assert np.array_equal(got["voxel"][m].astype(int), kept)
        for col in ("r_test", "prf_x", "hrf_peak_s", "noise_ceiling"):
            assert np.allclose(got[col][m].astype(float),
                               ref[col][ref["area"] == area].astype(float), atol=1e-5), col
        assert np.allclose(pred_got[area], pred_ref[area], atol=1e-5)
    # the ridge in the run folder fits the kept voxels only, and keeps their noise ceiling
    movie_baseline_folder(read_movie(paths["stim"], tmp_path / "spoilt.h5"),
                          tmp_path / "dropped", n_permutations=0)
    ridge = read_table(tmp_path / "dropped" / "baseline_motion_energy.csv")
    assert np.array_equal(ridge["voxel"][ridge["area"] == "V2"].astype(int), [0, *range(2, 12)])
    assert np.isfinite(ridge["noise_ceiling"].astype(float)).all()

    _bold_copy(paths["bold"], tmp_path / "dead.h5",
               lambda name, a: np.full_like(a, np.nan) if name == "V2" else a)
    with pytest.raises(DataError, match=r"dead\.h5: variable 'V2': none of its 12 voxels is "
                                        r"usable \(12 with NaN/Inf"):
        train_movie(paths["stim"], tmp_path / "dead.h5", tmp_path / "dead", _config(2),
                    [sim.test_run], progress=False)
    assert not (tmp_path / "dead").exists()


def test_the_report_shows_a_movie_runs_haemodynamics(movie_run, tmp_path):
    from niflow.report.html import write_report

    _, _, _, out = movie_run
    page = write_report(out, probe_if_missing=False).read_text()
    assert "Haemodynamic responses" in page
    assert "V1: learned HRFs" in page and "V2: learned HRFs" in page
    assert "HRF peak (s)" in page  # a column of the per-voxel table
    # as `niflow report RUN` makes it: the movie probe runs first (it raised a KeyError)
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    page = write_report(copy).read_text()
    assert (copy / "probe.json").exists()
    assert "median direction selectivity (drifting gratings)" in page
    assert "median HRF peak, in-silico bar sweep (s)" in page


def test_a_colour_movie_trains_on_its_red_channel(movie_run, tmp_path):
    """The simulation's movie in the red channel, independent noise in green and blue: a
    colour video model trains from (n_frames, H, W, 3) frames and predicts held-out volumes
    above chance."""
    sim, paths, _, _ = movie_run
    rng = np.random.default_rng(0)
    colour = np.stack([sim.stim, rng.integers(0, 256, sim.stim.shape, dtype=np.uint8),
                       rng.integers(0, 256, sim.stim.shape, dtype=np.uint8)], axis=-1)
    with h5py.File(paths["stim"], "r") as src, h5py.File(tmp_path / "colour.h5", "w") as fh:
        fh["stim"] = colour
        fh["fps"] = src["fps"][()]
        fh["run"] = src["run"][()]
    run = train_movie(tmp_path / "colour.h5", paths["bold"], tmp_path / "run", _config(3),
                      [sim.test_run], progress=False)
    assert run.video.frame_shape == (3, 20, 20)
    table = read_table(tmp_path / "run" / "voxels.csv")
    r = table["r_test"][table["area"] == "V1"].astype(float)
    assert np.median(r) > 0.15  # chance: within about ±0.1 for the median over 30 voxels


def test_two_gloo_processes_train_a_movie_run(movie_run, tmp_path):
    """``torchrun --nproc_per_node 2`` on movie data: each process takes one segment per
    step, gradients are averaged, both end with the same weights (checked inside training)
    and rank 0 alone writes a run folder that predicts held-out volumes above chance."""
    import os
    import subprocess
    import sys

    sim, paths, _, _ = movie_run
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"select": {"candidates": []}, "train": {
        "epochs": 3, "patience": 4, "val_fraction": 0.34}}))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "niflow", "train", "--stim", str(paths["stim"]), "--bold",
           str(paths["bold"]), "--out", str(tmp_path / "ddp"), "--test-runs",
           str(sim.test_run), "--config", str(config), "--quiet", "--device", "cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("run folder:") == 1  # rank 0 reports
    table = read_table(tmp_path / "ddp" / "voxels.csv")
    r = table["r_test"][table["area"] == "V1"].astype(float)
    assert np.median(r) > 0.15


def test_a_full_space_time_run_saves_and_loads(movie_run, tmp_path):
    """``video.space_time = "full"``: V2 (learned) filters with causal 3D kernels, the Gabor
    V1 filters its quadrature responses in time (then each channel, as factorised); the
    loaded run predicts what training stored."""
    sim, paths, _, _ = movie_run
    cfg = _config(1)
    cfg.video.space_time = "full"
    train_movie(paths["stim"], paths["bold"], tmp_path / "full", cfg, [sim.test_run],
                progress=False)
    run = load_run(tmp_path / "full")
    assert set(run.video.space_time_conv) == {"V1", "V2"} and set(run.video.temporal) == {"V1"}
    assert run.video.space_time_conv["V1"].past.abs().sum() > 0  # trained away from the start
    stored = np.load(tmp_path / "full" / "predictions.npz")
    got = run.predict_volumes(read_movie(paths["stim"], paths["bold"]), stored["test_rows"])
    for area in ("V1", "V2"):
        assert np.allclose(got[area], stored[area], rtol=1e-4, atol=1e-4)


def test_a_run_with_motion_energy_channels_saves_and_loads(movie_run, tmp_path):
    """``motion_hz`` on the Gabor V1 (1 Hz at 4 fps): each pair adds two motion-energy
    channels, the run's config records them, and the loaded run (heads rebuilt from the
    config and frame rate) predicts what training stored."""
    sim, paths, _, _ = movie_run
    cfg = _config(1)
    cfg.areas[0].motion_hz = [1.0, 3.0]  # 3 Hz is above 4 fps's Nyquist: not built
    train_movie(paths["stim"], paths["bold"], tmp_path / "motion", cfg, [sim.test_run],
                progress=False)
    assert json.loads((tmp_path / "motion" / "config.json").read_text())["areas"][0][
        "motion_hz"] == [1.0, 3.0]
    run = load_run(tmp_path / "motion")
    assert run.video.spatial.geometry("V1").channels == 3 * 32
    assert run.video.spatial.graph.areas["V1"].conv.n_heads == 2
    stored = np.load(tmp_path / "motion" / "predictions.npz")
    got = run.predict_volumes(read_movie(paths["stim"], paths["bold"]), stored["test_rows"])
    for area in ("V1", "V2"):
        assert np.allclose(got[area], stored[area], rtol=1e-4, atol=1e-4)


def test_an_ensemble_of_movie_models_averages_its_members(movie_run, tmp_path):
    """``select.members = 2``: a second model of the chosen kind with the next seed; the run
    stores both, predicts their mean, and reports the members' median HRFs and pRFs."""
    from niflow.interpret.receptive_fields import readout_prf
    from niflow.train.video import predict_video

    sim, paths, _, _ = movie_run
    cfg = _config(2)
    cfg.select.members = 2
    run = train_movie(paths["stim"], paths["bold"], tmp_path / "ens", cfg, [sim.test_run],
                      progress=False)
    assert len(run.videos) == 2
    selection = json.loads((tmp_path / "ens" / "selection.json").read_text())
    assert [m["seed"] for m in selection["members"]] == [cfg.train.seed, cfg.train.seed + 1]
    loaded = load_run(tmp_path / "ens")
    assert len(loaded.videos) == 2
    files = read_movie(paths["stim"], paths["bold"])
    stored = np.load(tmp_path / "ens" / "predictions.npz")
    rows = stored["test_rows"]
    table = read_table(tmp_path / "ens" / "voxels.csv")
    for area in ("V1", "V2"):
        each = [loaded.scalers[area].inverse(predict_video(v, files, rows)[area])
                for v in loaded.videos]
        assert not np.allclose(each[0], each[1], atol=1e-3)  # two different models
        assert np.allclose(stored[area], (each[0] + each[1]) / 2, rtol=1e-4, atol=1e-4)
        m = table["area"] == area
        peaks = [v.hrf_parameters()[area]["hrf_peak_s"] for v in loaded.videos]
        assert np.allclose(table["hrf_peak_s"][m].astype(float), np.median(peaks, axis=0),
                           atol=1e-3)
        xs = [readout_prf(v.spatial, area)["prf_x"] for v in loaded.videos]
        assert np.allclose(table["prf_x"][m].astype(float), np.median(xs, axis=0), atol=1e-3)


def test_an_interrupted_movie_run_resumes_to_the_uninterrupted_result(movie_run, tmp_path,
                                                                       monkeypatch, capsys):
    """Ctrl-C after epoch 2 of 4 leaves that epoch's checkpoint; ``resume=True`` trains
    epochs 3-4 only and ends with the uninterrupted run's predictions (the fixture's run,
    same configuration); a finished run is not resumed, a changed configuration refused."""
    from niflow.runs.folder import RunComplete
    from niflow.runs.run import RunError
    from niflow.train import epochs as epochmod
    from niflow.train.safety import TrainingInterrupted

    sim, paths, _, reference = movie_run
    logged: list[int] = []
    real_append = epochmod._append_log

    def stop_after_epoch_2(path, record):
        if record["epoch"] == 2:  # killed after epoch 2's checkpoint, before its log line
            raise KeyboardInterrupt
        logged.append(record["epoch"])
        real_append(path, record)

    monkeypatch.setattr(epochmod, "_append_log", stop_after_epoch_2)
    out = tmp_path / "resumed"
    with pytest.raises(TrainingInterrupted) as stopped:
        train_movie(paths["stim"], paths["bold"], out, _config(), [sim.test_run],
                    progress=False)
    assert stopped.value.saved == 2 and "model selection" in stopped.value.stage
    assert (out / "selection").is_dir() and not (out / "metrics.json").exists()
    logged.clear()
    monkeypatch.setattr(epochmod, "_append_log",
                        lambda path, record: (logged.append(record["epoch"]),
                                              real_append(path, record)))
    capsys.readouterr()
    train_movie(paths["stim"], paths["bold"], out, _config(), [sim.test_run], resume=True)
    assert logged == [3, 4]  # only the epochs after the checkpoint were trained
    # (the epoch lines are a bar under a notebook kernel: the log records are the check)
    assert capsys.readouterr().err.startswith(f"resuming {out}: model selection; "
                                              f"candidate-config from epoch 3 of 4")
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    want_log = [json.loads(x) for x in (reference / "log.jsonl").read_text().splitlines()]
    assert [e["train_loss"] for e in log] == pytest.approx([e["train_loss"] for e in want_log],
                                                          abs=1e-6)
    assert not (out / "selection").exists()
    got, want = np.load(out / "predictions.npz"), np.load(reference / "predictions.npz")
    for area in ("V1", "V2"):
        assert np.allclose(got[area], want[area], atol=1e-5)
    with pytest.raises(RunComplete, match="already complete"):
        train_movie(paths["stim"], paths["bold"], out, _config(), [sim.test_run],
                    resume=True)
    with pytest.raises(RunError, match="configuration differs"):
        train_movie(paths["stim"], paths["bold"], out, _config(epochs=6), [sim.test_run],
                    resume=True)


def test_a_diverging_movie_run_stops_with_one_line_and_no_finished_files(movie_run, tmp_path):
    """Movie models train through the image models' epoch loop: a learning rate far too
    large stops with the same one-line error (before, the movie run trained on to NaN
    weights and wrote a finished folder with r = 0 everywhere)."""
    from niflow.train.safety import TrainingDiverged

    sim, paths, _, _ = movie_run
    cfg = _config(3)
    cfg.train.lr = 1e3
    with pytest.raises(TrainingDiverged) as err:
        train_movie(paths["stim"], paths["bold"], tmp_path / "div", cfg, [sim.test_run],
                    progress=False)
    line = str(err.value)
    assert "\n" not in line and "try a lower --lr (now 1000)" in line
    assert f"{tmp_path / 'div'} is left unfinished" in line and "--force" in line
    assert not {"model.pt", "metrics.json", "voxels.csv"} & {
        p.name for p in (tmp_path / "div").iterdir()}


def test_a_diverged_movie_candidate_is_left_out_as_for_images(movie_run, tmp_path,
                                                              monkeypatch):
    """Movie selection is the image path's: a candidate whose training diverges is skipped
    and recorded in ``selection.json``, and the next one is kept."""
    import niflow.runs.movie as movie_mod
    from niflow.train.safety import TrainingDiverged

    sim, paths, _, _ = movie_run
    real_train = movie_mod.train_video
    calls: list[str] = []

    def first_diverges(model, data, cfg, *args, **kwargs):
        calls.append(cfg.readout.kind)
        if len(calls) == 1:
            raise TrainingDiverged(1, float("nan"), cfg.train.lr)
        return real_train(model, data, cfg, *args, **kwargs)

    monkeypatch.setattr(movie_mod, "train_video", first_diverges)
    cfg = cfgmod.preset("default")
    cfg.train.epochs, cfg.train.val_fraction = 2, 0.34
    cfg.select = cfgmod.SelectConfig(candidates=["gabor-gaussian", "learned-gaussian"])
    train_movie(paths["stim"], paths["bold"], tmp_path / "sel", cfg, [sim.test_run],
                progress=False)
    selection = json.loads((tmp_path / "sel" / "selection.json").read_text())
    assert selection["chosen"] == "learned-gaussian" and len(calls) == 2
    assert selection["skipped"] == ["candidate gabor-gaussian: diverged at epoch 1 (loss nan)"]
    assert selection["scores"]["learned-gaussian"]["val_median_r_per_area"].keys() == {
        "V1", "V2"}


def test_holding_out_a_run_that_is_not_repeated_gives_no_noise_ceiling(movie_run, tmp_path):
    """``<AREA>_repeats`` repeat the test run 4; holding out run 3 (as long as run 4) used to
    report run 4's ceiling for run 3's predictions, and holding out runs 1-2 was refused with
    a shape error. Now both train, warn once per area, and report no ceiling."""
    sim, paths, _, _ = movie_run
    assert sim.test_run == 4
    for runs in ([3], [1, 2]):
        out = tmp_path / "-".join(map(str, runs))
        with pytest.warns(UserWarning, match=r"repeats of other runs, so no noise ceiling "
                                             r"for V[12]") as caught:
            train_movie(paths["stim"], paths["bold"], out, _config(2), runs, progress=False)
        assert sum("no noise ceiling" in str(w.message) for w in caught) == 2  # V1, V2
        table = read_table(out / "voxels.csv")
        assert np.isnan(table["noise_ceiling"].astype(float)).all()
        stats = json.loads((out / "stats.json").read_text())
        assert stats["areas"]["V1"]["median_noise_ceiling"] is None

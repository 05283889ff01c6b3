"""``niflow probe`` on a movie run: the standard bar sweep through a trained tiny video model,
the classic pRF + HRF fit on its predictions, in-silico centres against the readout's."""

from __future__ import annotations

import json

import numpy as np
import pytest

from niflow import config as cfgmod
from niflow.data.simulate.movie import simulate_movie, write_movie_simulation
from niflow.evaluate.statistics import read_table
from niflow.interpret.movie_tuning import movie_tuning
from niflow.runs.movie import train_movie
from niflow.runs.movie_probe import movie_bar_sweep
from niflow.runs.probe import probe_run


@pytest.fixture(scope="module")
def movie_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("movie_probe")
    sim = simulate_movie(n_train_runs=2, run_seconds=60.0, fps=2.0, tr=1.0, size=16,
                         n_voxels={"V1": 24, "V2": 10}, ceiling_range=(0.7, 0.9), seed=4)
    paths = write_movie_simulation(sim, root / "data")
    cfg = cfgmod.candidate(cfgmod.preset("default"), "gabor-gaussian")
    cfg.train.epochs, cfg.train.patience, cfg.train.val_fraction = 3, 3, 0.34
    run = train_movie(paths["stim"], paths["bold"], root / "run", cfg, [sim.test_run],
                      progress=False)
    return run, root / "run"


def test_the_sweep_is_a_one_run_movie_at_the_runs_timing(movie_run):
    run, _ = movie_run
    files, aperture = movie_bar_sweep(run)
    assert files.frame_shape == run.video.frame_shape
    assert aperture.shape == (files.timing.n_frames, 16, 16)
    assert (files.timing.fps, files.timing.tr) == (run.video.fps, run.tr)
    assert files.timing.n_volumes == int(files.timing.n_frames / files.timing.fps)


def test_in_silico_centres_land_on_the_readout_centres(movie_run, tmp_path):
    run, folder = movie_run
    res = probe_run(run, tmp_path)
    table = read_table(tmp_path / "probe_voxels.csv")
    assert {"insilico_x", "insilico_y", "insilico_sigma", "insilico_hrf_peak_s",
            "insilico_fit_r", "readout_prf_x", "hrf_peak_s"} <= set(table)
    info = json.loads((tmp_path / "probe.json").read_text())
    assert info["kind"] == "movie" and info["tr"] == run.tr
    assert all((tmp_path / "figures" / f).exists()
               for f in ("probe_prf.png", "probe_tuning.png", "probe_motion.png"))
    # the drifting gratings' tuning, as movie_tuning gives it for the run's ensemble
    tuning = movie_tuning(run.videos)
    for area in ("V1", "V2"):
        m = table["area"] == area
        for k in ("preferred_orientation", "direction_selectivity", "transient_index"):
            assert np.allclose(table[k][m].astype(float), tuning[area][k], atol=1e-4,
                               equal_nan=True), k
        assert np.isfinite(table["transient_index"][m].astype(float)).all()  # 0.5 Hz drifts
    for area in ("V1", "V2"):
        m = table["area"] == area
        assert m.sum() == run.video.hrf[area].n_voxels
        assert np.allclose(table["insilico_x"][m], res["fits"][area].x, atol=1e-4)
        assert info["checks"][area]["all_voxels"]["n_voxels"] == m.sum()
        # the latency the sweep finds follows the model's HRF (after 3 epochs still near
        # its 5 s start: a weak check)
        d = np.abs(table["insilico_hrf_peak_s"][m] - table["hrf_peak_s"][m])
        assert np.median(d) < 1.0
    # V1 (Gabor energy under a Gaussian readout) answers bars like a Gaussian pRF, where
    # its readout says; V2 after 3 epochs of a learned stage on 10 voxels is not checked
    m = table["area"] == "V1"
    ok = table["insilico_fit_r"][m] > 0.5
    assert ok.mean() > 0.75
    x, rx = table["insilico_x"][m][ok], table["readout_prf_x"][m][ok]
    y, ry = table["insilico_y"][m][ok], table["readout_prf_y"][m][ok]
    assert np.corrcoef(x, rx)[0, 1] > 0.9 and np.corrcoef(y, ry)[0, 1] > 0.9
    assert np.median(np.hypot(x - rx, y - ry)) < 2.0


def test_cli_probe_on_a_movie_run(movie_run, tmp_path, capsys):
    from niflow.cli.main import main

    _, folder = movie_run
    assert main(["probe", str(folder), "--out", str(tmp_path)]) == 0
    assert "V1" in capsys.readouterr().out and (tmp_path / "probe_voxels.csv").exists()
    assert main(["probe", str(folder), "--out", str(tmp_path), "--bar-step", "2"]) == 2

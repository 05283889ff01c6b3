"""Stimuli larger than ``data.input_max_px``: area-averaged before the first area, with
pRFs, predictions and run folders still in the stimulus's own pixels."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from _configs import default_config, movie_config
from niflow import config as cfgmod
from niflow.data.dataset import DroppedVoxelsWarning, parse_rows
from niflow.data.movie import read_movie
from niflow.data.simulate import simulate
from niflow.data.simulate.movie import simulate_movie, write_movie_simulation
from niflow.evaluate.statistics import read_table
from niflow.model.areas import input_pool, pooled_stimulus
from niflow.model.nif import NIFModel
from niflow.model.video import VideoNIF
from niflow.runs.crossval import cross_validate
from niflow.runs.inputs import (
    PooledStimulusWarning,
    check_arrays,
    pooled_stimulus_note,
)
from niflow.runs.movie import large_frames_note, train_movie
from niflow.runs.pipeline import train_run
from niflow.runs.run import load_run


def _naive_blocks(x: np.ndarray, k: int) -> np.ndarray:
    """Mean of each k × k block of the last two axes; edge blocks hold what is left."""
    h, w = x.shape[-2:]
    out = np.zeros((*x.shape[:-2], -(-h // k), -(-w // k)))
    for i in range(out.shape[-2]):
        for j in range(out.shape[-1]):
            out[..., i, j] = x[..., i * k:(i + 1) * k, j * k:(j + 1) * k].mean((-2, -1))
    return out


@pytest.mark.parametrize("k", [1, 2, 3])
def test_pooled_stimulus_is_the_mean_of_each_block_also_at_the_edges(k):
    x = np.random.default_rng(0).normal(size=(2, 3, 3, 13, 10))  # (B, T, C, H, W)
    got = pooled_stimulus(torch.from_numpy(x), k).numpy()
    np.testing.assert_allclose(got, _naive_blocks(x, k), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("size", "max_px", "k"), [
    ((56, 56), 64, 1), ((64, 64), 64, 1), ((65, 40), 64, 2), ((96, 128), 64, 2),
    ((129, 129), 64, 3), ((256, 256), 64, 4), ((500, 500), 0, 1)])
def test_input_pool_is_the_smallest_factor_within_the_limit(size, max_px, k):
    assert input_pool(size, max_px) == k
    assert max(-(-s // k) for s in size) <= (max_px or max(size))


def test_by_default_nothing_is_pooled_and_large_movies_are_told_how():
    cfg = cfgmod.preset("default")
    assert cfg.data.input_max_px == 0
    assert NIFModel(cfg, (1, 128, 128), {"V1": 2}).input_pool == 1
    movie = VideoNIF(cfg, (1, 128, 128), {"V1": 2}, fps=4.0, hrf_span_s=4.0)
    assert movie.spatial.input_pool == 1
    assert pooled_stimulus_note(cfg, (1, 128, 96), "stim.h5") is None
    # 64 x 64 at 24 fps is the largest a movie is said nothing about
    assert large_frames_note((1, 64, 64), 24.0, "stim.h5") is None
    note = large_frames_note((3, 128, 96), 16.0, "stim.h5")
    assert note.startswith("stim.h5: frames of 128 x 96 px at 16 fps;")
    assert "averaged over 2 x 2 pixel blocks first: about 4 times less" in note


def _config(max_px: int, candidate: str) -> cfgmod.RunConfig:
    cfg = cfgmod.candidate(cfgmod.preset("default"), candidate)
    cfg.data.input_max_px = max_px
    return cfg


@pytest.mark.parametrize("candidate", ["gabor-gaussian", "learned-gaussian"])
def test_a_large_stimulus_is_predicted_as_its_blocks_would_be(candidate):
    """A model on 60 × 45 images with input_max_px 30 predicts what a model with the same
    weights predicts on the naive 2 × 2 block means (30 × 23), and its cells sit twice as
    far apart on the stimulus, at the blocks' centres."""
    torch.manual_seed(0)
    big = NIFModel(_config(30, candidate), (1, 60, 45), {"V1": 7, "V2": 5}).eval()
    small = NIFModel(_config(0, candidate), (1, 30, 23), {"V1": 7, "V2": 5}).eval()
    small.load_state_dict(big.state_dict())
    x = np.random.default_rng(1).normal(size=(4, 1, 60, 45))
    blocks = torch.from_numpy(_naive_blocks(x, 2)).float()
    want = small(blocks)
    got = big(torch.from_numpy(x).float())
    for area in want:
        torch.testing.assert_close(got[area], want[area], rtol=1e-4, atol=1e-5)
        g, s = big.geometry(area), small.geometry(area)
        assert g.grid == s.grid
        assert g.to_stimulus(3.0) == pytest.approx(2 * s.to_stimulus(3.0) + 0.5)


def test_a_movie_model_pools_every_frame():
    torch.manual_seed(0)
    cfg = _config(16, "gabor-gaussian")
    big = VideoNIF(cfg, (3, 32, 32), {"V1": 4}, fps=4.0, hrf_span_s=4.0).eval()
    small = VideoNIF(_config(0, "gabor-gaussian"), (3, 16, 16), {"V1": 4}, fps=4.0,
                     hrf_span_s=4.0).eval()
    small.load_state_dict(big.state_dict())
    x = np.random.default_rng(2).normal(size=(1, 30, 3, 32, 32))
    want = small.features(torch.from_numpy(_naive_blocks(x, 2)).float())
    got = big.features(torch.from_numpy(x).float())
    torch.testing.assert_close(got["V1"], want["V1"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("value", [-1, True, 64.0, "64", None])
def test_impossible_limits_are_refused(value):
    with pytest.raises(cfgmod.ConfigError, match="config.data.input_max_px"):
        cfgmod.from_dict({"data": {"input_max_px": value}})
    assert cfgmod.from_dict({"data": {"input_max_px": 48}}).data.input_max_px == 48


def _twice_as_large(stim: np.ndarray) -> np.ndarray:
    """Each pixel shown as a 2 × 2 block (the last two axes of (n, H, W))."""
    return np.repeat(np.repeat(stim, 2, axis=1), 2, axis=2)


def _same_voxels(small: Path, big: Path) -> None:
    """The two runs' voxels.csv agree, with pRFs twice as far from pixel −0.5 and twice as
    large in the large run's pixels; sizes are moments of maps on the stimulus's pixels,
    where a map of 2 × 2 blocks adds the variance of a pixel's place in its block
    ((2² − 1) / 12 = 1/4)."""
    a, b = read_table(small / "voxels.csv"), read_table(big / "voxels.csv")
    for key in ("r_test", "r2_test"):
        np.testing.assert_allclose(b[key].astype(float), a[key].astype(float), atol=2e-3)
    for key in ("prf_x", "prf_y"):
        np.testing.assert_allclose(b[key].astype(float), 2 * a[key].astype(float) + 0.5,
                                   atol=2e-2)
    want = np.sqrt((2 * a["prf_sigma"].astype(float)) ** 2 + 0.25)
    np.testing.assert_allclose(b["prf_sigma"].astype(float), want, rtol=1e-2)


def test_an_image_run_on_letters_twice_as_large_is_the_run_on_the_letters(tmp_path):
    """112-px letters made of 2 × 2 blocks reach V1 (input_max_px 64: pooled by 2) as the
    56-px letters do, so the runs agree and the pRFs are the same in each one's pixels."""
    sim = simulate(n_per_letter=6, n_voxels={"V1": 24, "V2": 16}, seed=5)
    n = sim.stim.shape[0]
    rows = parse_rows(f"{n - n // 5}:{n}", n)
    cfg = default_config(3)
    cfg.data.input_max_px = 64
    train_run(sim.stim, sim.responses, tmp_path / "small", cfg, rows, progress=False)
    with pytest.warns(PooledStimulusWarning, match="stimuli of 112 x 112 px"):
        run, _, _ = train_run(_twice_as_large(sim.stim), sim.responses, tmp_path / "big", cfg,
                              rows, progress=False)
    assert run.model.input_pool == 2
    assert json.loads((tmp_path / "big" / "config.json").read_text())["data"][
        "input_max_px"] == 64
    _same_voxels(tmp_path / "small", tmp_path / "big")


def test_a_movie_run_on_frames_twice_as_large_is_the_run_on_the_frames(tmp_path):
    sim = simulate_movie(n_train_runs=3, run_seconds=60.0, fps=4.0, tr=1.0, size=20,
                         n_voxels={"V1": 20, "V2": 12}, ceiling_range=(0.6, 0.8), seed=6)
    small = write_movie_simulation(sim, tmp_path / "small")
    big = write_movie_simulation(dataclasses.replace(sim, stim=_twice_as_large(sim.stim)),
                                 tmp_path / "big")
    cfg = movie_config(3)
    cfg.data.input_max_px = 20
    for paths, out in ((small, tmp_path / "run_small"), (big, tmp_path / "run_big")):
        train_movie(paths["stim"], paths["bold"], out, cfg, [sim.test_run], progress=False)
    _same_voxels(tmp_path / "run_small", tmp_path / "run_big")
    a = read_table(tmp_path / "run_small" / "voxels.csv")
    b = read_table(tmp_path / "run_big" / "voxels.csv")
    np.testing.assert_allclose(b["hrf_peak_s"].astype(float), a["hrf_peak_s"].astype(float),
                               atol=1e-6)
    # the large run reloads and predicts its stored test volumes from the large frames
    pred = np.load(tmp_path / "run_big" / "predictions.npz")
    got = load_run(tmp_path / "run_big").predict_volumes(read_movie(big["stim"], big["bold"]),
                                                         pred["test_rows"])
    np.testing.assert_allclose(got["V1"], pred["V1"], rtol=1e-4, atol=1e-4)


def test_cross_validation_says_once_that_the_stimuli_are_pooled():
    sim = simulate(n_per_letter=2, n_voxels={"V1": 8, "V2": 6}, seed=2)
    cfg = default_config(1)
    cfg.data.input_max_px = 64
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cross_validate(_twice_as_large(sim.stim), sim.responses, cfg, k=2, baselines=())
    said = [str(w.message) for w in caught if issubclass(w.category, PooledStimulusWarning)]
    assert len(said) == 1 and "stimuli of 112 x 112 px" in said[0]
    assert not any("pixel blocks" in str(w.message) for w in caught
                   if issubclass(w.category, DroppedVoxelsWarning))
    checked = check_arrays(_twice_as_large(sim.stim), sim.responses, cfg,
                           np.arange(4), sources={"stim": "letters.h5"})
    assert checked.pooled_note.startswith("letters.h5: stimuli of 112 x 112 px")
    assert checked.warnings == []

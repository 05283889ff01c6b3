"""The movie simulator's direction-selective voxels (``simulate_movie(motion=True)``)."""

from __future__ import annotations

import numpy as np
import pytest

from niflow.data.simulate import movie as mv


def _drifting(direction_deg: float, n: int = 10, size: int = 32, lam: float = 8.0,
              speed: float = 1.0) -> np.ndarray:
    """uint8 grating drifting at ``direction_deg`` (counter-clockwise from +x, y up)."""
    theta = np.radians(direction_deg)
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    along = xx * np.cos(theta) - yy * np.sin(theta)  # rows grow downward
    t = np.arange(n)[:, None, None]
    return (127.5 + 127 * np.cos(2 * np.pi * (along[None] - speed * t) / lam)).astype(np.uint8)


@pytest.mark.parametrize("direction", [0, 90, 180, 270])
def test_a_drifting_grating_drives_its_own_direction_most(direction):
    maps = mv.direction_maps(_drifting(direction), np.array([0]))
    mean = maps[1:, :, 8:24, 8:24].mean((0, 2, 3))
    assert np.argmax(mean) == direction // 45
    assert mean[(direction // 45 + 4) % 8] == 0.0  # the opposite direction is silent
    assert maps[0].max() == 0.0  # nothing moved before the first frame


def test_the_correlators_match_a_naive_pixel_loop():
    rng = np.random.default_rng(0)
    stim = rng.integers(0, 256, (4, 9, 9)).astype(np.uint8)
    maps = mv.direction_maps(stim, np.array([0, 2]))
    s = mv._bandpassed(stim)
    for k, (dy, dx) in enumerate([(0, 2), (-1, 1), (-2, 0), (-1, -1)]):  # 0, 45, 90, 135°
        for t in (1, 3):
            for y in range(9):
                for x in range(9):
                    inside = 0 <= y - dy < 9 and 0 <= x - dx < 9
                    back = (s[t - 1, y - dy, x - dx], s[t, y - dy, x - dx]) if inside else (0, 0)
                    r = s[t, y, x] * back[0] - back[1] * s[t - 1, y, x]
                    assert maps[t, k, y, x] == pytest.approx(max(r, 0.0), abs=1e-6)
                    assert maps[t, k + 4, y, x] == pytest.approx(max(-r, 0.0), abs=1e-6)
    assert maps[2].max() == 0.0  # a run starts at frame 2: no motion from frame 1 into it


def test_the_direction_drive_is_the_same_in_chunks():
    sim = mv.simulate_movie(n_train_runs=2, run_seconds=30.0, size=16,
                            n_voxels={"V1": 12, "V2": 6}, seed=1)
    starts = np.flatnonzero(np.r_[True, sim.frame_run[1:] != sim.frame_run[:-1]])
    prf = {k: sim.truth["V1"][k] for k in ("prf_x", "prf_y", "prf_sigma")}
    direction = np.arange(12) % 8
    voxels = {"V1": (prf, direction)}
    whole = mv._direction_drives(sim.stim, starts, voxels, chunk=10**6)["V1"]
    assert np.allclose(mv._direction_drives(sim.stim, starts, voxels, chunk=37)["V1"], whole)


def test_motion_voxels_mix_their_direction_into_the_plain_regime():
    kw = dict(n_train_runs=2, run_seconds=60.0, size=24, n_voxels={"V1": 30, "V2": 20}, seed=2)
    plain = mv.simulate_movie(**kw)
    moving = mv.simulate_movie(motion=True, **kw)
    assert np.array_equal(plain.stim, moving.stim)
    for area in ("V1", "V2"):
        t = moving.truth[area]
        for key in ("prf_x", "hrf_param_s", "transient", "noise_ceiling"):
            assert np.array_equal(t[key], plain.truth[area][key])
        assert set(np.unique(t["direction_deg"])) <= set(45.0 * np.arange(8))
        assert np.all((t["motion_weight"] >= 0.3) & (t["motion_weight"] <= 0.7))
        r = [np.corrcoef(plain.signal[area][:, v], moving.signal[area][:, v])[0, 1]
             for v in range(t["motion_weight"].size)]
        assert 0.3 < np.median(r) < 0.99  # a distinct signal, not a new one
        assert "direction_deg" not in plain.truth[area]


def test_cli_simulate_video_motion_writes_the_directions(tmp_path):
    from niflow.cli.main import main

    rc = main(["simulate", str(tmp_path / "m"), "--video", "--motion", "--runs", "1",
               "--run-seconds", "12", "--size", "16", "--v1", "6", "--v2", "4",
               "--repeats", "2"])
    assert rc == 0
    truth = np.load(tmp_path / "m" / "truth.npz")
    assert truth["V1_direction_deg"].shape == (6,) and truth["V2_motion_weight"].shape == (4,)
    assert main(["simulate", str(tmp_path / "p"), "--video", "--motion", "--prf-mapping"]) != 0

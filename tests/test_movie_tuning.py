"""In-silico spatiotemporal tuning of a video model (niflow.interpret.movie_tuning) on voxels
whose readout reads one known Gabor channel: the preferred orientation is the channel's, the
preferred wavelength grows with the channel's, a static channel has no preferred direction
and a motion-energy channel prefers motion across its stripes, its two heads opposite ways."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from niflow import config as cfgmod
from niflow.interpret.movie_tuning import (
    direction_tuning,
    drifting_grating,
    movie_tuning,
    temporal_tuning,
)
from niflow.model.video import VideoNIF

SIZE, FPS = 24, 8.0


def _reading(channels: list[int], motion_hz: list[float] | None = None) -> VideoNIF:
    """A Gabor video model whose V1 voxel j reads only channel ``channels[j]`` at the
    centre of the field."""
    cfg = cfgmod.candidate(cfgmod.preset("default"), "gabor-gaussian")
    if motion_hz:
        cfg.areas[0].motion_hz = motion_hz
    torch.manual_seed(0)
    video = VideoNIF(cfg, (1, SIZE, SIZE), {"V1": len(channels), "V2": 2}, FPS).eval()
    readout = video.spatial.readouts["V1"]
    h, w = video.spatial.graph.geometries["V1"].grid
    weight = torch.zeros(readout.channels, len(channels))
    weight[channels, torch.arange(len(channels))] = 1.0
    v = len(channels)
    readout.initialize(centre=torch.tensor([[(h - 1) / 2, (w - 1) / 2]] * v),
                       sigma=torch.full((v,), 3.0), weight=weight, bias=torch.zeros(v))
    return video


def test_orientation_and_wavelength_are_those_of_the_channel_read():
    n_scales = 4  # the gabor-gaussian V1: 8 orientations x 4 wavelengths, orientation-major
    picks = [(o, k) for o in (0, 2, 4, 6) for k in (0, 3)]
    video = _reading([o * n_scales + k for o, k in picks])
    res = movie_tuning(video)["V1"]
    for j, (o, _) in enumerate(picks):
        want = 180.0 * o / 8
        diff = abs((res["preferred_orientation"][j] - want + 90) % 180 - 90)
        assert diff < 10, (j, res["preferred_orientation"][j], want)
    fine, coarse = res["preferred_wavelength"][0::2], res["preferred_wavelength"][1::2]
    assert np.all(coarse > 1.5 * fine)
    # energies of a static bank: the same for either drift direction
    assert np.all(res["direction_selectivity"] < 0.05)
    assert np.all(res["grating_response"] > 0)


def test_a_motion_energy_channel_prefers_motion_across_its_stripes():
    n_scales, heads = 4, 3  # static, +2 Hz, -2 Hz per pair
    picks = [(o, m) for o in (0, 2) for m in (1, 2)]
    video = _reading([(o * n_scales + 1) * heads + m for o, m in picks], motion_hz=[2.0])
    res = movie_tuning(video)["V1"]
    assert np.all(res["direction_selectivity"] > 0.3)
    pref = res["preferred_direction"]
    for j, (o, _) in enumerate(picks):
        across = (180.0 * o / 8 + 90) % 180  # motion is seen across the stripes
        assert abs((pref[j] - across + 90) % 180 - 90) < 15, (j, pref[j], across)
    for j in (0, 2):  # the two heads of one pair: opposite directions
        assert abs((pref[j] - pref[j + 1]) % 360 - 180) < 15
    assert np.all(res["preferred_tf_hz"] > 0)


def test_drift_moves_the_stripes_the_way_it_says():
    frames = drifting_grating((16, 16), 0.0, 8.0, 1.0, 8.0, 3)
    # rightwards: each frame is the previous one shifted right by wavelength x tf / fps px
    assert np.allclose(frames[1][:, 1:], frames[0][:, :-1], atol=1e-6)
    up = drifting_grating((16, 16), 90.0, 8.0, 1.0, 8.0, 2)
    assert np.allclose(up[1][:-1], up[0][1:], atol=1e-6)  # upwards: rows move to lower index


def test_tuning_summaries_against_closed_forms():
    dirs = np.arange(8) * 45.0
    r = np.zeros((8, 2))
    r[2, 0] = 1.0  # one direction only
    r[:, 1] = 1.0  # every direction alike
    out = direction_tuning(r, dirs)
    assert out["preferred_direction"][0] == pytest.approx(90.0)
    assert out["direction_selectivity"] == pytest.approx([1.0, 0.0])
    tf = np.array([0.0, 1.0, 4.0])
    t = temporal_tuning(np.array([[2.0, 1.0], [1.0, 1.0], [0.0, 3.0]]), tf)
    assert t["preferred_tf_hz"].tolist() == [0.0, 4.0]
    assert t["transient_index"] == pytest.approx([-1.0, 0.5])


def test_batches_of_clips_do_not_change_the_tuning(monkeypatch):
    import niflow.interpret.movie_tuning as mt

    video = _reading([0, 9, 18])
    whole = movie_tuning(video)["V1"]
    monkeypatch.setattr(mt, "BATCH_BYTES", 1)  # one clip per batch, as for large frames
    one = movie_tuning(video)["V1"]
    for k in ("preferred_orientation", "grating_response", "preferred_wavelength"):
        assert np.allclose(whole[k], one[k], rtol=1e-5, atol=1e-6), k

"""Motion-energy channels of a Gabor bank in movie models (``AreaConfig.motion_hz``):
fixed causal complex filters on each pair's quadrature response before the energy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import signal

from _configs import default_config
from niflow import config as cfgmod
from niflow.data.movie import MovieTiming
from niflow.model.filters import GaborBank, bank_wavelengths, gabor_kernel, motion_filters
from niflow.model.nif import NIFModel
from niflow.model.video import CausalQuadrature, VideoNIF
from niflow.train.video_init import calibration_clips


def _motion_config(hz: list[float], space_time: str = "factorised") -> cfgmod.RunConfig:
    cfg = cfgmod.candidate(default_config(3), "gabor-gaussian")
    cfg.areas[0].motion_hz = list(hz)
    cfg.video.space_time = space_time
    return cfg


def test_motion_filters_are_zero_mean_unit_norm_conjugate_pairs():
    h = motion_filters([2.0, 1.0], fps=8.0, taps=4)
    assert h.shape == (4, 4)
    np.testing.assert_allclose(np.abs(h.sum(axis=1)), 0.0, atol=1e-12)
    np.testing.assert_allclose((np.abs(h) ** 2).sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(h[1], h[0].conj(), atol=1e-12)  # −f is the mirror of +f
    # the +f filter turns at f: its taps' phase difference, DC removed, against a naive form
    lags = np.arange(4)
    w = np.sin(np.pi * (lags + 0.5) / 4) ** 2
    naive = w * np.exp(2j * np.pi * 2.0 * lags / 8.0)
    naive -= w * naive.sum() / w.sum()
    np.testing.assert_allclose(h[0], naive / np.linalg.norm(naive), atol=1e-12)


def test_motion_filters_drop_frequencies_a_frame_rate_cannot_carry():
    assert motion_filters([4.0, 5.0], fps=8.0, taps=4).shape == (0, 4)  # Nyquist and above
    assert motion_filters([2.0], fps=8.0, taps=1).shape == (0, 1)  # one frame: no motion
    assert motion_filters([4.0, 2.0], fps=8.0, taps=4).shape == (2, 4)


def test_heads_are_causal_sums_of_past_responses_before_the_energy():
    """Channel (pair p, head m) is |Σ_l h_m[l] z_p(t−l)| with z the direct convolutions and
    zeros before frame 0; head 0 is |z_p(t)|."""
    heads = motion_filters([2.0], fps=8.0, taps=3)
    lams = bank_wavelengths(20, 2)
    bank = GaborBank(1, (20, 20), 2, lams, heads=heads)
    assert bank.out_channels == 4 * 3
    layer = CausalQuadrature(bank, taps=3, learn=False)
    assert not list(layer.parameters(recurse=False))
    torch.manual_seed(0)
    x = torch.rand(2, 6, 1, 20, 20)
    got = layer(x).unflatten(0, (2, 6)).numpy()
    kernels = [gabor_kernel(float(lam), 90.0 * o) for o in range(2) for lam in lams]
    z = np.array([[[signal.convolve2d(x[b, t, 0].numpy().astype(np.float64), k, mode="same")
                    for k in kernels] for t in range(6)] for b in range(2)])
    for t in range(6):
        for p in range(4):
            np.testing.assert_allclose(got[:, t, 3 * p], np.sqrt(np.abs(z[:, t, p]) ** 2 + 1e-8),
                                       atol=5e-5)
            for m in range(2):
                y = sum(heads[m, lag] * z[:, t - lag, p] for lag in range(3) if t - lag >= 0)
                np.testing.assert_allclose(got[:, t, 3 * p + 1 + m],
                                           np.sqrt(np.abs(y) ** 2 + 1e-8), atol=5e-5)


def test_pixel_chunks_do_not_change_the_energies(monkeypatch):
    import niflow.model.video as video

    bank = GaborBank(1, (16, 16), 2, bank_wavelengths(16, 2),
                     heads=motion_filters([2.0], 8.0, 4))
    layer = CausalQuadrature(bank, taps=4, learn=False)
    torch.manual_seed(0)
    x = torch.rand(1, 9, 1, 16, 16)
    whole = layer(x)
    monkeypatch.setattr(video, "QUADRATURE_CHUNK_BYTES", 1)  # one row of pixels at a time
    assert torch.allclose(layer(x), whole, atol=1e-6)


@pytest.mark.parametrize("direction", [1.0, -1.0])
def test_a_drifting_grating_drives_the_head_that_turns_with_it(direction):
    """A grating drifting across a pair's stripes (wavelength λ, v px per frame) turns the
    pair's response by e^{iωv} per frame back in time (ω = 2π/λ), so head h gives the static
    energy times |Σ_l h[l] e^{iωvl}| (closed form); at 2 Hz and 8 fps, v = λ/4."""
    lam, fps = 8.0, 8.0
    v = direction * lam * 2.0 / fps
    heads = motion_filters([2.0], fps=fps, taps=4)
    bank = GaborBank(1, (48, 48), 4, np.array([lam]), heads=heads)  # pair 0: horizontal
    layer = CausalQuadrature(bank, taps=4, learn=False)
    rows = torch.arange(48, dtype=torch.float32)[:, None].expand(48, 48)
    t = torch.arange(8, dtype=torch.float32)[:, None, None]
    movie = torch.cos(2 * math.pi * (rows - v * t) / lam)[None, :, None]
    e = layer(movie).unflatten(0, (1, 8))[0, 7, :3, 20:28, 20:28]  # pair 0: static, +f, −f
    turn = np.exp(1j * 2 * math.pi / lam * v * np.arange(4))
    for m in range(2):
        want = abs((heads[m] * turn).sum())
        assert torch.allclose(e[1 + m] / e[0], torch.full_like(e[0], want), rtol=0.03)
    # the two heads prefer opposite directions, 3:1 in energy with 4 taps
    preferred, other = (1, 2) if direction < 0 else (2, 1)
    assert (e[preferred] > 2.5 * e[other]).all()
    # a still grating drives no head
    still = layer(movie[:, :1].expand(1, 8, 1, 48, 48)).unflatten(0, (1, 8))[0, 7, 1:3]
    assert still[:, 20:28, 20:28].max() < 1e-3


def test_a_single_image_is_a_movie_of_one_frame():
    heads = motion_filters([2.0], 8.0, 4)
    bank = GaborBank(1, (16, 16), 2, bank_wavelengths(16, 2), heads=heads)
    layer = CausalQuadrature(bank, taps=4, learn=False)
    torch.manual_seed(0)
    x = torch.rand(3, 1, 16, 16)
    # float32 energies of order 1, summed in another order (the root amplifies near zero)
    assert torch.allclose(bank(x), layer(x[:, None]), atol=1e-4)


def test_video_models_build_the_heads_a_frame_rate_allows():
    torch.manual_seed(0)
    cfg = _motion_config([2.0])
    model = VideoNIF(cfg, (1, 24, 24), {"V1": 3, "V2": 2}, fps=8.0)
    assert model.spatial.geometry("V1").channels == 32 * 3
    assert model.spatial.graph.areas["V2"].conv.in_channels == 96
    assert model.needs_clips and model.temporal["V1"].weight.shape[0] == 96
    feats = model.features(torch.rand(1, 10, 1, 24, 24))
    assert feats["V1"].shape == (1, 10, 96, 12, 12)
    # 2 fps with 0.5-s filters has one frame per filter: no heads, the plain model
    slow = VideoNIF(cfg, (1, 24, 24), {"V1": 3, "V2": 2}, fps=2.0)
    assert slow.spatial.geometry("V1").channels == 32 and not slow.needs_clips
    # static images ignore motion_hz
    assert NIFModel(cfg, (1, 24, 24), {"V1": 3}).geometry("V1").channels == 32


def test_motion_heads_are_causal_and_load_from_a_state_dict():
    torch.manual_seed(0)
    for space_time in ("factorised", "full"):
        cfg = _motion_config([2.0], space_time)
        model = VideoNIF(cfg, (1, 20, 20), {"V1": 3, "V2": 2}, fps=8.0).eval()
        x = torch.rand(1, 12, 1, 20, 20)
        y = model.drive(x)
        x2 = x.clone()
        x2[:, 8:] = torch.rand(1, 4, 1, 20, 20)
        y2 = model.drive(x2)
        for a in y:
            assert torch.allclose(y[a][:, :8], y2[a][:, :8], atol=1e-5)
            assert not torch.allclose(y[a][:, 8:], y2[a][:, 8:])
        other = VideoNIF(cfg, (1, 20, 20), {"V1": 3, "V2": 2}, fps=8.0).eval()
        other.load_state_dict(model.state_dict())
        assert all(torch.allclose(other.drive(x)[a], y[a]) for a in y)


def test_calibration_over_clips_gives_every_channel_unit_mean_energy():
    torch.manual_seed(0)
    model = VideoNIF(_motion_config([2.0]), (1, 20, 20), {"V1": 3, "V2": 2}, fps=8.0)
    clips = torch.rand(5, 16, 1, 20, 20)
    moving = model._moving_banks()
    assert list(moving) == ["V1"]
    with torch.no_grad():
        model._calibrate_over_time(moving, clips)
        e = moving["V1"](model.spatial.standardize(clips)).unflatten(0, (5, 16))[:, 3:]
    gain = model.spatial.graph.areas["V1"].gain
    mean = (e * gain[:, None, None]).mean((0, 1, 3, 4))
    assert torch.allclose(mean, torch.ones_like(mean), atol=1e-4)
    # without clips the start refuses, naming the area
    with pytest.raises(ValueError, match="V1"):
        model.initialize_readouts(torch.rand(4, 1, 20, 20), {"V1": torch.rand(4, 3)},
                                  lambda: ({}, {}, {}))


def test_calibration_clips_are_consecutive_frames_within_one_run():
    class Files:
        timing = MovieTiming(fps=4.0, tr=1.0, frame_run=np.repeat([0, 1], 40),
                             volume_run=np.repeat([0, 1], 10))
        frame_shape = (1, 2, 2)

        def frames(self, idx):
            idx = np.asarray(idx)
            assert (np.diff(idx) > 0).all()
            return np.broadcast_to(idx[:, None, None, None], (len(idx), 1, 2, 2)).astype(
                np.float32)

    clips = calibration_clips(Files(), np.arange(20), seconds=2.0, n_clips=4)
    assert clips.shape == (4, 8, 1, 2, 2)
    first = clips[:, :, 0, 0, 0]
    np.testing.assert_array_equal(np.diff(first, axis=1), 1.0)
    run_of = (first // 40).astype(int)
    assert (run_of == run_of[:, :1]).all()
    for c in first:  # each clip ends at the last frame before one of the volumes
        v = int(c[-1]) // 40 * 10 + (int(c[-1]) % 40 + 1) // 4
        assert Files.timing.frames_before(np.array([v]), 8)[0].tolist() == c.tolist()


def test_motion_hz_is_validated():
    cfg = _motion_config([2.0])
    cfg.areas[0].motion_hz = [-1.0]
    with pytest.raises(cfgmod.ConfigError, match="motion_hz"):
        cfg.validate()
    cfg = _motion_config([])
    cfg.areas[1].motion_hz = [2.0]  # a learned area
    with pytest.raises(cfgmod.ConfigError, match=r"areas\[1\] \('V2'\)\.motion_hz"):
        cfg.validate()

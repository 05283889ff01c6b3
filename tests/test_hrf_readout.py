"""The haemodynamic factor of the observation model, against the simulator's own numpy HRF,
a naive convolution, and a recovery of known latencies."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from niflow.data.simulate import movie as sim_movie
from niflow.model.hrf import HRFReadout


def _readout(peaks: np.ndarray, fps: float = 8.0, span_s: float = 32.0) -> HRFReadout:
    m = HRFReadout(len(peaks), fps, span_s).double()
    m.initialize(torch.as_tensor(peaks))
    return m


def test_kernel_is_the_double_gamma_of_the_simulator():
    peaks = np.array([4.0, 5.0, 6.5])
    m = _readout(peaks)
    lags = np.arange(1, m.n_lags + 1) / m.fps
    for v, p in enumerate(peaks):
        want = sim_movie.double_gamma_hrf(lags, p)
        assert np.allclose(m.kernel()[v].detach().numpy(), want, atol=1e-10)
    peak, width = m.peak_and_width(dt=0.001)
    for v, p in enumerate(peaks):
        ref_peak, ref_width = sim_movie.hrf_shape(p)
        assert peak[v] == pytest.approx(ref_peak, abs=2e-3)
        assert width[v] == pytest.approx(ref_width, abs=2e-3)


def test_forward_is_the_causal_sum_over_preceding_frames():
    rng = np.random.default_rng(0)
    m = _readout(np.array([4.5, 6.0]), fps=4.0)
    drive = torch.as_tensor(rng.normal(size=(2, 90, 2)))
    last = torch.tensor([0, 3, 17, 60, 89])
    got = m(drive, last).detach().numpy()
    k = m.kernel().detach().numpy()
    for b in range(2):
        for j, f in enumerate(last.tolist()):
            for v in range(2):
                want = sum(k[v, lag] * drive[b, f - lag, v].item()
                           for lag in range(min(m.n_lags, f + 1))) / m.fps
                assert got[b, j, v] == pytest.approx(want, abs=1e-12)
    later = drive.clone()
    later[:, 18:] = 100.0  # frames after volume 2's last frame cannot change it
    assert np.allclose(m(later, last)[:, :3].detach().numpy(), got[:, :3])


def test_the_drive_before_a_run_is_the_baseline():
    rng = np.random.default_rng(3)
    m = _readout(np.array([4.0, 6.5]), fps=4.0)
    with torch.no_grad():
        m.baseline.copy_(torch.tensor([0.7, -1.3], dtype=torch.float64))
    drive = torch.as_tensor(rng.normal(size=(1, 50, 2)))
    last = torch.tensor([0, 5, 30, 49])
    got = m(drive, last).detach().numpy()
    k = m.kernel().detach().numpy()
    base = m.baseline.detach().numpy()
    for j, f in enumerate(last.tolist()):
        for v in range(2):
            # frames f - lag < 0 were not shown: the voxel's drive there is its baseline
            want = sum(k[v, lag] * (drive[0, f - lag, v].item() if f - lag >= 0 else base[v])
                       for lag in range(m.n_lags)) / m.fps
            assert got[0, j, v] == pytest.approx(want, abs=1e-12)
    steady = m(torch.as_tensor(base)[None, None].repeat(1, 50, 1), last)[0].detach().numpy()
    area = k.sum(1) / m.fps  # a run that shows the baseline has no onset ramp
    assert np.allclose(steady, base * area, atol=1e-12)


def test_weights_saved_without_a_baseline_load_as_zero_baseline():
    m = _readout(np.array([5.0, 6.0]))
    old = {k: v for k, v in m.state_dict().items() if k != "baseline"}
    fresh = HRFReadout(2, 8.0).double()
    with torch.no_grad():
        fresh.baseline.fill_(3.0)
    fresh.load_state_dict(old)
    assert torch.equal(fresh.baseline, torch.zeros(2, dtype=torch.float64))


def test_matches_the_simulated_bold_of_a_run():
    # the simulator's volume j reflects frames with onset before j·tr; at 8 fps and TR 1 s
    # the last of them is frame 8j − 1
    fps, tr, n_frames, n_vol = 8.0, 1.0, 320, 40
    rng = np.random.default_rng(1)
    neural = rng.normal(size=(n_frames, 3))
    peaks = np.array([4.0, 5.5, 7.0])
    m = _readout(peaks, fps, span_s=n_frames / fps)  # every lag of the run, as simulated
    last = torch.arange(n_vol) * int(tr * fps) - 1
    ok = last >= 0
    got = m(torch.as_tensor(neural)[None], last.clamp(min=0))[0].detach().numpy()
    ref = sim_movie._run_bold(neural, peaks, fps, tr, n_vol)
    assert np.allclose(got[ok.numpy()], ref[ok.numpy()], atol=1e-9)


def test_latencies_are_recovered_from_noisy_bold():
    rng = np.random.default_rng(2)
    fps, n_frames, v = 2.0, 800, 24
    peaks = rng.uniform(4.0, 7.0, v)
    drive = rng.normal(size=(n_frames, v))
    drive = np.apply_along_axis(lambda s: np.convolve(s, np.ones(2) / 2, "same"), 0, drive)
    truth = _readout(peaks, fps)
    last = torch.arange(int(fps), n_frames, int(fps))  # TR 1 s
    x = torch.as_tensor(drive)[None]
    clean = truth(x, last).detach()
    y = clean + 0.5 * clean.std() * torch.randn(clean.shape, generator=torch.Generator()
                                                .manual_seed(0), dtype=clean.dtype)
    fit = _readout(np.full(v, 5.0), fps)
    opt = torch.optim.Adam(fit.parameters(), lr=0.05)
    for _ in range(200):
        opt.zero_grad()
        loss = ((fit(x, last) - y) ** 2).mean()
        loss.backward()
        opt.step()
    got, _ = fit.peak_and_width()
    want, _ = truth.peak_and_width()
    assert np.median(np.abs(got - want)) < 0.2
    assert stats.spearmanr(got, want)[0] > 0.9


def test_shape_check_names_the_shapes():
    m = HRFReadout(5, 8.0)
    with pytest.raises(ValueError, match=r"drive must have shape \(B, T, 5\), got \(2, 10, 4\)"):
        m(torch.zeros(2, 10, 4), torch.tensor([3]))

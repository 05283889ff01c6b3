"""The movie model: causal (2+1)D areas, static images as its special case, segments of runs,
and training on a simulated movie."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _configs import default_config
from niflow import config as cfgmod
from niflow.data.movie import MovieTiming, read_movie
from niflow.data.simulate.movie import simulate_movie, write_movie_simulation
from niflow.model.areas import DivisiveNorm
from niflow.model.video import CausalConv3d, CausalQuadrature, CausalTemporal, VideoNIF
from niflow.train.video import (
    fit_movie,
    hrf_weighted_features,
    hrf_window_frames,
    make_segments,
    predict_video,
)


def _config() -> cfgmod.RunConfig:
    cfg = cfgmod.candidate(default_config(3), "gabor-gaussian")
    cfg.train.val_fraction = 0.34
    return cfg


def test_temporal_filter_is_causal_and_starts_as_the_identity():
    f = CausalTemporal(3, 4).double()
    x = torch.randn(2, 9, 3, 4, 5, dtype=torch.float64)
    assert torch.equal(f(x), x)
    with torch.no_grad():
        f.weight.copy_(torch.randn(3, 1, 4))
    y = f(x)
    w = f.weight[:, 0].detach()
    for t in range(9):
        want = sum(w[:, 3 - lag][None, :, None, None] * x[:, t - lag]
                   for lag in range(4) if t - lag >= 0)
        assert torch.allclose(y[:, t], want)
    later = x.clone()
    later[:, 6:] = 7.0
    assert torch.allclose(f(later)[:, :6], y[:, :6])


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return VideoNIF(_config(), (1, 24, 24), {"V1": 7, "V2": 5}, fps=4.0).double().eval()


def test_a_still_frame_drives_voxels_as_the_static_model_does(model):
    frame = torch.rand(1, 1, 24, 24, dtype=torch.float64)
    drive = model.drive(frame[:, None].expand(1, 6, 1, 24, 24))
    static = model.spatial(frame)
    for a in ("V1", "V2"):
        assert torch.allclose(drive[a][0], static[a].expand(6, -1), atol=1e-10)


def test_predictions_depend_only_on_earlier_frames(model):
    frames = torch.rand(1, 40, 1, 24, 24, dtype=torch.float64)
    last = torch.tensor([3, 10, 25])
    with torch.no_grad():
        base = model(frames, last)
        changed = frames.clone()
        changed[:, 11:] = torch.rand(1, 29, 1, 24, 24, dtype=torch.float64)
        again = model(changed, last)
    for a in base:
        assert torch.allclose(base[a][:, :2], again[a][:, :2])
        assert not torch.allclose(base[a][:, 2], again[a][:, 2])


def test_wrong_frames_are_named_with_their_shape(model):
    with pytest.raises(ValueError,
                       match=r"frames of shape \(B, T, 1, 24, 24\), got \(1, 5, 24, 24\)"):
        model(torch.zeros(1, 5, 24, 24, dtype=torch.float64), torch.tensor([2]))


def _timing() -> MovieTiming:
    return MovieTiming(4.0, 1.0, np.repeat([1, 2, 3], [40, 24, 32]),
                       np.repeat([1, 2, 3], [10, 6, 8]))


def test_segments_cover_the_volumes_within_runs():
    t = _timing()
    vols = np.arange(t.n_volumes)
    segs = make_segments(t, vols, history=6, seconds=4.0)
    covered = np.concatenate([s.volumes for s in segs])
    firsts = [t.volume_span(r)[0] for r in t.runs]  # a run's first volume reflects no frame
    assert sorted(covered.tolist()) == [v for v in vols.tolist() if v not in firsts]
    last = t.frames_before(vols, 1)[:, 0]
    for s in segs:
        runs = set(t.frame_run[s.frame_start:s.frame_stop])
        assert len(runs) == 1 and runs == set(t.volume_run[s.volumes])
        assert np.array_equal(s.frame_start + s.last, last[s.volumes])
        f0, _ = t.frame_span(int(t.volume_run[s.volumes[0]]))
        assert s.frame_start == max(f0, int(last[s.volumes].min()) - 5)


@pytest.fixture(scope="module")
def movie(tmp_path_factory):
    sim = simulate_movie(n_train_runs=3, run_seconds=60.0, fps=4.0, tr=1.0, size=24,
                         n_voxels={"V1": 40, "V2": 20}, seed=1)
    paths = write_movie_simulation(sim, tmp_path_factory.mktemp("movie"))
    return sim, read_movie(paths["stim"], paths["bold"])


def test_hrf_window_frames_average_the_frames_four_to_six_seconds_back(movie):
    sim, files = movie
    vols = np.array([3, 10, 59, 70, 130])
    got = hrf_window_frames(files, vols)
    t = files.timing
    for k, v in enumerate(vols):
        run = t.volume_run[v]
        j = v - t.volume_span(int(run))[0]
        f0, f1 = t.frame_span(int(run))
        onsets = np.arange(f1 - f0) / t.fps
        sel = f0 + np.flatnonzero((onsets < j * t.tr - 4.0) & (onsets >= j * t.tr - 6.0))
        want = (sim.stim[sel].astype(np.float32) / 255).mean(0) if sel.size else 0 * got[k, 0]
        assert np.allclose(got[k, 0], want, atol=1e-6)


@pytest.mark.slow
def test_a_video_model_learns_a_simulated_movie(movie):
    sim, files = movie
    fit = fit_movie(files, [sim.test_run], _config())
    assert set(files.timing.volume_run[fit.test]) == {sim.test_run}
    assert not set(files.timing.volume_run[fit.val]) & set(files.timing.volume_run[fit.train])
    pred = fit.predict(files, fit.test)
    y = files.responses["V1"][fit.test]
    r = np.array([np.corrcoef(pred["V1"][:, v], y[:, v])[0, 1] for v in range(40)])
    assert np.median(r) > 0.1  # chance: about ±0.1 over 60 volumes
    peaks = fit.model.hrf_parameters()["V1"]["hrf_peak_s"]
    assert np.all((peaks > 2.0) & (peaks < 10.5))


def test_the_gabor_bank_gives_the_same_energies_in_chunks(monkeypatch):
    """A movie segment of hundreds of frames goes through the bank in chunks that bound its
    memory; the energies equal those of one pass."""
    import niflow.model.filters as filters

    bank = filters.GaborBank(1, (24, 24), 4, np.array([4.0, 8.0]))
    x = torch.rand(37, 1, 24, 24)
    whole = bank(x)
    monkeypatch.setattr(filters, "CHUNK_BYTES", 1)  # one image per chunk
    assert torch.equal(bank(x), whole)


def test_the_latency_search_recovers_the_latencies_that_made_the_responses(movie):
    """Responses made by the model itself with known per-voxel HRF peaks: after resetting
    every HRF to 5 s, the grid search finds each voxel's peak exactly."""
    from niflow.train.video import initialize_hrf_latencies, predict_video

    _, files = movie
    torch.manual_seed(0)
    model = VideoNIF(_config(), files.frame_shape,
                     {a: r.shape[1] for a, r in files.responses.items()}, files.timing.fps)
    rng = np.random.default_rng(0)
    grid = tuple(np.arange(3.5, 8.01, 0.5))
    truth = {a: rng.choice(grid, h.n_voxels) for a, h in model.hrf.items()}
    for a, h in model.hrf.items():
        h.initialize(torch.as_tensor(truth[a]))
    volumes = np.arange(files.timing.n_volumes)
    made = predict_video(model, files, volumes)
    for h in model.hrf.values():
        h.initialize(5.0)
    found = initialize_hrf_latencies(model, files, made, volumes, grid=grid)
    for a in truth:
        assert np.array_equal(found[a], truth[a]), (found[a], truth[a])


def test_full_space_time_kernels_are_a_causal_sum_of_2d_convolutions():
    """CausalConv3d equals the naive Σ_l conv2d(x[t − l], W_l) with zeros before frame 0."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(2, 3, 3, padding=2, dilation=2)
    layer = CausalConv3d(conv, taps=3)
    with torch.no_grad():
        layer.past.normal_()
    x = torch.randn(2, 5, 2, 9, 9)
    got = layer(x).unflatten(0, (2, 5))
    weight = torch.cat([layer.past, conv.weight[:, :, None]], dim=2)  # lags 2, 1, 0
    for t in range(5):
        want = conv.bias[None, :, None, None].expand(2, 3, 9, 9).clone()
        for lag in range(3):
            if t - lag >= 0:
                want += F.conv2d(x[:, t - lag], weight[:, :, 2 - lag], padding=2, dilation=2)
        assert torch.allclose(got[:, t], want, atol=1e-5)


def _space_time_config(space_time: str, candidate: str | None = None) -> cfgmod.RunConfig:
    cfg = default_config(3)  # learned areas: full space-time kernels apply to them
    if candidate is not None:
        cfg = cfgmod.candidate(cfg, candidate)
    cfg.video.space_time = space_time
    return cfg


@pytest.mark.parametrize("candidate, kinds, std", [
    (None, {"V1": CausalConv3d, "V2": CausalConv3d}, 0.1),
    # a Gabor V1: its quadrature responses are filtered in time, then each channel as before
    ("gabor-gaussian", {"V1": CausalQuadrature, "V2": CausalConv3d}, 0.5),
])
def test_a_full_space_time_model_starts_as_the_factorised_one_and_stays_causal(
        candidate, kinds, std):
    torch.manual_seed(0)
    factorised = VideoNIF(_space_time_config("factorised", candidate), (1, 16, 16),
                          {"V1": 7, "V2": 5}, 4.0)
    torch.manual_seed(0)
    full = VideoNIF(_space_time_config("full", candidate), (1, 16, 16), {"V1": 7, "V2": 5}, 4.0)
    assert {a: type(m) for a, m in full.space_time_conv.items()} == kinds
    banks = {a for a, kind in kinds.items() if kind is CausalQuadrature}
    assert set(full.temporal) == banks
    assert full.history == factorised.history + sum(
        full.space_time_conv[a].taps - 1 for a in banks)
    x = torch.rand(1, 12, 1, 16, 16)
    a, b = factorised.drive(x), full.drive(x)
    for area in a:
        assert torch.allclose(a[area], b[area], atol=1e-5)
    with torch.no_grad():
        for m in full.space_time_conv.values():
            m.past.normal_(std=std)
    full.eval()  # in training, batch-norm statistics span the whole segment
    before = full.drive(x)
    y = x.clone()
    y[:, 6] = torch.rand(16, 16)
    after = full.drive(y)
    for area in before:
        assert torch.allclose(before[area][:, :6], after[area][:, :6], atol=1e-6)
        assert not torch.allclose(before[area][:, 6:], after[area][:, 6:])
    assert not torch.allclose(factorised.drive(y)["V1"], after["V1"])
    # the past kernels are trained, and the model rebuilds from its config and weights
    names = {g["name"]: g for g in full.parameter_groups(0.01)}
    assert any(p is full.space_time_conv["V1"].past for p in names["temporal"]["params"])
    again = VideoNIF(_space_time_config("full", candidate), (1, 16, 16), {"V1": 7, "V2": 5},
                     4.0)
    again.load_state_dict(full.state_dict())
    again.eval()
    assert torch.allclose(again.drive(y)["V1"], after["V1"])


def test_hrf_weighted_features_are_what_a_fresh_models_readout_predicts(movie):
    # at the start (temporal filters the identity) the model is linear in its features: its
    # volumes are the readout of the HRF-weighted features, the bias scaled by the HRF's
    # area, when the baseline is the mean frame's drive
    sim, files = movie
    torch.manual_seed(0)
    model = VideoNIF(_config(), files.frame_shape, {"V1": 40, "V2": 20}, files.timing.fps)
    model.spatial.set_input_stats(0.5, 0.2)
    model.eval()
    vols = files.timing.volumes_of([1, 2])
    used, feats, mean = hrf_weighted_features(model, files, vols, peaks=(4.5, 6.0),
                                              seconds=20.0)
    assert used.size == vols.size - 2  # each run's first volume: no frame before it
    for peak in (4.5, 6.0):
        for a, ro in model.spatial.readouts.items():
            with torch.no_grad():
                model.hrf[a].initialize(peak)
                model.hrf[a].baseline.copy_(ro(mean[a][None])[0])
                area = model.hrf[a].kernel().sum(1) / model.fps
                want = (ro(feats[peak][a]) - ro.bias + ro.bias * area).numpy()
            got = predict_video(model, files, used)[a]
            assert np.allclose(got, want, atol=1e-4 * np.abs(want).max())


def test_a_weak_divisive_normalisation_passes_its_mean_drive_unscaled():
    norm = DivisiveNorm(window=1)
    x = torch.full((1, 3, 4, 4), 2.0)
    norm.set_strength(100.0, 2.0)
    assert torch.allclose(norm(x), x, atol=1e-6)
    weaker = norm(2 * x) / (2 * x)  # twice the contrast: hardly normalised
    assert float(weaker.detach().mean()) == pytest.approx(102 / 104, rel=1e-5)
    norm.set_default()
    assert torch.allclose(norm(x), x / (np.log(2) + 2.0))
    legacy = DivisiveNorm()
    legacy.load_state_dict({"log_sigma": torch.tensor(0.3)})  # saved before the gain
    assert float(legacy.gain) == 1.0


@pytest.mark.parametrize("weighting", ["voxels", "equal"])
def test_a_segment_epochs_loss_is_the_weighted_mse_of_its_segments(movie, weighting):
    """``train.area_weighting`` reaches the video loss: at lr 0 (weights fixed) the epoch's
    loss equals a naive volume-weighted mean over segments of the per-area MSEs, averaged
    over every voxel ("voxels") or over the areas ("equal"; V1 has twice V2's voxels)."""
    from niflow.train.runtime import Runtime
    from niflow.train.segments import segment_frames
    from niflow.train.video import SegmentTask, build_video, movie_data

    sim, files = movie
    cfg = _config()
    data = movie_data(files, [sim.test_run], cfg)
    model = build_video(cfg, data)
    opt = torch.optim.Adam(model.parameters(), lr=0.0)
    task = SegmentTask(model, files, data.responses, data.split.train, data.split.val, opt, 0,
                       20.0, Runtime(), weighting)
    got = task.train_epoch(1)
    num = den = 0.0
    with torch.no_grad():
        for seg in task.segs:
            pred = model(segment_frames(files, seg, "cpu"), torch.as_tensor(seg.last))
            mse = {a: ((p[0].numpy() - data.responses[a][seg.volumes]) ** 2).mean(0)
                   for a, p in pred.items()}
            if weighting == "voxels":
                loss = np.concatenate(list(mse.values())).mean()
            else:
                loss = np.mean([m.mean() for m in mse.values()])
            num, den = num + loss * len(seg.volumes), den + len(seg.volumes)
    assert got == pytest.approx(num / den, rel=1e-5)
    assert len(task.segs) > 3

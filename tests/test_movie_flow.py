"""Information flow of a video model (niflow.interpret.movie_flow) against naive references:
a source's input zeroed equals its weights cut, the mean features equal those of whole runs
computed at once, and measuring changes nothing."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from niflow import config as cfgmod
from niflow.config import STIMULUS
from niflow.data.movie import read_movie
from niflow.data.simulate.movie import simulate_movie, write_movie_simulation
from niflow.evaluate.statistics import pearson_r
from niflow.interpret.movie_flow import movie_feature_statistics, movie_information_flow
from niflow.model.video import VideoNIF
from niflow.train.segments import predict_video

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(scope="module")
def three_areas(tmp_path_factory):
    sim = simulate_movie(n_train_runs=2, run_seconds=20.0, fps=4.0, tr=1.0, size=16,
                         n_voxels={"V1": 6, "V2": 4}, seed=3)
    paths = write_movie_simulation(sim, tmp_path_factory.mktemp("flow") / "data")
    files = read_movie(paths["stim"], paths["bold"])
    torch.manual_seed(0)
    video = VideoNIF(cfgmod.load(CONFIGS / "three-areas.json"), files.frame_shape,
                     {"V1": 6, "V2": 4, "V3": 5}, files.timing.fps)
    video.eval()
    t = files.timing
    test = np.flatnonzero(t.volume_run == t.runs[-1])
    train = np.flatnonzero(t.volume_run != t.runs[-1])
    clean = predict_video(video, files, test)
    rng = np.random.default_rng(0)
    true = {a: p + rng.standard_normal(p.shape) * p.std() for a, p in clean.items()}
    return video, files, test, train, true


def _cut_v1_into_v3(video: VideoNIF) -> VideoNIF:
    cut = copy.deepcopy(video)
    n_v2 = cut.spatial.graph.geometries["V2"].channels  # V3 reads V2's channels, then V1's
    with torch.no_grad():
        cut.spatial.graph.areas["V3"].conv.weight[:, n_v2:] = 0
    return cut


def test_zeroing_a_source_equals_cutting_its_weights(three_areas):
    video, files, test, train, true = three_areas
    before = copy.deepcopy(video.state_dict())
    flow = movie_information_flow(video, files, test, true, train)
    assert [(f.target, f.source) for f in flow] == [("V1", STIMULUS), ("V2", "V1"),
                                                    ("V3", "V2"), ("V3", "V1")]
    # measuring is read-only
    assert all(torch.equal(before[k], v) for k, v in video.state_dict().items())
    want = pearson_r(predict_video(_cut_v1_into_v3(video), files, test)["V3"], true["V3"])
    got = {(f.target, f.source): f for f in flow}
    assert np.allclose(got[("V3", "V1")].r_zero, want, atol=1e-6)
    full = pearson_r(predict_video(video, files, test)["V3"], true["V3"])
    assert np.allclose(got[("V3", "V1")].r_full, full, atol=1e-6)
    assert not np.allclose(got[("V3", "V1")].r_zero, full, atol=1e-3)  # V1 mattered
    # the mean replacement is the mean features as the target reads them
    means, _ = movie_feature_statistics(video, files, train)
    direct = predict_video(video, files, test, replace={
        ("V3", "V1"): lambda x: means["V1"].expand_as(x)})["V3"]
    assert np.allclose(got[("V3", "V1")].r_mean, pearson_r(direct, true["V3"]), atol=1e-6)
    shares = got[("V3", "V2")].weight_share + got[("V3", "V1")].weight_share
    assert shares == pytest.approx(1.0)


def test_mean_features_are_those_of_whole_runs(three_areas):
    video, files, test, train, _ = three_areas
    means, std = movie_feature_statistics(video, files, train)
    t = files.timing
    # naively: each training run's frames up to the last one before its last volume, all
    # at once through the model (causal: later frames change nothing before them)
    per_source: dict[str, list[torch.Tensor]] = {}
    for run in t.runs[:-1]:
        f0, _ = t.frame_span(run)
        vols = np.flatnonzero(t.volume_run == run)
        stop = int(t.frames_before(vols[-1:], 1)[0, 0]) + 1
        frames = torch.as_tensor(files.frames(np.arange(f0, stop)))[None]
        with torch.no_grad():
            feats = video.features(frames)
            feats[STIMULUS] = video.spatial.standardize(frames.flatten(0, 1))[None]
        for k, f in feats.items():
            per_source.setdefault(k, []).append(f[0].double())
    for k, parts in per_source.items():
        x = torch.cat(parts)
        assert torch.allclose(means[k].double(), x.mean(0), atol=1e-5), k
        spread = ((x - x.mean(0)) ** 2).mean((0, 2, 3)).sqrt().numpy()
        assert np.allclose(std[k], spread, rtol=1e-4, atol=1e-6), k


def test_an_ensemble_is_ablated_member_by_member(three_areas):
    video, files, test, train, true = three_areas
    torch.manual_seed(1)
    other = VideoNIF(cfgmod.load(CONFIGS / "three-areas.json"), files.frame_shape,
                     {"V1": 6, "V2": 4, "V3": 5}, files.timing.fps).eval()
    flow = {(f.target, f.source): f
            for f in movie_information_flow([video, other], files, test, true, train)}
    mean = (predict_video(video, files, test)["V3"] + predict_video(other, files, test)["V3"]) / 2
    assert np.allclose(flow[("V3", "V1")].r_full, pearson_r(mean, true["V3"]), atol=1e-6)
    cut = (predict_video(_cut_v1_into_v3(video), files, test)["V3"]
           + predict_video(_cut_v1_into_v3(other), files, test)["V3"]) / 2
    assert np.allclose(flow[("V3", "V1")].r_zero, pearson_r(cut, true["V3"]), atol=1e-6)
    alone = {(f.target, f.source): f
             for f in movie_information_flow(other, files, test, true, train)}
    share = (flow[("V3", "V1")].weight_share * 2 - alone[("V3", "V1")].weight_share)
    single = {(f.target, f.source): f
              for f in movie_information_flow(video, files, test, true, train)}
    assert share == pytest.approx(single[("V3", "V1")].weight_share)


def test_a_full_space_time_area_weighs_its_past_kernels_too(three_areas):
    _, files, test, train, true = three_areas
    cfg = cfgmod.load(CONFIGS / "three-areas.json")
    cfg.video.space_time = "full"
    torch.manual_seed(2)
    video = VideoNIF(cfg, files.frame_shape, {"V1": 6, "V2": 4, "V3": 5}, files.timing.fps)
    layer = video.space_time_conv["V3"]
    with torch.no_grad():
        layer.past.normal_()  # a model that learned to look back
    flow = {(f.target, f.source): f
            for f in movie_information_flow(video.eval(), files, test, true, train)}
    n_v2 = video.spatial.graph.geometries["V2"].channels
    kernel = torch.cat([layer.past, layer.conv.weight[:, :, None]], 2).detach()
    naive = {"V2": float(kernel[:, :n_v2].pow(2).sum().sqrt()),
             "V1": float(kernel[:, n_v2:].pow(2).sum().sqrt())}
    for source, norm in naive.items():
        assert flow[("V3", source)].weight_norm == pytest.approx(norm, rel=1e-5)
    assert flow[("V3", "V1")].weight_norm > float(kernel[:, n_v2:, -1].pow(2).sum().sqrt())

"""Response areas the configuration lacks (V3, hV4, LO, ...) are added to the model at the
door of a training run (niflow.runs.inputs.config_for_areas): checked against a
hand-written layout, kept by the selection's candidates, and trained through a movie run
with simulated V3 voxels."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from _configs import movie_config
from niflow import config as cfgmod
from niflow.config import STIMULUS, ConfigError, check_areas_kept
from niflow.data.errors import DataError
from niflow.data.movie import read_movie
from niflow.data.simulate.movie import simulate_movie, write_movie_simulation
from niflow.evaluate.statistics import read_table
from niflow.runs.inputs import AddedAreasWarning, check_arrays, config_for_areas
from niflow.runs.movie import train_movie
from niflow.runs.run import load_run


def _layout(cfg: cfgmod.RunConfig) -> list[tuple[str, list[str], int]]:
    return [(a.name, a.sources, a.pool) for a in cfg.areas]


def test_missing_areas_are_added_in_hierarchy_order():
    cfg = cfgmod.preset("default")
    names = ["V1", "FFA", "LO", "V2", "hV4", "V3", "PPA"]
    got, note = config_for_areas(cfg, names, (1, 56, 56), "bold.h5")
    # 56 px: V1 28 × 28 cells, V2 14 × 14, V3 7 × 7 (pooled: V2 has 12 or more), then none;
    # LO reads hV4 (one level deeper); FFA and PPA (not in the table) both read LO
    assert _layout(got) == [
        ("V1", [STIMULUS], 2), ("V2", ["V1"], 2), ("V3", ["V2"], 2), ("hV4", ["V3"], 1),
        ("LO", ["hV4"], 1), ("FFA", ["LO"], 1), ("PPA", ["LO"], 1)]
    added = got.areas[2]
    assert (added.channels, added.kernel, added.nonlinearity, added.norm) == (
        16, 3, "relu", "batch")
    assert note.startswith("bold.h5: areas FFA, LO, hV4, V3, PPA are not in the model config")
    assert "V3 reads V2 (pooled by 2); hV4 reads V3;" in note
    assert _layout(cfg) == [("V1", [STIMULUS], 2), ("V2", ["V1"], 2)]  # not changed in place
    # 24-px frames: V2's grid is 6 × 6, so V3 keeps it
    small, _ = config_for_areas(cfg, ["V1", "V2", "V3"], (1, 24, 24))
    assert _layout(small)[2] == ("V3", ["V2"], 1)


def test_nothing_missing_or_unusable_names_change_nothing():
    cfg = cfgmod.preset("default")
    assert config_for_areas(cfg, ["V1", "V2"], (1, 24, 24)) == (cfg, None)
    same, note = config_for_areas(cfg, ["V1", "lh.V1", STIMULUS], (1, 24, 24))
    assert same is cfg and note is None
    # a lower-case v1 is V1 misnamed, not an area to add after V2
    same, note = config_for_areas(cfg, ["v1", "V2"], (1, 24, 24))
    assert same is cfg and note is None
    rng = np.random.default_rng(0)
    with pytest.raises(DataError, match=r"bold.h5: area variable\(s\) \['v1'\] differ from "
                                        r"the model's \['V1'\] only in case"):
        check_arrays(rng.random((20, 24, 24)), {"v1": rng.random((20, 4))}, cfg,
                     np.arange(15, 20), sources={"bold": "bold.h5"})
    with pytest.raises(DataError, match=r"bold.h5: area variable\(s\) \['lh.V1'\] cannot "):
        check_arrays(rng.random((20, 24, 24)), {"V1": rng.random((20, 4)),
                                                "lh.V1": rng.random((20, 4))},
                     cfg, np.arange(15, 20), sources={"bold": "bold.h5"})


def test_candidates_take_their_v1_and_v2_and_keep_added_areas():
    cfg, _ = config_for_areas(cfgmod.preset("default"), ["V1", "V2", "V3"], (1, 56, 56))
    check_areas_kept(cfg)  # the preset's V1 and V2 are as the preset has them
    gabor = cfgmod.candidate(cfg, "gabor-gaussian")
    family = cfgmod.FAMILY["gabor-gaussian"][0]()
    assert gabor.areas[:2] == family and gabor.areas[2] == cfg.areas[2]
    # a V1 of one's own under V3 is a layout of one's own: kept whole (the readout changes)
    cfg.areas[0].channels = 8
    check_areas_kept(cfg)
    own = cfgmod.candidate(cfg, "gabor-gaussian")
    assert own.areas == cfg.areas and own.readout.kind == "gaussian"
    other = cfgmod.from_dict({"areas": [{"name": "V1"}, {"name": "V3", "sources": ["V1"]}]})
    assert cfgmod.candidate(other, "gabor-gaussian").areas == other.areas
    # but V1 and V2 alone, changed, would be replaced: refused, naming V1
    two = cfgmod.preset("default")
    two.areas[0].channels = 8
    with pytest.raises(ConfigError, match=r"config.areas: V1 set differently .* candidate's "
                                          r"own V1 and V2,"):
        check_areas_kept(two)


def test_image_inputs_carry_the_added_area():
    rng = np.random.default_rng(1)
    responses = {a: rng.random((30, 5)) for a in ("V1", "V2", "V3")}
    with pytest.warns(AddedAreasWarning, match="area V3 is not in the model config"):
        inputs = check_arrays(rng.random((30, 56, 56)), responses, cfgmod.preset("default"),
                              np.arange(24, 30))
    assert inputs.config.area_names() == ["V1", "V2", "V3"]
    assert inputs.areas_note is not None and inputs.areas_note.startswith("responses: area V3")


@pytest.fixture(scope="module")
def v3_movie(tmp_path_factory):
    """A simulated movie with V3 voxels (conjunctions of V2's features under pRFs 3.5 times
    V1's), which the default configuration lacks."""
    root = tmp_path_factory.mktemp("v3")
    sim = simulate_movie(n_train_runs=3, run_seconds=60.0, fps=4.0, tr=1.0, size=20,
                         n_voxels={"V1": 30, "V2": 24, "V3": 12}, ceiling_range=(0.6, 0.8),
                         seed=4)
    paths = write_movie_simulation(sim, root / "data")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = train_movie(paths["stim"], paths["bold"], root / "run", movie_config(3),
                          [sim.test_run], progress=False)
    return paths, run, root / "run", caught


def test_a_movie_run_trains_and_writes_an_added_area(v3_movie):
    paths, _, out, caught = v3_movie
    said = [str(w.message) for w in caught if issubclass(w.category, AddedAreasWarning)]
    assert len(said) == 1 and "area V3 is not in the model config (V1, V2)" in said[0]
    saved = cfgmod.from_dict(json.loads((out / "config.json").read_text()))
    assert _layout(saved)[2] == ("V3", ["V2"], 1)  # 20 px: V2's grid is 5 × 5
    table = read_table(out / "voxels.csv")
    r = table["r_test"][table["area"] == "V3"].astype(float)
    assert r.size == 12
    # predicted above chance (60 autocorrelated volumes: about ±0.2; ceilings 0.6-0.8)
    assert np.median(r) > 0.25
    ceiling = table["noise_ceiling"][table["area"] == "V3"].astype(float)
    assert np.all(np.isfinite(ceiling))
    # the folder reloads with V3 and predicts what training stored
    loaded = load_run(out)
    pred = np.load(out / "predictions.npz")
    got = loaded.predict_volumes(read_movie(paths["stim"], paths["bold"]), pred["test_rows"])
    assert np.allclose(got["V3"], pred["V3"], rtol=1e-4, atol=1e-4)

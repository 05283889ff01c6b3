"""Configuration: presets, JSON round trips, merging over presets, validation errors."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from niflow import config as cfgmod
from niflow.config import AreaConfig, ConfigError, RunConfig, from_dict, preset
from niflow.model import NIFModel
from niflow.runs.inputs import check_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name", ["default", "basicnif"])
def test_presets_validate(name):
    cfg = preset(name)
    assert isinstance(cfg, RunConfig)
    assert cfg.validate() is cfg
    assert cfg.preset == name
    assert cfg.area_names() == ["V1", "V2"]


def test_unknown_preset():
    with pytest.raises(ConfigError, match="nope"):
        preset("nope")
    with pytest.raises(ConfigError, match="nope"):
        from_dict({"preset": "nope"})


def test_basicnif_matches_reference():
    cfg = preset("basicnif")
    assert [a.name for a in cfg.areas] == ["V1", "V2"]
    assert cfg.areas[0].sources == ["stimulus"]
    assert cfg.areas[1].sources == ["V1"]
    for a in cfg.areas:
        assert a.kernel == 3
        assert a.channels == 6
        assert a.out_channels == 6
        assert a.nonlinearity == "sigmoid"
        assert a.norm == "none"
        assert a.mix_channels == 0
        assert a.pool == 2
        assert a.pool_type == "avg"
    assert cfg.readout.rank == 2
    assert cfg.train.lr == 0.01
    assert cfg.train.batch_size == 3
    assert cfg.train.epochs == 15


def test_presets_are_fresh_objects():
    a = preset("default")
    a.train.epochs = 1
    a.areas[0].sources.append("V9")
    a.areas.pop()
    b = preset("default")
    assert b.train.epochs == 25
    assert b.areas[0].sources == ["stimulus"]
    assert len(b.areas) == 2


@pytest.mark.parametrize("name", ["default", "basicnif"])
def test_dict_and_json_round_trip(name, tmp_path):
    cfg = preset(name)
    assert from_dict(cfg.to_dict()) == cfg
    assert from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    path = tmp_path / "sub" / "config.json"
    cfgmod.save(cfg, path)
    assert json.loads(path.read_text()) == cfg.to_dict()
    assert cfgmod.load(path) == cfg
    assert [p.name for p in path.parent.iterdir()] == ["config.json"]  # no temp files


def test_round_trip_of_a_modified_config():
    cfg = preset("default")
    cfg.train.epochs = 4
    cfg.readout.rank = 3
    cfg.areas.append(AreaConfig("V3", ["V2", "V1"], channels=4, kernel=5, padding=1,
                                pool=1, pool_type="max"))
    cfg.validate()
    back = from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg
    assert back.areas[2].padding == 1
    assert back.area("V3").sources == ["V2", "V1"]


def test_area_lookup():
    cfg = preset("default")
    assert cfg.area("V2").name == "V2"
    with pytest.raises(ConfigError, match="V7"):
        cfg.area("V7")


def test_partial_config_merges_over_default():
    cfg = from_dict({"train": {"epochs": 3}})
    expected = preset("default")
    expected.train.epochs = 3
    assert cfg == expected


def test_partial_config_merges_over_named_preset():
    cfg = from_dict({"preset": "basicnif", "readout": {"rank": 3}, "data": {"stim_variable": "x"}})
    expected = preset("basicnif")
    expected.readout.rank = 3
    expected.data.stim_variable = "x"
    assert cfg == expected


def test_areas_replace_the_preset_list():
    cfg = from_dict({"areas": [{"name": "LO", "kernel": 5}]})
    assert cfg.area_names() == ["LO"]
    assert cfg.areas[0] == AreaConfig("LO", kernel=5)  # other keys take AreaConfig defaults
    assert cfg.train == preset("default").train


def test_from_dict_does_not_modify_its_input():
    data = {"train": {"epochs": 3}, "areas": [{"name": "V1"}]}
    before = copy.deepcopy(data)
    from_dict(data)
    assert data == before


def _area(**kw):
    return {"name": "V1", **kw}


BAD = [
    ({"colour": "red"}, "colour"),
    ({"areas": [_area(colour=3)]}, "colour"),
    ({"train": {"epochz": 3}}, "epochz"),
    ({"readout": {"rnak": 2}}, "rnak"),
    ({"data": {"stim_var": "x"}}, "stim_var"),
    ({"readout": {"rank": "2"}}, "rank"),
    ({"train": {"epochs": 2.5}}, "epochs"),
    ({"areas": [_area(channels=True)]}, "channels"),
    ({"areas": [_area(kernel="3")]}, "kernel"),
    ({"train": {"lr": "fast"}}, "lr"),
    ({"train": {"batch_size": True}}, "batch_size"),
    ({"readout": {"rank": 0}}, "rank"),
    ({"train": {"lr": -0.01}}, "lr"),
    ({"train": {"lr": 0}}, "lr"),
    ({"train": {"batch_size": 0}}, "batch_size"),
    ({"train": {"epochs": 0}}, "epochs"),
    ({"train": {"val_fraction": 0.7}}, "val_fraction"),
    ({"train": {"val_fraction": -0.1}}, "val_fraction"),
    ({"train": {"area_weighting": "random"}}, "area_weighting"),
    ({"areas": [_area(nonlinearity="wiggle")]}, "nonlinearity"),
    ({"areas": [_area(norm="layer")]}, "norm"),
    ({"areas": [_area(pool_type="median")]}, "pool_type"),
    ({"areas": [_area(pool=0)]}, "pool"),
    ({"areas": [_area(channels=0)]}, "channels"),
    ({"areas": [_area(padding=-1)]}, "padding"),
    ({"areas": [_area(sources=["V2"]), {"name": "V2"}]}, "sources"),  # a later area
    ({"areas": [_area(sources=["V1"])]}, "sources"),  # itself
    ({"areas": [_area(sources=[])]}, "sources"),
    ({"areas": [_area(sources="stimulus")]}, "sources"),
    ({"areas": [_area(sources=[["stimulus"]])]}, "sources"),
    ({"areas": [_area(), _area()]}, "name"),  # duplicate
    ({"areas": [_area(name="stimulus")]}, "name"),
    ({"areas": [_area(name="V 1")]}, "name"),
    ({"areas": [{"kernel": 3}]}, "name"),  # missing
    ({"areas": []}, "areas"),
    ({"areas": {"name": "V1"}}, "areas"),
    ({"train": 3}, "train"),
    ({"readout": {"init": "zeros"}}, "init"),
    ({"data": {"stim_scale": "max"}}, "stim_scale"),
    ({"data": {"input_norm": "whiten"}}, "input_norm"),
    ({"data": {"stim_variable": 3}}, "stim_variable"),
]


@pytest.mark.parametrize(("data", "key"), BAD, ids=[f"{i}-{k}" for i, (_, k) in enumerate(BAD)])
def test_invalid_config(data, key):
    with pytest.raises(ConfigError) as info:
        from_dict(data)
    msg = str(info.value)
    assert key in msg, msg
    assert "\n" not in msg


def test_config_must_be_a_mapping():
    with pytest.raises(ConfigError):
        from_dict([1, 2])  # type: ignore[arg-type]


def test_load_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.json"
    with pytest.raises(ConfigError, match="missing.json"):
        cfgmod.load(missing)
    broken = tmp_path / "broken.json"
    broken.write_text('{"train": {"epochs": 3,}}')
    with pytest.raises(ConfigError, match="broken.json"):
        cfgmod.load(broken)
    listy = tmp_path / "list.json"
    listy.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="list.json"):
        cfgmod.load(listy)
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"train": {"epochs": 3, "momentum": 0.9}}))
    with pytest.raises(ConfigError) as info:
        cfgmod.load(unknown)
    assert "unknown.json" in str(info.value) and "momentum" in str(info.value)


# --------------------------------------------------------------------------- geometry


def _chain(n_areas: int, **area_kw) -> RunConfig:
    areas = [{"name": f"V{i + 1}", "sources": ["stimulus" if i == 0 else f"V{i}"],
              "kernel": 3, **area_kw} for i in range(n_areas)]
    return from_dict({"preset": "basicnif", "areas": areas})


def test_kernel_larger_than_grid():
    cfg = from_dict({"areas": [{"name": "V1", "kernel": 57, "padding": 0}]})
    with pytest.raises(ConfigError, match="kernel 57"):
        NIFModel(cfg, (1, 56, 56), {"V1": 5})
    ok = from_dict({"areas": [{"name": "V1", "kernel": 56, "padding": 0, "pool": 1}]})
    assert NIFModel(ok, (1, 56, 56), {"V1": 5}).geometry("V1").grid == (1, 1)


def test_kernel_larger_than_a_deeper_grid():
    # V1 pools 56 -> 7; V2's 9x9 kernel without padding does not fit a 7x7 grid
    cfg = from_dict({"areas": [{"name": "V1", "pool": 8},
                               {"name": "V2", "sources": ["V1"], "kernel": 9, "padding": 0}]})
    with pytest.raises(ConfigError, match="V2"):
        NIFModel(cfg, (1, 56, 56), {"V1": 5})


def test_pooling_shrinks_grid_to_zero():
    # 3x3 'same' convolutions keep the grid; pooling by 2: 56 28 14 7 3 1 -> 0 at area 6
    grids = [NIFModel(_chain(5), (1, 56, 56), {"V1": 5}).geometry(f"V{i}").grid[0]
             for i in range(1, 6)]
    assert grids == [28, 14, 7, 3, 1]
    with pytest.raises(ConfigError, match="V6"):
        NIFModel(_chain(6), (1, 56, 56), {"V1": 5})


# --------------------------------------------------------------------------- configs/


def _config_files() -> list[Path]:
    return sorted(CONFIGS.glob("*.json")) if CONFIGS.is_dir() else []


def _restates_preset(data: dict) -> bool:
    """True when every value the file sets equals the value of the preset it names."""
    base = preset(data.get("preset", "default")).to_dict()
    for key, value in data.items():
        if key == "preset":
            continue
        if key == "areas":
            try:
                areas = from_dict({"preset": base["preset"], "areas": value}).to_dict()["areas"]
            except ConfigError:
                return False
            if areas != base["areas"]:
                return False
        elif any(base[key].get(k) != v for k, v in value.items()):
            return False
    return True


@pytest.mark.skipif(not _config_files(), reason=f"no JSON config files in {CONFIGS} yet")
@pytest.mark.parametrize("path", _config_files() or [None],
                         ids=[p.name for p in _config_files()] or ["none"])
def test_shipped_config_files(path):
    data = json.loads(path.read_text())
    cfg = cfgmod.load(path)
    name = data.get("preset", "default")
    if path.stem in cfgmod.PRESETS:  # a file named after a preset must be that preset
        assert name == path.stem
        assert cfg == preset(name)
    if _restates_preset(data):
        assert cfg == preset(name)
    else:  # every value it sets is in the loaded config; the rest is the preset's
        got = cfg.to_dict()
        base = preset(name).to_dict()
        for section in ("readout", "train", "data"):
            assert got[section] == {**base[section], **data.get(section, {})}
        if "areas" in data:
            assert len(got["areas"]) == len(data["areas"])
            for area_got, area_set in zip(got["areas"], data["areas"], strict=True):
                assert area_got == {**area_got, **area_set}
        else:
            assert got["areas"] == base["areas"]
    # and the model it describes can be built on BRAINS-sized stimuli
    NIFModel(cfg, (1, 56, 56), {cfg.areas[0].name: 3})


def test_the_video_section_is_checked_and_optional():
    """``video`` configures movie models; configs without it (every run folder written
    before it existed) take the preset's values."""
    old = preset("default").to_dict()
    del old["video"]
    assert from_dict(old).video.space_time == "factorised"
    full = from_dict({"video": {"space_time": "full", "taps_s": 1.0}})
    assert (full.video.space_time, full.video.taps_s, full.video.segment_s) == ("full", 1.0, 60.0)
    for bad, match in (({"space_time": "3d"}, "space_time"), ({"taps_s": 0}, "taps_s"),
                       ({"segment_s": float("inf")}, "segment_s"), ({"frames": 3}, "frames")):
        with pytest.raises(ConfigError, match=match):
            from_dict({"video": bad})


def test_area_settings_that_selection_would_replace_are_refused():
    # the candidates bring their own V1 and V2: a user's V2 change would be dropped silently
    data = preset("default").to_dict()
    data["areas"][1]["channels"] = 8
    cfg = from_dict(data)  # a model can still be built from it as given
    assert NIFModel(cfg, (1, 24, 24), {"V2": 3}).graph.areas["V2"].conv.out_channels == 8
    with pytest.raises(ConfigError, match=r"V2 set differently.*\"candidates\": \[\]"):
        check_config(cfg, (1, 24, 24), "my.json")
    data["select"]["candidates"] = []
    check_config(from_dict(data), (1, 24, 24))
    # the preset's own areas written out in full, and areas of another layout, are kept
    check_config(from_dict(preset("default").to_dict()), (1, 24, 24))
    three = from_dict({"areas": [{"name": "V1"}, {"name": "V2", "sources": ["V1"]},
                                 {"name": "V3", "sources": ["V2"]}]})
    assert three.select.candidates == preset("default").select.candidates
    check_config(three, (1, 24, 24))

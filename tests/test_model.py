"""Area graph: shapes, grid-to-stimulus geometry against brute-force receptive fields."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from niflow import config as cfgmod
from niflow.config import AreaConfig, RunConfig
from niflow.model import NIFModel


def _support_centre(model: NIFModel, area: str, i: int, j: int) -> tuple[float, float]:
    """Centre of the stimulus pixels that can influence grid cell (i, j): brute force.

    (Gradients find the whole support only through average pooling, not max pooling.)"""
    x = torch.rand(1, *model.image_shape, dtype=torch.float64, requires_grad=True)
    feats = model.double().features(x)
    (g,) = torch.autograd.grad(feats[area][0, :, i, j].sum(), x)
    ys, xs = np.nonzero(g[0].abs().sum(0).numpy() > 0)
    return (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2


CASES = {
    "basicnif": cfgmod.preset("basicnif").areas,
    "default": cfgmod.preset("default").areas,
    "valid-conv-pool3": [
        AreaConfig("V1", kernel=5, padding=0, channels=3, pool=3, nonlinearity="tanh"),
        AreaConfig("V2", ["V1"], kernel=3, padding=0, channels=3, pool=2,
                   nonlinearity="relu"),
    ],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_geometry_maps_grid_cells_to_their_stimulus_receptive_field(case):
    torch.manual_seed(0)
    cfg = RunConfig(areas=CASES[case]).validate()
    model = NIFModel(cfg, (1, 56, 56), {})
    model.eval()
    for area in ("V1", "V2"):
        geo = model.geometry(area)
        h, w = geo.grid
        for i, j in [(h // 2, w // 2), (h // 2 - 1, w // 2 + 1)]:
            cy, cx = _support_centre(model, area, i, j)
            assert geo.to_stimulus(i) == pytest.approx(cy)
            assert geo.to_stimulus(j) == pytest.approx(cx)


def test_basicnif_shapes_match_the_reference():
    model = NIFModel(cfgmod.preset("basicnif"), (1, 56, 56), {"V1": 7, "V2": 5})
    feats = model.features(torch.rand(3, 1, 56, 56))
    assert feats["V1"].shape == (3, 6, 28, 28)
    assert feats["V2"].shape == (3, 6, 14, 14)
    out = model(torch.rand(3, 1, 56, 56))
    assert out["V1"].shape == (3, 7) and out["V2"].shape == (3, 5)
    conv = sum(p.numel() for p in model.graph.parameters())
    assert conv == 6 * 1 * 9 + 6 + 6 * 6 * 9 + 6  # 390, as in the reference


def test_several_sources_are_resampled_to_the_first_and_concatenated():
    areas = cfgmod.preset("basicnif").areas + [
        AreaConfig("V3", ["V2", "V1"], channels=4, kernel=3, pool=1)]
    model = NIFModel(RunConfig(areas=areas).validate(), (1, 56, 56), {"V3": 6})
    assert model.graph.areas["V3"].conv.in_channels == 12
    assert model.geometry("V3").grid == (14, 14)
    assert model(torch.rand(2, 1, 56, 56))["V3"].shape == (2, 6)


def test_hidden_area_without_voxels_is_computed_not_read_out():
    model = NIFModel(cfgmod.preset("basicnif"), (1, 56, 56), {"V2": 4})
    assert model.areas_with_voxels == ["V2"]
    assert set(model(torch.rand(2, 1, 56, 56))) == {"V2"}


def test_unknown_area_and_wrong_stimulus_shape_are_clear_errors():
    with pytest.raises(ValueError, match="V7"):
        NIFModel(cfgmod.preset("basicnif"), (1, 56, 56), {"V7": 3})
    model = NIFModel(cfgmod.preset("basicnif"), (1, 56, 56), {"V1": 3})
    with pytest.raises(ValueError, match=r"\(B, 1, 56, 56\).*\(2, 1, 40, 40\)"):
        model(torch.rand(2, 1, 40, 40))

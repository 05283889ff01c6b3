"""Area graph: shapes, grid-to-stimulus geometry against brute-force receptive fields."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from niflow import config as cfgmod
from niflow.config import AreaConfig, RunConfig
from niflow.model import GaussianReadout, NIFModel
from niflow.model.gaussian import search_prfs_features


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
@pytest.mark.parametrize("size", [60, 90])  # with data.input_max_px 30: pooled by 2, by 3
@pytest.mark.parametrize("max_px", [0, 30])
def test_geometry_maps_grid_cells_to_their_stimulus_receptive_field(case, max_px, size):
    torch.manual_seed(0)
    cfg = RunConfig(areas=CASES[case]).validate()
    cfg.data.input_max_px = max_px
    model = NIFModel(cfg, (1, size, size), {})
    assert model.input_pool == (size // 30 if max_px else 1)
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


def test_prf_search_places_a_downstream_voxel_between_its_areas_cells():
    """A V2 voxel driven by V1 features pooled at a V1 cell that lies between V2's cells is
    found there, in V2's grid coordinates through both geometries (closed form), not at the
    nearest V2 cell as a search on V1 averaged onto V2's grid would place it."""
    cfg = cfgmod.candidate(cfgmod.preset("default"), "gabor-gaussian")
    model = NIFModel(cfg, (1, 24, 24), {"V2": 3})
    v1, v2 = model.geometry("V1"), model.geometry("V2")
    assert (v1.grid, v2.grid) == ((12, 12), (6, 6))  # V2's cells are two V1 cells wide
    gen = torch.Generator().manual_seed(0)
    n = 400
    f1 = torch.rand(n, model.graph.geometries["V1"].channels, 12, 12, generator=gen)
    f2 = torch.rand(n, model.graph.geometries["V2"].channels, 6, 6, generator=gen)
    cells = torch.tensor([[5.0, 8.0], [2.0, 9.0], [7.0, 3.0]])  # V1 cells (row, column)
    ro = GaussianReadout(3, f1.shape[1], (12, 12))
    weight = torch.zeros(f1.shape[1], 3)
    weight[[4, 11, 20], [0, 1, 2]] = 1.0
    ro.initialize(centre=cells, sigma=torch.full((3,), 0.7), weight=weight)
    with torch.no_grad():
        y = ro(f1)
    centre, sigma, _ = model.searched_prfs("V2", {"V1": f1, "V2": f2}, y)
    pixels = v1.scale * cells + v1.offset
    want = (pixels - v2.offset) / v2.scale  # e.g. V1 cell 5 -> pixel 10.5 -> V2 cell 2.25
    assert torch.all((want - want.round()).abs() == 0.25)
    torch.testing.assert_close(centre, want)
    torch.testing.assert_close(sigma, torch.full((3,), 0.7 * v1.scale / v2.scale))


def test_prf_search_averages_a_source_whose_candidates_are_no_closer():
    """On 56-px images V1's search steps over every other of its 2-px cells, as far apart as
    V2's 4-px cells: V2's voxels are then searched on V1 averaged onto V2's grid (reference:
    that search done by hand) and, where V2's own features explain less, placed there."""
    cfg = cfgmod.candidate(cfgmod.preset("default"), "gabor-gaussian")
    model = NIFModel(cfg, (1, 56, 56), {"V2": 4})
    v1, v2 = model.geometry("V1"), model.geometry("V2")
    assert (v1.grid, v2.grid) == ((28, 28), (14, 14))
    gen = torch.Generator().manual_seed(1)
    f1 = torch.rand(300, model.graph.geometries["V1"].channels, 28, 28, generator=gen)
    f2 = torch.rand(300, model.graph.geometries["V2"].channels, 14, 14, generator=gen)
    y = torch.randn(300, 4, generator=gen) + f1[:, 3, 10:14, 15:19].mean((1, 2))[:, None]
    centre, _, explained = model.searched_prfs("V2", {"V1": f1, "V2": f2}, y)
    pooled = search_prfs_features(torch.nn.functional.adaptive_avg_pool2d(f1, (14, 14)), y)
    own = search_prfs_features(f2, y)
    pick = (pooled[2] >= own[2])[:, None]
    torch.testing.assert_close(centre, torch.where(pick, pooled[0], own[0]).clamp(-0.5, 13.5))
    torch.testing.assert_close(explained, torch.maximum(pooled[2], own[2]))
    assert torch.all(pick)  # V2's own random features lose to V1's signal

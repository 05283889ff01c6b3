"""Receptive-field estimates from readout maps against maps with known centres and sizes."""

from __future__ import annotations

import numpy as np
import pytest

from niflow.interpret.receptive_fields import count_lobes, prf_from_maps


def gaussian_maps(centres, sigmas, grid=(28, 28), floor=0.0):
    h, w = grid
    yy, xx = np.mgrid[0:h, 0:w]
    maps = []
    for (cx, cy), s in zip(centres, sigmas, strict=True):
        g = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s ** 2))
        maps.append(g / g.sum() + floor)
    return np.array(maps)


def test_centres_and_sizes_of_gaussian_maps_are_recovered():
    rng = np.random.default_rng(0)
    centres = rng.uniform(6, 22, size=(40, 2))
    sigmas = rng.uniform(1.2, 3.5, size=40)
    est = prf_from_maps(gaussian_maps(centres, sigmas))
    np.testing.assert_allclose(est["prf_x"], centres[:, 0], atol=0.1)
    np.testing.assert_allclose(est["prf_y"], centres[:, 1], atol=0.1)
    np.testing.assert_allclose(est["prf_sigma"], sigmas, rtol=0.12)


def test_uniform_floor_does_not_pull_centres_to_the_grid_centre():
    # a softmax map never reaches zero: a floor over the whole grid biases a plain centre of
    # mass toward the middle, the estimator must not be
    centres = np.array([[4.0, 5.0], [23.0, 21.0]])
    maps = gaussian_maps(centres, [1.5, 1.5], floor=2e-3)
    est = prf_from_maps(maps)
    np.testing.assert_allclose(np.c_[est["prf_x"], est["prf_y"]], centres, atol=0.15)
    yy, xx = np.mgrid[0:28, 0:28]
    naive_x = (maps * xx).sum((1, 2)) / maps.sum((1, 2))
    assert abs(naive_x[0] - 4.0) > 1.0  # the naive estimate is visibly biased here


def test_grid_to_stimulus_coordinates():
    maps = gaussian_maps([[10.0, 7.0]], [2.0])
    est = prf_from_maps(maps, scale=2.0, offset=0.5)
    assert est["prf_x"][0] == pytest.approx(20.5, abs=0.2)
    assert est["prf_y"][0] == pytest.approx(14.5, abs=0.2)
    assert est["prf_sigma"][0] == pytest.approx(4.0, rel=0.12)


def test_rows_are_y_and_columns_are_x():
    m = np.zeros((1, 10, 20))
    m[0, 2, 15] = 1.0
    est = prf_from_maps(m)
    assert (est["prf_x"][0], est["prf_y"][0]) == (15.0, 2.0)


def test_a_distant_second_lobe_does_not_pull_the_centre():
    # the centre is that of the lobe holding the peak; a separate weaker lobe (60% of the
    # peak) elsewhere is left out, and counted by the multi-lobe flag instead
    maps = gaussian_maps([[6.0, 6.0]], [1.5]) + 0.6 * gaussian_maps([[21.0, 20.0]], [1.5])
    est = prf_from_maps(maps)
    assert est["prf_x"][0] == pytest.approx(6.0, abs=0.1)
    assert est["prf_y"][0] == pytest.approx(6.0, abs=0.1)
    assert count_lobes(maps)[0] == 2

"""pRF parameters (degrees, polar angle, lobes), size comparisons, the bar-sweep pRF fit and the
tuning measures, against synthetic maps with known parameters and the simulator's cortex."""

from __future__ import annotations

import math

import numpy as np
import pytest

from niflow.data.simulate import SimConfig, simulate_responses
from niflow.evaluate.baselines import gabor_energy_maps
from niflow.interpret.probes import (
    ProbeSettings,
    analyse_probe,
    bar_apertures,
    fit_gaussian_prf,
    grating,
    orientation_tuning,
    probe_stimuli,
    spatial_frequency_tuning,
)
from niflow.interpret.receptive_fields import (
    compare_sizes,
    count_lobes,
    prf_parameters,
    visual_field_coordinates,
)


def gaussian(grid, cx, cy, s):
    h, w = grid
    yy, xx = np.mgrid[0:h, 0:w]
    return np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s ** 2))


def test_polar_angle_convention_and_eccentricity():
    # 56 x 56 image: centre at (27.5, 27.5); rows grow downward, angles are counted with y up
    x = np.array([37.5, 27.5, 17.5, 27.5, 37.5])
    y = np.array([27.5, 17.5, 27.5, 37.5, 17.5])
    c = visual_field_coordinates(x, y, (56, 56))
    np.testing.assert_allclose(c["polar_angle"], [0, 90, 180, 270, 45], atol=1e-9)
    np.testing.assert_allclose(c["eccentricity"], [10, 10, 10, 10, math.sqrt(200)])


def test_degrees_follow_the_width_of_the_visual_field():
    # 56 px wide image spanning 14°: 0.25° per pixel
    c = visual_field_coordinates(np.array([47.5]), np.array([7.5]), (56, 56),
                                 visual_field_deg=14.0)
    assert c["x_deg"][0] == pytest.approx(5.0)
    assert c["y_deg"][0] == pytest.approx(5.0)  # above the centre: positive
    assert c["eccentricity_deg"][0] == pytest.approx(math.hypot(5, 5))
    # a non-square image: degrees per pixel from the width
    c = visual_field_coordinates(np.array([39.5]), np.array([19.5]), (40, 80), 20.0)
    assert c["x_deg"][0] == pytest.approx(0.0)
    assert c["y_deg"][0] == pytest.approx(0.0)


def test_prf_parameters_of_known_maps_in_stimulus_degrees():
    # grid maps at scale 2 / offset 0.5 (a V1-like grid of a 56 px image), 10° field
    centres = [(6.0, 20.0, 1.5), (20.0, 6.0, 2.0), (14.0, 14.0, 1.6)]
    maps = np.array([gaussian((28, 28), cx, cy, s) for cx, cy, s in centres])
    p = prf_parameters(maps, 2.0, 0.5, (56, 56), visual_field_deg=10.0)
    x_px = np.array([2 * cx + 0.5 for cx, _, _ in centres])
    y_px = np.array([2 * cy + 0.5 for _, cy, _ in centres])
    np.testing.assert_allclose(p["prf_x"], x_px, atol=0.1)
    np.testing.assert_allclose(p["prf_y"], y_px, atol=0.1)
    np.testing.assert_allclose(p["prf_sigma"], [2 * s for _, _, s in centres], rtol=0.12)
    dx, dy = x_px - 27.5, 27.5 - y_px
    np.testing.assert_allclose(p["eccentricity"], np.hypot(dx, dy), atol=0.15)
    np.testing.assert_allclose(p["eccentricity_deg"], np.hypot(dx, dy) * 10 / 56, atol=0.03)
    np.testing.assert_allclose(p["sigma_deg"], p["prf_sigma"] * 10 / 56)
    expected_angle = np.degrees(np.arctan2(dy, dx)) % 360
    np.testing.assert_allclose(p["polar_angle"], expected_angle, atol=1.0)
    assert not p["multipole"].any()
    # without the field size there are no degree entries
    assert "eccentricity_deg" not in prf_parameters(maps, 2.0, 0.5, (56, 56))


def test_multipole_flag_counts_separated_lobes_with_substantial_mass():
    grid = (28, 28)
    one = gaussian(grid, 10, 10, 1.5)
    two = gaussian(grid, 6, 6, 1.5) + gaussian(grid, 20, 20, 1.5)
    satellite = gaussian(grid, 6, 6, 1.5) + 0.3 * gaussian(grid, 20, 20, 0.6)  # ~5% mass
    touching = gaussian(grid, 10, 10, 2.0) + gaussian(grid, 13, 10, 2.0)  # one blob
    # a rank-2 readout map whose components look at different places
    uy1, ux1 = gaussian((28, 1), 0, 5, 1.2)[:, 0], gaussian((1, 28), 5, 0, 1.2)[0]
    uy2, ux2 = gaussian((28, 1), 0, 21, 1.2)[:, 0], gaussian((1, 28), 18, 0, 1.2)[0]
    rank2 = 0.6 * np.outer(uy1, ux1) + 0.4 * np.outer(uy2, ux2)
    floor = 1e-3 + two  # a softmax floor must not merge or split lobes
    maps = np.array([one, two, satellite, touching, rank2, floor])
    np.testing.assert_array_equal(count_lobes(maps), [1, 2, 1, 1, 2, 2])
    p = prf_parameters(maps, 1.0, 0.0, grid)
    np.testing.assert_array_equal(p["multipole"], [False, True, False, False, True, True])


def test_compare_sizes_finds_the_larger_area_at_matched_eccentricity():
    rng = np.random.default_rng(0)
    ea, eb = rng.uniform(0, 20, 400), rng.uniform(0, 20, 300)
    sa = 1.5 + 0.08 * ea + 0.1 * rng.standard_normal(400)
    sb = 2 * (1.5 + 0.08 * eb) + 0.1 * rng.standard_normal(300)
    c = compare_sizes(ea, sa, eb, sb, n_bins=5)
    assert c["b_larger_everywhere"] and c["frac_bins_b_larger"] == 1.0
    np.testing.assert_allclose(c["line_a"], (1.5, 0.08), atol=0.03)
    np.testing.assert_allclose(c["line_b"], (3.0, 0.16), atol=0.04)
    # an area that is larger on average only because it sits further out is not larger
    # at matched eccentricity
    eb2 = rng.uniform(10, 20, 300)
    c = compare_sizes(ea, sa, eb2, 1.5 + 0.08 * eb2 - 0.05, n_bins=4)
    assert np.median(1.5 + 0.08 * eb2) > np.median(sa)
    assert c["frac_bins_b_larger"] == 0.0 and not c["b_larger_everywhere"]


def test_bar_apertures_sweep_every_orientation_across_the_image():
    ap, ori, pos = bar_apertures((40, 40), n_orientations=4, step=2.0, width=4.0)
    assert set(ori) == {0.0, 45.0, 90.0, 135.0}
    assert ap.min() >= 0 and ap.max() <= 1
    # every pixel is covered by some bar of every orientation
    for o in set(ori):
        assert (ap[ori == o].max(0) > 0.99).all()
    # a horizontal bar (0°) at position +10 lies 10 px above the centre (y up)
    k = np.flatnonzero((ori == 0) & np.isclose(pos, pos[np.argmin(np.abs(pos - 10))]))[0]
    rows = ap[k].mean(1)
    assert abs(np.sum(rows * np.arange(40)) / rows.sum() - (19.5 - pos[k])) < 0.05


def test_gaussian_prf_fit_recovers_known_linear_prfs():
    # responses generated by the model the fit assumes (Gaussian × aperture, summed,
    # affine), computed here pixel by pixel as an independent reference
    h = w = 40
    ap, _, _ = bar_apertures((h, w), 4, 2.0, 4.0)
    truth = [(12.3, 25.6, 1.8), (30.2, 9.7, 3.1), (20.0, 20.0, 5.5), (5.4, 33.2, 2.4)]
    yy, xx = np.mgrid[0:h, 0:w]
    resp = np.empty((len(ap), len(truth)))
    for v, (x, y, s) in enumerate(truth):
        g = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * s * s))
        resp[:, v] = [3.0 * float((a * g).sum()) - 1.0 for a in ap]
    fit = fit_gaussian_prf(ap, resp)
    np.testing.assert_allclose(fit["prf_x"], [t[0] for t in truth], atol=0.15)
    np.testing.assert_allclose(fit["prf_y"], [t[1] for t in truth], atol=0.15)
    np.testing.assert_allclose(fit["prf_sigma"], [t[2] for t in truth], rtol=0.06)
    assert (fit["fit_r"] > 0.999).all()


def test_grating_and_gabor_orientation_conventions_agree():
    g0 = grating((32, 32), 0.0, 8.0)
    assert np.allclose(g0, g0[:, :1])  # 0°: horizontal stripes, constant along each row
    g90 = grating((32, 32), 90.0, 8.0)
    assert np.allclose(g90, g90[:1, :])  # 90°: vertical stripes
    g45 = grating((32, 32), 45.0, 8.0)
    # 45° (counter-clockwise, y up): constant along the "/" diagonal (x+1, row-1)
    assert np.allclose(g45[1:, :-1], g45[:-1, 1:])
    # a Gabor-energy bank tuned to 45° responds most to the 45° grating
    oris = np.arange(0, 180, 22.5)
    img = np.array([grating((48, 48), o, 8.0) for o in oris])
    e = gabor_energy_maps(img, n_orientations=8, wavelengths=(8.0,))[:, :, 24, 24]
    np.testing.assert_array_equal(np.argmax(e, axis=0), np.arange(8))


def test_orientation_and_frequency_tuning_of_known_curves():
    oris = np.arange(0, 180, 15.0)
    pref = np.array([30.0, 100.0, 172.0])
    kappa = np.array([2.0, 4.0, 8.0])
    d = np.radians(2 * (oris[:, None] - pref[None, :]))
    curves = np.exp(kappa * (np.cos(d) - 1))  # von Mises on the doubled angle
    t = orientation_tuning(2 * curves + 5, oris)
    np.testing.assert_allclose(t["preferred_orientation"], pref, atol=1.5)
    # half-width at half-height of a von Mises in doubled angle: acos(1 + ln(0.5)/κ)/2,
    # measured on (curve - its minimum)
    lo = np.exp(-2 * kappa)
    half = np.degrees(np.arccos(1 + np.log((1 + lo) / 2) / kappa)) / 2
    np.testing.assert_allclose(t["orientation_bandwidth"], half, atol=2.5)
    assert np.all(np.diff(t["orientation_selectivity"]) > 0)  # sharper → more selective
    lam = np.geomspace(3, 20, 9)
    peak = np.array([5.0, 9.0, 12.0])
    resp = np.exp(-np.log(lam[:, None] / peak[None, :]) ** 2 / (2 * 0.4 ** 2))
    f = spatial_frequency_tuning(resp, lam)
    np.testing.assert_allclose(f["preferred_wavelength"], peak, rtol=0.03)
    np.testing.assert_allclose(f["preferred_sf"], 1 / f["preferred_wavelength"])


@pytest.fixture(scope="module")
def simulator_probe():
    """The probe's stimuli shown to the simulator's ground-truth cortex (noise-free)."""
    settings = ProbeSettings(grating_orientations=8, grating_phases=4)
    st = probe_stimuli((56, 56), settings)
    cfg = SimConfig()
    sim = simulate_responses(st.images.astype(np.float32), n_voxels={"V1": 60, "V2": 40},
                             seed=11, config=cfg)
    return st, sim, cfg


def test_probe_analysis_recovers_the_simulated_cortex(simulator_probe):
    st, sim, cfg = simulator_probe
    res = {a: analyse_probe(st, sim.signal[a], visual_field_deg=8.0) for a in sim.areas}
    for area in sim.areas:
        t = sim.truth[area]
        d = np.hypot(res[area]["prf_x"] - t["prf_x"], res[area]["prf_y"] - t["prf_y"])
        assert np.median(d) < 0.3, (area, np.median(d))
        # the bar-sweep size measures the whole voxel (pooling + feature extent): it grows
        # with the true pooling size
        assert np.corrcoef(res[area]["prf_sigma"], t["prf_sigma"])[0, 1] > 0.5
        np.testing.assert_allclose(res[area]["sigma_deg"], res[area]["prf_sigma"] * 8 / 56)
    # V1 voxels dominated by one orientation: the simulator's channel o has its Gabor
    # carrier varying along angle π·o/n measured from +x toward +row, so its stripes lie at
    # (90° − 180°·o/n) mod 180 in niflow's convention (counter-clockwise, y up)
    w = sim.truth["V1"]["feature_weights"].reshape(-1, cfg.n_orientations,
                                                   len(cfg.wavelengths))
    per_o = w.sum(2)
    dom = per_o.max(1) > 0.5
    truth_pref = (90.0 - 180.0 * per_o.argmax(1) / cfg.n_orientations) % 180
    err = np.abs((res["V1"]["preferred_orientation"] - truth_pref + 90) % 180 - 90)
    assert dom.sum() >= 8 and np.median(err[dom]) < 10
    # and those dominated by one wavelength prefer it
    per_l = w.sum(1)
    for k, lam in enumerate(cfg.wavelengths):
        sel = (per_l.max(1) > 0.7) & (per_l.argmax(1) == k)
        if sel.sum() >= 3:
            assert np.median(res["V1"]["preferred_wavelength"][sel]) == pytest.approx(
                lam, rel=0.2)


def test_fits_in_batches_of_voxels_equal_one_pass(monkeypatch):
    import niflow.interpret.probes as interp

    rng = np.random.default_rng(5)
    ap, _, _ = bar_apertures((24, 24), 2, 3.0, 3.0)
    resp = rng.normal(size=(len(ap), 7)) + ap.reshape(len(ap), -1)[:, [50, 100, 300, 400,
                                                                        10, 200, 500]]
    whole = fit_gaussian_prf(ap, resp)
    monkeypatch.setattr(interp, "MAX_FIT_VALUES", 2000)  # a few voxels per pass
    parts = fit_gaussian_prf(ap, resp)
    for k in whole:
        np.testing.assert_allclose(parts[k], whole[k], rtol=1e-12, atol=1e-12)

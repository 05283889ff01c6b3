"""In-silico probes: gratings and bar apertures through a fitted model, pRFs and tuning fitted to
its responses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from niflow.interpret.receptive_fields import degrees_per_pixel, visual_field_coordinates
from niflow.model.fitted import FittedModel

# bounds on the arrays of the in-silico analyses (values held at once, voxels per pass)
MAX_FIT_VALUES = 20_000_000


PROBE_VOXELS_PER_PASS = 2000


def grating(image_size: tuple[int, int], orientation_deg: float, wavelength: float,
            phase: float = 0.0) -> np.ndarray:
    """Full-field sinusoidal grating in [0, 1] with stripes at ``orientation_deg``.

    Returns
    -------
    ndarray of shape (height, width), float64
    """
    h, w = image_size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    t = math.radians(orientation_deg)
    # the luminance varies along the stripes' normal; with y up and rows down, stripes at
    # angle t have normal (−sin t, cos t) in (x, y-up), i.e. x·sin t + row·cos t up to sign
    u = (xx - (w - 1) / 2) * math.sin(t) + (yy - (h - 1) / 2) * math.cos(t)
    return 0.5 + 0.5 * np.cos(2 * np.pi * u / wavelength + phase)


def bar_apertures(image_size: tuple[int, int], n_orientations: int = 4, step: float = 2.0,
                  width: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bar apertures of a pRF mapping sweep: bars at several orientations across the field.

    Each bar is a band of ``width`` px (default a tenth of the image width, at least 3)
    whose long axis has the given orientation, stepped by ``step`` px along its normal until
    it has crossed the whole image. Edges are anti-aliased.

    Returns
    -------
    apertures : ndarray of shape (n_bars, height, width), float in [0, 1]
    orientation : ndarray of shape (n_bars,)
        Long-axis orientation, degrees (y up).
    position : ndarray of shape (n_bars,)
        Signed distance of the bar's axis from the image centre, px.
    """
    h, w = image_size
    width = max(3.0, w / 10) if width is None else float(width)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    dx, dy_up = xx - (w - 1) / 2, (h - 1) / 2 - yy
    reach = math.hypot(h, w) / 2 + width / 2
    positions = np.arange(-reach, reach + 1e-9, step)
    aps, oris, pos = [], [], []
    for k in range(n_orientations):
        t = math.radians(180.0 * k / n_orientations)
        dist = -dx * math.sin(t) + dy_up * math.cos(t)  # signed distance from the axis
        for p in positions:
            a = np.clip(width / 2 - np.abs(dist - p) + 0.5, 0.0, 1.0)
            if a.sum() < 0.5 * width:  # bar (almost) outside the image
                continue
            aps.append(a)
            oris.append(180.0 * k / n_orientations)
            pos.append(p)
    return np.array(aps), np.array(oris), np.array(pos)


def _carriers(image_size: tuple[int, int], wavelengths: tuple[float, ...]) -> np.ndarray:
    """Bar textures: gratings at 4 orientations × the wavelengths × 2 counter-phases, so
    that the average drive of a bar does not depend on a voxel's orientation preference."""
    out = [grating(image_size, o, lam, ph) for o in (0.0, 45.0, 90.0, 135.0)
           for lam in wavelengths for ph in (0.0, math.pi)]
    return np.array(out)


def _probe_input(run: FittedModel, images: np.ndarray) -> torch.Tensor:
    """Images in [0, 1] or uint8, (n, h, w) or (n, c, h, w) → the model's input tensor
    (n, c, h, w) in training units."""
    import torch

    images = np.asarray(images)
    c, h, w = (int(s) for s in run.model.image_shape)
    if images.ndim not in (3, 4) or tuple(images.shape[-2:]) != (h, w) or (
            images.ndim == 4 and images.shape[1] != c):
        raise ValueError(f"images of shape {tuple(images.shape)} do not match the model's: "
                         f"expected (n, {h}, {w}) or (n, {c}, {h}, {w})")
    x = images.astype(np.float32)
    if images.dtype.kind in "ui":
        x /= np.float32(np.iinfo(images.dtype).max)
    if run.config.data.stim_scale == "none":
        # the model saw raw values: bring [0, 1] back to the training data's range
        x = x * np.float32(run.stim_peak if run.stim_peak is not None else 255.0)
    if x.ndim == 3:
        x = np.repeat(x[:, None], c, axis=1)
    return torch.as_tensor(x)


def model_responses(run: FittedModel, images: np.ndarray, batch: int = 256,
                    ) -> dict[str, np.ndarray]:
    """The model's predicted responses (z units) to images in [0, 1] (or uint8).

    Parameters
    ----------
    run : niflow.FittedModel
        A fitted model (a :class:`niflow.Run` is one); its first (chosen) model answers.
    images : ndarray of shape (n, height, width) or (n, channels, height, width)
        Grey images, float in [0, 1] (0 = black background, 1 = white: the glyphs' polarity)
        or uint8 0-255; brought to the training data's units here. A colour model gets a
        grey (n, height, width) image on each of its channels (R = G = B).

    Returns
    -------
    dict of str to ndarray of shape (n, n_voxels)

    Raises
    ------
    ValueError
        If the images' shape does not fit the model.
    """
    from niflow.model.fitted import predict

    return predict(run.model, _probe_input(run, images), batch_size=batch)


def fit_gaussian_prf(apertures: np.ndarray, responses: np.ndarray,
                     sigmas: np.ndarray | None = None, step: float = 1.0,
                     ) -> dict[str, np.ndarray]:
    """Fit an isotropic 2-D Gaussian pRF to responses to stimulus apertures (grid search).

    The predicted response to aperture ``a`` is ``β · Σ_px A_a(px) · G(px) + b`` (linear
    spatial summation, as in standard pRF mapping); centres on a ``step``-px grid over the
    image and sizes in ``sigmas`` are searched for the highest correlation with positive
    gain, then the centre is refined to sub-pixel precision by a parabola through the
    correlations of the neighbouring grid centres.

    Parameters
    ----------
    apertures : ndarray of shape (n_apertures, height, width)
    responses : ndarray of shape (n_apertures, n_voxels)
    sigmas : ndarray of shape (n_sigmas,), optional
        Candidate sizes in px (default: 0.5 px to a third of the image, log-spaced).

    Returns
    -------
    dict of str to ndarray of shape (n_voxels,)
        ``prf_x``, ``prf_y``, ``prf_sigma`` (px) and ``fit_r`` (correlation of the best
        Gaussian's prediction with the responses; ≤ 0 means no positive fit).
    """
    apertures = np.asarray(apertures, dtype=np.float64)
    n_ap, h, w = apertures.shape
    if np.ndim(responses) != 2 or np.shape(responses)[0] != n_ap:
        raise ValueError(f"responses must have shape ({n_ap}, n_voxels), got "
                         f"{np.shape(responses)}")
    if sigmas is None:
        sigmas = np.geomspace(0.5, max(h, w) / 3, 20)
    sigmas = np.asarray(sigmas, dtype=np.float64)
    # voxels per pass, so the (voxels, centres) correlations and the (apertures, rows,
    # voxels) overlaps stay near 20 million values
    n_centres = len(np.arange(0, h, step)) * len(np.arange(0, w, step))
    per_pass = max(1, MAX_FIT_VALUES // max(n_centres, n_ap * h))
    n_vox = np.shape(responses)[1]
    if n_vox > per_pass:
        parts = [_fit_gaussian_prf(apertures, np.asarray(responses[:, i:i + per_pass],
                                                          dtype=np.float64), sigmas, step)
                 for i in range(0, n_vox, per_pass)]
        return {k: np.concatenate([q[k] for q in parts]) for k in parts[0]}
    return _fit_gaussian_prf(apertures, np.asarray(responses, dtype=np.float64), sigmas, step)


def _fit_gaussian_prf(apertures: np.ndarray, resp: np.ndarray, sigmas: np.ndarray,
                      step: float) -> dict[str, np.ndarray]:
    """:func:`fit_gaussian_prf` for one batch of voxels (resp: (n_apertures, n_voxels))."""
    n_ap, h, w = apertures.shape
    ys, xs = np.arange(0, h, step, dtype=np.float64), np.arange(0, w, step, dtype=np.float64)
    rz = resp - resp.mean(0)
    rz /= np.where(np.linalg.norm(rz, axis=0) > 0, np.linalg.norm(rz, axis=0), 1.0)
    n_vox = resp.shape[1]
    best = np.full(n_vox, -np.inf)
    best_s = np.zeros(n_vox, dtype=np.int64)
    best_c = np.zeros(n_vox, dtype=np.int64)
    pix_y, pix_x = np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64)
    for si, s in enumerate(sigmas):
        corr = _gaussian_correlations(apertures, rz, xs, ys, pix_x, pix_y, s)
        arg = np.argmax(corr, axis=1)
        val = corr[np.arange(n_vox), arg]
        better = val > best
        best[better], best_s[better], best_c[better] = val[better], si, arg[better]
    px, py = xs[best_c % len(xs)], ys[best_c // len(xs)]
    # sub-grid refinement: recompute each winning size's correlation surface for its voxels
    for si in np.unique(best_s):
        vox = np.flatnonzero(best_s == si)
        corr = _gaussian_correlations(apertures, rz[:, vox], xs, ys, pix_x, pix_y, sigmas[si])
        surf = corr.reshape(len(vox), len(ys), len(xs))
        iy, ix = best_c[vox] // len(xs), best_c[vox] % len(xs)
        px[vox] += step * _parabola_offset(surf, iy, ix, axis=1)
        py[vox] += step * _parabola_offset(surf, iy, ix, axis=0)
    # size refinement: a parabola in log σ through the grid neighbours at the refined centre
    log_s = np.log(sigmas)
    sig = sigmas[best_s].copy()
    inner = (best_s > 0) & (best_s < len(sigmas) - 1)
    if inner.any():
        v = np.flatnonzero(inner)
        c = [_correlation_at(apertures, rz[:, v], px[v], py[v], sigmas[best_s[v] + k])
             for k in (-1, 0, 1)]
        x0, x1, x2 = (log_s[best_s[v] + k] for k in (-1, 0, 1))
        denom = c[0] - 2 * c[1] + c[2]
        with np.errstate(invalid="ignore", divide="ignore"):
            # the grid is uniform in log σ, so the vertex offset is in units of one step
            off = np.where(denom < 0, 0.5 * (c[0] - c[2]) / denom, 0.0)
        off = np.clip(off, -0.5, 0.5)
        sig[v] = np.exp(x1 + off * (x2 - x0) / 2)
    # goodness of fit of the final (refined) Gaussian
    fit_r = _correlation_at(apertures, rz, px, py, sig)
    return {"prf_x": px, "prf_y": py, "prf_sigma": sig, "fit_r": fit_r}


def _correlation_at(apertures: np.ndarray, rz: np.ndarray, x: np.ndarray, y: np.ndarray,
                    sigma: np.ndarray) -> np.ndarray:
    """Correlation of each voxel's (normalised) responses with the aperture overlap of its
    own Gaussian (centre ``x, y``, size ``sigma``, each of shape (n_voxels,))."""
    n_ap, h, w = apertures.shape
    gx = np.exp(-(np.arange(w)[None, :] - x[:, None]) ** 2 / (2 * sigma[:, None] ** 2))
    gy = np.exp(-(np.arange(h)[None, :] - y[:, None]) ** 2 / (2 * sigma[:, None] ** 2))
    overlap = np.einsum("ayx,vx->ayv", apertures, gx)
    overlap = np.einsum("ayv,vy->av", overlap, gy)
    overlap -= overlap.mean(0)
    norm = np.linalg.norm(overlap, axis=0)
    overlap /= np.where(norm > 0, norm, np.inf)
    return (overlap * rz).sum(0)


def _gaussian_correlations(apertures: np.ndarray, rz: np.ndarray, xs: np.ndarray,
                           ys: np.ndarray, pix_x: np.ndarray, pix_y: np.ndarray,
                           sigma: float) -> np.ndarray:
    """Correlation (n_voxels, n_centres) of each voxel's responses with the aperture overlap
    of a Gaussian of size ``sigma`` at every grid centre (row-major over (ys, xs))."""
    n_ap, h, w = apertures.shape
    gx = np.exp(-(pix_x[None, :] - xs[:, None]) ** 2 / (2 * sigma ** 2))  # (nx, w)
    gy = np.exp(-(pix_y[None, :] - ys[:, None]) ** 2 / (2 * sigma ** 2))  # (ny, h)
    # separable Gaussian: overlap[a, cy, cx] = Σ_y gy[cy, y] Σ_x A[a, y, x] gx[cx, x]
    tmp = apertures @ gx.T  # (a, h, nx)
    overlap = np.einsum("yh,ahx->ayx", gy, tmp).reshape(n_ap, -1)
    overlap -= overlap.mean(0)
    norm = np.linalg.norm(overlap, axis=0)
    overlap /= np.where(norm > 0, norm, np.inf)
    return rz.T @ overlap


def _parabola_offset(surf: np.ndarray, iy: np.ndarray, ix: np.ndarray, axis: int) -> np.ndarray:
    """Sub-grid offset (−0.5..0.5) of the maximum of a parabola through three neighbours."""
    n, ny, nx = surf.shape
    i = np.arange(n)
    if axis == 1:
        ok = (ix > 0) & (ix < nx - 1)
        a, b = np.clip(ix - 1, 0, nx - 1), np.clip(ix + 1, 0, nx - 1)
        left, mid, right = surf[i, iy, a], surf[i, iy, ix], surf[i, iy, b]
    else:
        ok = (iy > 0) & (iy < ny - 1)
        a, b = np.clip(iy - 1, 0, ny - 1), np.clip(iy + 1, 0, ny - 1)
        left, mid, right = surf[i, a, ix], surf[i, iy, ix], surf[i, b, ix]
    denom = left - 2 * mid + right
    with np.errstate(invalid="ignore", divide="ignore"):
        off = np.where(ok & (denom < 0), 0.5 * (left - right) / denom, 0.0)
    return np.clip(off, -0.5, 0.5)


def circular_preference(responses: np.ndarray, angles_deg: np.ndarray, harmonic: int = 1,
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Preferred angle and selectivity of non-negative responses over evenly spaced angles.

    The preferred angle is that of the vector sum of the responses at ``harmonic`` times
    their angles, divided by ``harmonic`` (1: directions over 360°, 2: orientations over
    180°); the selectivity is the sum's length over the summed responses (0 = the same at
    every angle, 1 = one angle only).

    Parameters
    ----------
    responses : ndarray of shape (n_angles, n_voxels), >= 0
    angles_deg : ndarray of shape (n_angles,)

    Returns
    -------
    preferred : ndarray of shape (n_voxels,), degrees in [0, 360 / harmonic)
    selectivity : ndarray of shape (n_voxels,)
    """
    period = 360.0 / harmonic
    theta = np.radians(np.asarray(angles_deg, dtype=np.float64))
    vec = (responses * np.exp(1j * harmonic * theta)[:, None]).sum(0)
    total = responses.sum(0)
    pref = (np.degrees(np.angle(vec)) / harmonic) % period
    pref[pref >= period] = 0.0  # -1e-15 % 180 is 180.0 in floating point
    with np.errstate(invalid="ignore", divide="ignore"):
        sel = np.where(total > 0, np.abs(vec) / total, 0.0)
    return pref, sel


def orientation_tuning(responses: np.ndarray, orientations_deg: np.ndarray,
                       ) -> dict[str, np.ndarray]:
    """Preferred orientation, selectivity and bandwidth from responses to oriented stimuli.

    Responses are taken relative to each voxel's minimum over orientations; the preferred
    orientation is half the angle of the doubled-angle vector sum, the selectivity its
    length over the summed responses (0 = untuned, 1 = one orientation only) and the
    bandwidth the half-width at half-height of the tuning curve (trigonometric interpolation,
    periodic in 180°).

    Parameters
    ----------
    responses : ndarray of shape (n_orientations, n_voxels)
    orientations_deg : ndarray of shape (n_orientations,), evenly spaced over 180°

    Returns
    -------
    dict of str to ndarray of shape (n_voxels,)
        ``preferred_orientation`` (degrees in [0, 180)), ``orientation_selectivity``,
        ``orientation_bandwidth`` (degrees, HWHM).
    """
    r = np.asarray(responses, dtype=np.float64)
    r = r - r.min(0)
    pref, sel = circular_preference(r, orientations_deg, harmonic=2)
    # half-width at half-height on a fine periodic grid (0.5° steps, both flanks averaged);
    # trigonometric interpolation of the evenly spaced samples, which unlike linear
    # interpolation does not widen a peak that falls between two samples
    from scipy.signal import resample

    fine = resample(r, 360, axis=0) if r.shape[0] >= 3 else np.repeat(r, 360 // len(r), 0)
    bw = np.full(r.shape[1], np.nan)
    for v in range(r.shape[1]):
        c = fine[:, v]
        if c.max() <= 0:
            continue
        rolled = np.roll(c, -int(np.argmax(c)))  # peak at index 0, periodic both ways
        below = rolled < c.max() / 2
        if not below.any():  # never falls to half height: as broad as it gets
            bw[v] = 90.0
            continue
        right = int(np.argmax(below))
        left = int(np.argmax(below[::-1])) + 1
        bw[v] = 0.5 * (right + left) * 0.5
    return {"preferred_orientation": pref, "orientation_selectivity": sel,
            "orientation_bandwidth": bw}


def spatial_frequency_tuning(responses: np.ndarray, wavelengths: np.ndarray,
                             ) -> dict[str, np.ndarray]:
    """Preferred spatial frequency: peak of the response over log frequency (parabolic).

    Parameters
    ----------
    responses : ndarray of shape (n_wavelengths, n_voxels)
    wavelengths : ndarray of shape (n_wavelengths,), px per cycle, ascending or descending

    Returns
    -------
    dict of str to ndarray of shape (n_voxels,)
        ``preferred_sf`` (cycles per px) and ``preferred_wavelength`` (px).
    """
    lam = np.asarray(wavelengths, dtype=np.float64)
    order = np.argsort(1.0 / lam)  # ascending frequency
    logf = np.log(1.0 / lam[order])
    r = np.asarray(responses, dtype=np.float64)[order]
    k = np.argmax(r, axis=0)
    best = logf[k].copy()
    inner = (k > 0) & (k < len(lam) - 1)
    if inner.any() and len(lam) >= 3:
        v = np.flatnonzero(inner)
        x0, x1, x2 = logf[k[v] - 1], logf[k[v]], logf[k[v] + 1]
        y0, y1, y2 = r[k[v] - 1, v], r[k[v], v], r[k[v] + 1, v]
        # vertex of the parabola through three (unevenly spaced) points
        d = (x0 - x1) * (x0 - x2) * (x1 - x2)
        a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / d
        b = (x2 ** 2 * (y0 - y1) + x1 ** 2 * (y2 - y0) + x0 ** 2 * (y1 - y2)) / d
        with np.errstate(invalid="ignore", divide="ignore"):
            vert = np.where(a < 0, -b / (2 * a), x1)
        best[v] = np.clip(vert, x0, x2)
    sf = np.exp(best)
    return {"preferred_sf": sf, "preferred_wavelength": 1.0 / sf}


@dataclass
class ProbeSettings:
    """Stimulus sets of :func:`probe`.

    Bars: ``bar_orientations`` orientations, ``bar_step`` px apart (default: the image width
    / 28, 2 px at 56 px), ``bar_width`` px (default a tenth of the image width), textured with
    gratings at ``carrier_wavelengths`` (default: a tenth and a fifth of the image width).
    Gratings: ``grating_orientations`` orientations over 180°, ``grating_wavelengths`` px
    (default: 3 px to a third of the image width, 7 log-spaced), ``grating_phases`` phases.
    """

    bar_orientations: int = 4
    bar_step: float | None = None
    bar_width: float | None = None
    carrier_wavelengths: tuple[float, ...] | None = None
    grating_orientations: int = 12
    grating_wavelengths: tuple[float, ...] | None = None
    grating_phases: int = 4


@dataclass
class ProbeStimuli:
    """The images of an in-silico experiment and what each one is.

    Attributes
    ----------
    images : ndarray of shape (n_images, height, width), float in [0, 1]
        Bars (every aperture × every texture), then one blank, then the gratings
        (orientation-major, then wavelength, then phase).
    apertures : ndarray of shape (n_bars, height, width)
    n_carriers : int
        Textures per bar.
    orientations : ndarray of shape (n_orientations,)
        Grating orientations, degrees.
    wavelengths : ndarray of shape (n_wavelengths,)
        Grating wavelengths, px per cycle.
    n_phases : int
    """

    images: np.ndarray
    apertures: np.ndarray
    n_carriers: int
    orientations: np.ndarray
    wavelengths: np.ndarray
    n_phases: int

    @property
    def n_bar_images(self) -> int:
        return len(self.apertures) * self.n_carriers


def probe_stimuli(image_size: tuple[int, int], settings: ProbeSettings | None = None,
                  ) -> ProbeStimuli:
    """Build the bar sweep and the gratings of :func:`probe` for an image size.

    The same images can be shown to any system (e.g. the simulator's ground-truth cortex)
    and analysed with :func:`analyse_probe`.
    """
    s = settings or ProbeSettings()
    h, w = image_size
    # the default step scales with the image (2 px at 56 px): the number of bars, and so
    # the cost, stays the same for larger stimuli
    step = s.bar_step if s.bar_step is not None else max(1.0, w / 28)
    apert, _, _ = bar_apertures((h, w), s.bar_orientations, step, s.bar_width)
    carriers = _carriers((h, w), tuple(s.carrier_wavelengths or (w / 10, w / 5)))
    bars = (apert[:, None] * carriers[None]).reshape(-1, h, w)
    lam = np.asarray(s.grating_wavelengths or np.geomspace(3.0, w / 3, 7), dtype=np.float64)
    oris = 180.0 * np.arange(s.grating_orientations) / s.grating_orientations
    phases = 2 * np.pi * np.arange(s.grating_phases) / s.grating_phases
    grats = np.array([grating((h, w), o, L, p) for o in oris for L in lam for p in phases])
    images = np.concatenate([bars, np.zeros((1, h, w)), grats]).astype(np.float32)
    return ProbeStimuli(images, apert, len(carriers), oris, lam, len(phases))


def analyse_probe(stimuli: ProbeStimuli, responses: np.ndarray,
                  visual_field_deg: float | None = None) -> dict[str, np.ndarray]:
    """pRFs and tuning from one area's responses to :func:`probe_stimuli`.

    Parameters
    ----------
    stimuli : ProbeStimuli
    responses : ndarray of shape (n_images, n_voxels)
        Responses to ``stimuli.images`` (any affine scale per voxel).

    Returns
    -------
    dict of str to ndarray of shape (n_voxels,); see :func:`probe`.
    """
    n_bar = stimuli.n_bar_images
    if np.ndim(responses) != 2 or np.shape(responses)[0] != len(stimuli.images):
        raise ValueError(f"responses must have shape ({len(stimuli.images)}, n_voxels), "
                         f"got {np.shape(responses)}")
    n_all = np.shape(responses)[1]
    per_pass = PROBE_VOXELS_PER_PASS  # bounds the float64 copies of the responses
    if n_all > per_pass:
        parts = [analyse_probe(stimuli, responses[:, i:i + per_pass], visual_field_deg)
                 for i in range(0, n_all, per_pass)]
        return {k: np.concatenate([q[k] for q in parts]) for k in parts[0]}
    resp = np.asarray(responses, dtype=np.float64)
    h, w = stimuli.images.shape[1:]
    n_vox = resp.shape[1]
    # each bar's response averaged over its textures, relative to the blank screen
    bar = resp[:n_bar].reshape(len(stimuli.apertures), stimuli.n_carriers, n_vox).mean(1)
    prf = fit_gaussian_prf(stimuli.apertures, bar - resp[n_bar])
    oris, lam = stimuli.orientations, stimuli.wavelengths
    g = resp[n_bar + 1:].reshape(len(oris), len(lam), stimuli.n_phases, n_vox).mean(2)
    # tuning at the best grating: the orientation curve at the preferred wavelength and the
    # wavelength curve at the preferred orientation
    flat = g.reshape(-1, n_vox).argmax(0)
    bo, bl = flat // len(lam), flat % len(lam)
    vox = np.arange(n_vox)
    ori_curve = g[:, bl, vox]  # (n_orientations, n_voxels)
    sf_curve = g[bo, :, vox].T  # (n_wavelengths, n_voxels)
    out = {**prf, **orientation_tuning(ori_curve, oris),
           **spatial_frequency_tuning(sf_curve, lam), "bar_response_range": np.ptp(bar, axis=0)}
    out.update(visual_field_coordinates(prf["prf_x"], prf["prf_y"], (h, w), visual_field_deg))
    if visual_field_deg is not None:
        dpp = degrees_per_pixel((h, w), visual_field_deg)
        out["sigma_deg"] = prf["prf_sigma"] * dpp
        out["preferred_sf_cpd"] = out["preferred_sf"] / dpp
    return out


def probe(run: FittedModel, settings: ProbeSettings | None = None,
          visual_field_deg: float | None = None,
          areas: list[str] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """In-silico experiments on a trained model: a bar sweep and oriented gratings.

    The bar sweep gives each voxel a pRF (:func:`fit_gaussian_prf` on the model's responses
    to textured bars, each bar's response averaged over its textures, minus the response to
    a blank screen); it measures the whole model (features and readout), so its size
    includes the spatial extent of the area's features, which the readout-map size does
    not. Gratings (orientations × wavelengths × phases, averaged over phase) give
    orientation and spatial-frequency tuning (:func:`orientation_tuning`,
    :func:`spatial_frequency_tuning`).

    Parameters
    ----------
    run : niflow.FittedModel
        A fitted model (a :class:`niflow.Run` is one).
    settings : ProbeSettings, optional
    visual_field_deg : float, optional
        Visual angle of the image width (default: the run's ``data.visual_field_deg``).
    areas : list of str, optional
        Default: every area with voxels.

    Returns
    -------
    dict of area to dict of str to ndarray of shape (n_voxels,)
        ``prf_x``, ``prf_y``, ``prf_sigma`` (px), ``fit_r``, ``eccentricity``,
        ``polar_angle``, ``preferred_orientation``, ``orientation_selectivity``,
        ``orientation_bandwidth``, ``preferred_sf`` (cycles/px), ``preferred_wavelength``
        (px), ``bar_response_range`` (z units: how strongly bars drive the voxel) and, with
        degrees, ``x_deg``, ``y_deg``, ``eccentricity_deg``, ``sigma_deg``,
        ``preferred_sf_cpd``.
    """
    vf = visual_field_deg if visual_field_deg is not None else getattr(
        run.config.data, "visual_field_deg", None)
    stimuli = probe_stimuli(tuple(run.model.image_shape[1:]), settings)
    resp = model_responses(run, stimuli.images)
    return {area: analyse_probe(stimuli, resp[area], vf)
            for area in (areas or run.model.areas_with_voxels)}

"""Handwritten-looking capital letters, ordered like the real BRAINS stimuli."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

__all__ = ["make_glyphs"]

Polyline = NDArray[np.float64]  # (k, 2) points (x, y) in the unit letter box, y pointing down


def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int = 32) -> Polyline:
    """Elliptic arc from angle ``a0`` to ``a1`` (degrees; y down, so 90 deg is the bottom)."""
    t = np.deg2rad(np.linspace(a0, a1, n))
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def _poly(*pts: tuple[float, float]) -> Polyline:
    return np.asarray(pts, dtype=float)


def _bowl(x0: float, y0: float, y1: float, width: float, flat: float) -> Polyline:
    """Closed-to-the-left bowl: straight top, half ellipse bulging right, straight bottom."""
    xa = x0 + flat * width
    rx = width - flat * width
    ry = (y1 - y0) / 2
    top = _poly((x0, y0), (xa, y0))
    curve = _arc(xa, y0 + ry, rx, ry, -90.0, 90.0)
    bottom = _poly((xa, y1), (x0, y1))
    return np.concatenate([top, curve, bottom])


def _letter_b(rng: np.random.Generator) -> list[Polyline]:
    ym = rng.uniform(0.42, 0.52)
    w_top = rng.uniform(0.38, 0.52)
    w_bot = w_top + rng.uniform(0.04, 0.14)
    flat = rng.uniform(0.2, 0.45)
    return [
        _poly((0.0, 0.0), (0.0, 1.0)),
        _bowl(0.0, 0.0, ym, w_top, flat),
        _bowl(0.0, ym, 1.0, w_bot, flat),
    ]


def _letter_r(rng: np.random.Generator) -> list[Polyline]:
    ym = rng.uniform(0.45, 0.56)
    w_top = rng.uniform(0.45, 0.6)
    flat = rng.uniform(0.2, 0.45)
    leg_start = rng.uniform(0.1, 0.3) * w_top
    leg_end = rng.uniform(0.55, 0.72)
    return [
        _poly((0.0, 0.0), (0.0, 1.0)),
        _bowl(0.0, 0.0, ym, w_top, flat),
        _poly((leg_start, ym), (leg_end, 1.0)),
    ]


def _letter_a(rng: np.random.Generator) -> list[Polyline]:
    width = rng.uniform(0.6, 0.8)
    apex = width * rng.uniform(0.42, 0.58)
    yc = rng.uniform(0.55, 0.7)
    # Crossbar ends on the two diagonals (x is linear in y along each diagonal).
    xl = apex * (1.0 - yc)
    xr = apex + (width - apex) * yc
    over = rng.uniform(-0.03, 0.06)
    return [
        _poly((0.0, 1.0), (apex, 0.0), (width, 1.0)),
        _poly((xl - over, yc), (xr + over, yc)),
    ]


def _letter_i(rng: np.random.Generator) -> list[Polyline]:
    strokes = [_poly((0.0, 0.0), (0.0, 1.0))]
    if rng.random() < 0.5:
        half = rng.uniform(0.14, 0.22)
        strokes += [_poly((-half, 0.0), (half, 0.0)), _poly((-half, 1.0), (half, 1.0))]
    return strokes


def _letter_n(rng: np.random.Generator) -> list[Polyline]:
    width = rng.uniform(0.55, 0.75)
    top_right = rng.uniform(-0.05, 0.08)
    return [_poly((0.0, 1.0), (0.0, 0.0), (width, 1.0), (width, top_right))]


def _letter_s(rng: np.random.Generator) -> list[Polyline]:
    ym = rng.uniform(0.44, 0.52)
    rx_top = rng.uniform(0.22, 0.3)
    rx_bot = rx_top + rng.uniform(0.0, 0.07)
    cx = 0.0
    start = rng.uniform(-40.0, -10.0)
    end = rng.uniform(135.0, 170.0)
    upper = _arc(cx, ym / 2, rx_top, ym / 2, start, -270.0)
    lower = _arc(cx, ym + (1 - ym) / 2, rx_bot, (1 - ym) / 2, -90.0, end)
    return [np.concatenate([upper, lower[1:]])]


_LETTERS: dict[str, Callable[[np.random.Generator], list[Polyline]]] = {
    "A": _letter_a,
    "B": _letter_b,
    "I": _letter_i,
    "N": _letter_n,
    "R": _letter_r,
    "S": _letter_s,
}


def _resample(poly: Polyline, step: float) -> Polyline:
    """Resample a polyline at (about) equal arc-length ``step`` keeping both end points."""
    seg = np.hypot(*np.diff(poly, axis=0).T)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    n = max(int(np.ceil(s[-1] / step)), 1) + 1
    t = np.linspace(0.0, s[-1], n)
    return np.stack([np.interp(t, s, poly[:, 0]), np.interp(t, s, poly[:, 1])], axis=1)


def _smooth_displacement(
    pts: NDArray[np.float64], rng: np.random.Generator, size: int, amplitude: float
) -> NDArray[np.float64]:
    """Low-frequency random displacement field (sum of a few plane waves) evaluated at pts."""
    n_waves = 3
    freq = rng.uniform(0.5, 1.5, n_waves) / size  # cycles per pixel: 0.5-1.5 per image
    ang = rng.uniform(0, 2 * np.pi, n_waves)
    kvec = 2 * np.pi * freq[:, None] * np.stack([np.cos(ang), np.sin(ang)], axis=1)
    phase = rng.uniform(0, 2 * np.pi, (n_waves, 2))
    amp = rng.normal(0.0, 1.0, (n_waves, 2))
    # A unit sine has variance 1/2: scale so each component's rms displacement is amplitude.
    amp *= amplitude / np.sqrt(np.sum(amp**2, axis=0) / 2 + 1e-12)
    waves = np.sin((pts @ kvec.T)[:, :, None] + phase[None])  # (k, n_waves, 2)
    return np.einsum("kwc,wc->kc", waves, amp)


def _render(segments: NDArray[np.float64], width: float, size: int) -> NDArray[np.uint8]:
    """Anti-aliased rendering of thick line segments.

    Parameters
    ----------
    segments : ndarray of shape (n_segments, 2, 2)
        Start and end points ``(x, y)`` in pixel coordinates.
    width : float
        Stroke width in pixels.
    size : int
        Output image is ``size x size``.

    Returns
    -------
    img : ndarray of shape (size, size), uint8
    """
    segments = segments.astype(np.float32)
    a = segments[:, 0]
    ab = segments[:, 1] - a
    len2 = np.maximum(np.sum(ab**2, axis=1), np.float32(1e-12))
    reach = width / 2 + 1.0
    # Only pixels near the glyph can be inked; cropping to its box saves ~half the work.
    lo = np.clip(np.floor(segments.reshape(-1, 2).min(0) - reach), 0, size - 1).astype(int)
    hi = np.clip(np.ceil(segments.reshape(-1, 2).max(0) + reach), 0, size - 1).astype(int)
    xs = np.arange(lo[0], hi[0] + 1, dtype=np.float32)
    ys = np.arange(lo[1], hi[1] + 1, dtype=np.float32)
    px = np.broadcast_to(xs[None, :], (ys.size, xs.size)).reshape(-1, 1)
    py = np.broadcast_to(ys[:, None], (ys.size, xs.size)).reshape(-1, 1)
    dx = px - a[None, :, 0]
    dy = py - a[None, :, 1]
    t = np.clip((dx * ab[:, 0] + dy * ab[:, 1]) / len2, np.float32(0), np.float32(1))
    d2 = (dx - t * ab[:, 0]) ** 2 + (dy - t * ab[:, 1]) ** 2
    d = np.sqrt(d2.min(axis=1))
    ink = np.clip(width / 2 - d + 0.5, 0.0, 1.0).reshape(ys.size, xs.size)
    img = np.zeros((size, size), dtype=np.uint8)
    img[lo[1] : hi[1] + 1, lo[0] : hi[0] + 1] = np.round(ink * 255).astype(np.uint8)
    return img


def _draw_glyph(letter: str, rng: np.random.Generator, size: int) -> NDArray[np.uint8]:
    strokes = _LETTERS[letter](rng)
    width = rng.uniform(2.0, 5.0)
    height = rng.uniform(0.60, 0.85) * size
    aspect = rng.uniform(0.85, 1.15)
    shear = rng.uniform(-0.25, 0.25)
    rot = np.deg2rad(rng.uniform(-15.0, 15.0))
    shift = rng.uniform(-5.0, 5.0, 2)

    allpts = np.concatenate(strokes)
    centre = (allpts.min(0) + allpts.max(0)) / 2
    # Resample (~2.5 px) before deforming so the smooth warp also bends straight strokes; the
    # warp's wavelength is >= 2/3 of the image and the arcs' chord error is < 0.1 px.
    step = 2.5 / height
    strokes = [_resample(s - centre, step) for s in strokes]
    lengths = [len(s) for s in strokes]
    pts = np.concatenate(strokes)

    lin = np.array([[aspect, shear], [0.0, 1.0]]) * height
    c, s = np.cos(rot), np.sin(rot)
    lin = np.array([[c, -s], [s, c]]) @ lin
    pts = pts @ lin.T + (size - 1) / 2 + shift
    pts = pts + _smooth_displacement(pts, rng, size, amplitude=rng.uniform(1.0, 2.0))

    # Keep the whole stroke (including its width) inside the image: shrink if too large,
    # then shift back in.
    margin = width / 2 + 1.0
    avail = (size - 1) - 2 * margin
    lo, hi = pts.min(0), pts.max(0)
    extent = (hi - lo).max()
    if extent > avail:
        mid = (lo + hi) / 2
        pts = (pts - mid) * (avail / extent) + mid
        lo, hi = pts.min(0), pts.max(0)
    pts = pts + np.maximum(margin - lo, 0.0) - np.maximum(hi - (size - 1 - margin), 0.0)

    segs = []
    start = 0
    for n in lengths:
        p = pts[start : start + n]
        segs.append(np.stack([p[:-1], p[1:]], axis=1))
        start += n
    return _render(np.concatenate(segs), width, size)


def make_glyphs(
    n_per_letter: int = 60,
    size: int = 56,
    letters: str = "BRAINS",
    test_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """Draw handwritten-style capital letters.

    Each glyph is a set of strokes (line segments and arcs) with random stroke width
    (2-5 px), letter height (60-85 % of the image), aspect, shear (+-0.25), rotation
    (+-15 deg), translation (+-5 px, clamped so the glyph stays inside), letter-shape
    parameters and a smooth random deformation (~1-2 px).

    Parameters
    ----------
    n_per_letter : int
        Number of glyphs per letter.
    size : int
        Image height and width in pixels.
    letters : str
        Letters to draw, each one of ``"ABINRS"``. The label of a glyph is the index of its
        letter in this string.
    test_fraction : float
        Fraction of each letter's glyphs that goes into the test part (rounded).
    seed : int
        Random seed; the output is a deterministic function of all arguments.

    Returns
    -------
    stim : ndarray of shape (n_samples, size, size), uint8
        White strokes (255) on black (0), anti-aliased. ``n_samples = n_per_letter *
        len(letters)``. Rows are ordered like the real BRAINS data: first the training part
        letter by letter (``n_train = n_per_letter - n_test`` glyphs of each letter), then the
        test part letter by letter (``n_test = round(test_fraction * n_per_letter)`` each).
    labels : ndarray of shape (n_samples,), int64
        Index into ``letters`` of each row.
    """
    unknown = sorted(set(letters) - set(_LETTERS))
    if unknown:
        raise ValueError(f"no stroke definition for letters {unknown}; known: {sorted(_LETTERS)}")
    if n_per_letter < 1:
        raise ValueError("n_per_letter must be >= 1")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError("test_fraction must be in [0, 1)")
    n_test = int(round(test_fraction * n_per_letter))
    n_train = n_per_letter - n_test
    labels = np.concatenate(
        [np.repeat(np.arange(len(letters)), n_train), np.repeat(np.arange(len(letters)), n_test)]
    ).astype(np.int64)
    rng = np.random.default_rng(seed)
    stim = np.empty((labels.size, size, size), dtype=np.uint8)
    for i, lab in enumerate(labels):
        stim[i] = _draw_glyph(letters[lab], rng, size)
    return stim, labels


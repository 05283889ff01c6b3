"""Stimulus families other than letters, for simulations that are not tuned to glyphs.

Every family is a function ``(n, size=56, seed=0) -> uint8 array (n, size, size)`` that is
deterministic in its arguments, draws on mid-grey (128) and spreads its content unevenly over
the image (patches, shapes, clusters), so that every pRF position sees different stimuli:

* :func:`make_textures` — oriented band-pass noise in 1-3 soft apertures.
* :func:`make_natural` — 1/f noise, luminance edges and occluding shapes (natural-like).
* :func:`make_bars` — oriented bars and grating patches.
* :func:`make_dots` — clusters of bright and dark dots.

:func:`make_stimuli` mixes families (and ``"letters"``: :func:`make_glyphs`) in one set.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import NDArray

from niflow.data.simulate.glyphs import make_glyphs

__all__ = [
    "STIMULUS_FAMILIES",
    "make_bars",
    "make_dots",
    "make_natural",
    "make_stimuli",
    "make_textures",
]

# Stream of the family generators, apart from the glyph (``default_rng(seed)``) and response
# streams.
_STIM_STREAM = 4271

Image = NDArray[np.float64]  # (size, size), contrast around 0, roughly within [-1, 1]


def _grid(size: int) -> tuple[Image, Image]:
    """Pixel-centre coordinates (x = column, y = row), each (size, size)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    return xx, yy


def _to_uint8(img: Image) -> NDArray[np.uint8]:
    """Contrast image (0 = mid-grey, +-1 = white/black) to uint8."""
    return np.clip(np.round(128.0 + 127.0 * img), 0, 255).astype(np.uint8)


def _soft_disc(xx: Image, yy: Image, cx: float, cy: float, radius: float,
               edge: float = 1.5) -> Image:
    """Aperture: 1 inside the disc, a raised-cosine ramp ``edge`` px wide, 0 outside."""
    d = np.hypot(xx - cx, yy - cy) - radius
    return 0.5 * (1 - np.sin(np.pi * np.clip(d / edge, -0.5, 0.5)))


def _coverage(signed_distance: Image) -> Image:
    """Anti-aliased coverage of a shape from its signed distance (negative inside, px)."""
    return np.clip(0.5 - signed_distance, 0.0, 1.0)


def _bandpass_noise(rng: np.random.Generator, size: int, freq: float, theta: float,
                    ori_sd: float, octaves: float) -> Image:
    """White noise filtered around spatial frequency ``freq`` (cycles/px) and ``theta`` (rad).

    Unit-variance output; ``theta`` is the direction of the frequency vector (stripes run
    perpendicular to it).
    """
    fy, fx = np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size), indexing="ij")
    f = np.hypot(fx, fy)
    radial = np.exp(-(np.log2(np.maximum(f, 1e-9) / freq) ** 2) / (2 * (octaves / 2.355) ** 2))
    dtheta = np.angle(np.exp(2j * (np.arctan2(fy, fx) - theta))) / 2  # in (-pi/2, pi/2]
    angular = np.exp(-(dtheta**2) / (2 * ori_sd**2))
    noise = np.fft.fft2(rng.standard_normal((size, size)))
    img = np.real(np.fft.ifft2(noise * radial * angular))
    return img / (img.std() + 1e-12)


def _pink_noise(rng: np.random.Generator, size: int, alpha: float) -> Image:
    """Noise with amplitude spectrum ``1 / f ** alpha`` (DC removed), unit variance."""
    fy, fx = np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size), indexing="ij")
    f = np.hypot(fx, fy)
    amp = np.where(f > 0, np.maximum(f, 1.0 / size) ** -alpha, 0.0)
    img = np.real(np.fft.ifft2(np.fft.fft2(rng.standard_normal((size, size))) * amp))
    return img / (img.std() + 1e-12)


def _texture_image(rng: np.random.Generator, size: int, xx: Image, yy: Image) -> Image:
    img = np.zeros((size, size))
    for _ in range(rng.integers(1, 4)):
        tex = _bandpass_noise(rng, size, freq=rng.uniform(1 / 16, 1 / 4),
                              theta=rng.uniform(0, np.pi), ori_sd=np.deg2rad(rng.uniform(8, 35)),
                              octaves=rng.uniform(0.6, 1.4))
        cx, cy = rng.uniform(0.15, 0.85, 2) * (size - 1)
        ap = _soft_disc(xx, yy, cx, cy, rng.uniform(0.12, 0.35) * size, edge=3.0)
        img = img * (1 - ap) + ap * rng.uniform(0.2, 0.45) * tex
    return img


def _draw(image, n: int, size: int, seed: int, stream: int) -> NDArray[np.uint8]:
    """``n`` images of one family: ``image(rng, size, xx, yy)`` on the family's own stream."""
    rng = np.random.default_rng([seed, _STIM_STREAM, stream])
    xx, yy = _grid(size)
    return np.stack([_to_uint8(image(rng, size, xx, yy)) for _ in range(n)]
                    ) if n else np.zeros((0, size, size), np.uint8)


def make_textures(n: int, size: int = 56, seed: int = 0) -> NDArray[np.uint8]:
    """Oriented band-pass noise textures (4-16 px periods) in 1-3 soft apertures.

    Returns
    -------
    ndarray of shape (n, size, size), uint8
    """
    return _draw(_texture_image, n, size, seed, 0)


def _shape_distance(rng: np.random.Generator, size: int, xx: Image, yy: Image) -> Image:
    """Signed distance (px) of a random ellipse, rotated rectangle or half-plane."""
    cx, cy = rng.uniform(0.1, 0.9, 2) * (size - 1)
    t = rng.uniform(0, np.pi)
    u = (xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)
    v = -(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)
    kind = rng.integers(3)
    if kind == 0:  # ellipse; the radial approximation is exact enough for 1-px anti-aliasing
        a, b = rng.uniform(0.06, 0.3, 2) * size
        q = np.hypot(u / a, v / b)
        return (q - 1) * min(a, b)
    if kind == 1:  # rectangle
        a, b = rng.uniform(0.05, 0.3, 2) * size
        return np.maximum(np.abs(u) - a, np.abs(v) - b)
    return u  # half-plane: a straight luminance edge through (cx, cy)


def _natural_image(rng: np.random.Generator, size: int, xx: Image, yy: Image) -> Image:
    img = 0.25 * _pink_noise(rng, size, rng.uniform(0.9, 1.4))
    for _ in range(rng.integers(2, 7)):
        cover = _coverage(_shape_distance(rng, size, xx, yy))
        fill = rng.uniform(-0.7, 0.7) + 0.1 * _pink_noise(rng, size, 1.2)
        img = img * (1 - cover) + cover * fill  # painter's order: later shapes occlude
    return img


def make_natural(n: int, size: int = 56, seed: int = 0) -> NDArray[np.uint8]:
    """Natural-like patches: 1/f noise, luminance edges and 2-6 occluding shapes.

    Returns
    -------
    ndarray of shape (n, size, size), uint8
    """
    return _draw(_natural_image, n, size, seed, 1)


def _bars_image(rng: np.random.Generator, size: int, xx: Image, yy: Image) -> Image:
    img = np.zeros((size, size))
    for _ in range(rng.integers(1, 4)):
        cx, cy = rng.uniform(0.15, 0.85, 2) * (size - 1)
        t = rng.uniform(0, np.pi)
        u = (xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)
        if rng.random() < 0.5:  # grating patch in a circular aperture
            lam = np.exp(rng.uniform(np.log(4.0), np.log(16.0)))
            ap = _soft_disc(xx, yy, cx, cy, rng.uniform(4.0, 14.0))
            patch = rng.uniform(0.3, 0.9) * np.cos(2 * np.pi * u / lam + rng.uniform(0, 2 * np.pi))
            img = img * (1 - ap) + ap * patch
        else:  # bar: a thin rotated rectangle, bright or dark
            v = -(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)
            half_len, half_w = rng.uniform(4.0, 20.0), rng.uniform(0.75, 3.0)
            cover = _coverage(np.maximum(np.abs(v) - half_len, np.abs(u) - half_w))
            img = img * (1 - cover) + cover * rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 0.95)
    return img


def make_bars(n: int, size: int = 56, seed: int = 0) -> NDArray[np.uint8]:
    """1-3 items per image: oriented bars or grating patches (4-16 px periods).

    Returns
    -------
    ndarray of shape (n, size, size), uint8
    """
    return _draw(_bars_image, n, size, seed, 2)


def _dots_image(rng: np.random.Generator, size: int, xx: Image, yy: Image) -> Image:
    img = np.zeros((size, size))
    for _ in range(rng.integers(1, 3)):
        cx, cy = rng.uniform(0.2, 0.8, 2) * (size - 1)
        spread = rng.uniform(0.08, 0.3) * size
        k = int(rng.integers(5, 40))
        px = cx + spread * rng.standard_normal(k)
        py = cy + spread * rng.standard_normal(k)
        rad = rng.uniform(0.8, 3.5, k)
        val = rng.choice([-1.0, 1.0], k) * rng.uniform(0.5, 0.95, k)
        for x0, y0, r0, v0 in zip(px, py, rad, val, strict=True):
            cover = _coverage(np.hypot(xx - x0, yy - y0) - r0)
            img = img * (1 - cover) + cover * v0
    return img


def make_dots(n: int, size: int = 56, seed: int = 0) -> NDArray[np.uint8]:
    """1-2 clusters of 5-40 bright or dark dots (radius 0.8-3.5 px) per image.

    Returns
    -------
    ndarray of shape (n, size, size), uint8
    """
    return _draw(_dots_image, n, size, seed, 3)


def _letters(n: int, size: int = 56, seed: int = 0) -> NDArray[np.uint8]:
    """``n`` synthetic glyphs of ``"BRAINS"`` in a seeded random order."""
    stim, _ = make_glyphs(n_per_letter=max(1, -(-n // 6)), size=size, seed=seed)
    rng = np.random.default_rng([seed, _STIM_STREAM, 4])
    return stim[np.sort(rng.choice(len(stim), n, replace=False))]


STIMULUS_FAMILIES: dict[str, Callable[..., NDArray[np.uint8]]] = {
    "textures": make_textures,
    "natural": make_natural,
    "bars": make_bars,
    "dots": make_dots,
    "letters": _letters,
}


def make_stimuli(families: str | Sequence[str], n: int, size: int = 56,
                 seed: int = 0) -> NDArray[np.uint8]:
    """``n`` images from one family or an even mix of several, rows in a seeded random order.

    Parameters
    ----------
    families : str or sequence of str
        Keys of :data:`STIMULUS_FAMILIES`; with several, each gets ``n // k`` images (the
        first ``n % k`` one more).
    n, size, seed : int

    Returns
    -------
    ndarray of shape (n, size, size), uint8
    """
    names = [families] if isinstance(families, str) else list(families)
    unknown = sorted(set(names) - set(STIMULUS_FAMILIES))
    if unknown or not names:
        raise ValueError(f"unknown stimulus families {unknown}; known: {sorted(STIMULUS_FAMILIES)}")
    counts = [n // len(names) + (i < n % len(names)) for i in range(len(names))]
    parts = [STIMULUS_FAMILIES[f](c, size, seed) for f, c in zip(names, counts, strict=True)]
    stim = np.concatenate(parts)
    if len(names) == 1:
        return stim
    # Interleave the families so that any split or fold sees all of them.
    return stim[np.random.default_rng([seed, _STIM_STREAM, 99]).permutation(n)]

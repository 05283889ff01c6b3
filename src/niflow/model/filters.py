"""A multi-scale quadrature Gabor bank: a first area with priors for small data sets.

With 100–300 images there is too little data to learn V1's filters from scratch (the learned
kernels of a small data set look like noise). The bank gives each channel the local energy
``√(even² + odd²)`` of one quadrature Gabor pair at ``n_orientations`` orientations and
``n_scales`` log-spaced wavelengths; the normalisation, mixing and readout that follow are
learned. Convolution goes through the Fourier domain because the largest kernels (wavelength
~16 px, envelope σ = wavelength / 2) are 49 px wide. Each pair is one complex kernel
``even + i·odd``, so one complex response gives both; the inverse transform is two small
matrix products restricted to the image's own pixels (the transform is padded by the kernel's
radius, and a third of its rows and columns are never read), which on a CPU is several times
faster than inverse FFTs of every padded pair (`benchmarks/gabor_bank.py`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.fft import next_fast_len
from torch import Tensor, nn

SIGMA_FRAC = 0.5  # envelope σ / wavelength: a bandwidth of about 1.1 octaves


def gabor_kernel(wavelength: float, orientation_deg: float,
                 sigma_frac: float = SIGMA_FRAC) -> np.ndarray:
    """Complex Gabor kernel ``even + i·odd`` with stripes at ``orientation_deg``.

    The envelope's standard deviation is ``sigma_frac · wavelength``, truncated at 3σ; the
    even part has its mean removed so uniform regions give no energy; the kernel has unit
    L2 norm. Orientation: 0° = horizontal stripes, counter-clockwise positive with y up.

    Returns
    -------
    ndarray of shape (2r+1, 2r+1), complex128
    """
    sig = sigma_frac * wavelength
    r = max(1, int(math.ceil(3 * sig)))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1].astype(np.float64)
    t = math.radians(orientation_deg)
    u = xx * math.sin(t) + yy * math.cos(t)  # across the stripes (rows grow downward)
    env = np.exp(-(xx ** 2 + yy ** 2) / (2 * sig ** 2))
    even = env * np.cos(2 * np.pi * u / wavelength)
    even -= env * (even.sum() / env.sum())
    k = even + 1j * env * np.sin(2 * np.pi * u / wavelength)
    return k / np.sqrt((np.abs(k) ** 2).sum())


def bank_wavelengths(width: int, n_scales: int, lo: float = 4.0,
                     hi: float | None = None) -> np.ndarray:
    """``n_scales`` wavelengths (px) log-spaced from ``lo`` to ``hi`` (default width / 3.5)."""
    hi = max(lo, width / 3.5) if hi is None else hi
    return np.geomspace(lo, hi, n_scales) if n_scales > 1 else np.array([lo])


CHUNK_BYTES = 32 * 2**20


class GaborBank(nn.Module):
    """Local energies of a quadrature Gabor bank on a one- or multi-channel image.

    Parameters
    ----------
    in_channels : int
        Image channels; colour images are filtered per channel and summed with learned
        weights (initialised to the channel mean, i.e. luminance).
    image_size : tuple of int
        ``(H, W)`` of the input.
    n_orientations, n_scales : int
    wavelengths : array of shape (n_scales,)
    learn : bool
        ``False``: the kernels are fixed (buffers); ``True``: they start as Gabor pairs
        and are learned.
    heads : ndarray of shape (M, taps), complex, optional
        Causal temporal filters (lag 0 first, :func:`motion_filters`) whose energies each
        pair adds in a movie model (motion-energy channels; :class:`~niflow.model.video.
        CausalQuadrature` applies them over frames). On a single image, a movie of one
        frame, head ``m`` gives ``|h_m[0]|`` times the pair's energy.

    Output channels are orientation-major, each pair's heads after its static energy:
    ``channel = (o · n_scales + k) · (1 + M) + m`` (``m = 0``: static).
    """

    def __init__(self, in_channels: int, image_size: tuple[int, int], n_orientations: int,
                 wavelengths: np.ndarray, learn: bool = False,
                 heads: np.ndarray | None = None) -> None:
        super().__init__()
        kernels = [gabor_kernel(float(lam), 180.0 * o / n_orientations)
                   for o in range(n_orientations) for lam in wavelengths]
        r = max(k.shape[0] // 2 for k in kernels)
        size = 2 * r + 1
        stack = np.zeros((len(kernels), 2, size, size))
        for i, k in enumerate(kernels):
            kr = k.shape[0] // 2
            stack[i, 0, r - kr:r + kr + 1, r - kr:r + kr + 1] = k.real
            stack[i, 1, r - kr:r + kr + 1, r - kr:r + kr + 1] = k.imag
        weight = torch.as_tensor(stack, dtype=torch.float32)
        if learn:
            self.kernels = nn.Parameter(weight)
        else:
            self.register_buffer("kernels", weight)
        self.radius = r
        self.image_size = (int(image_size[0]), int(image_size[1]))
        # circular convolution with the kernel centred on index 0 wraps only into the
        # padding when the transform is at least r longer than the image
        self.fft_size = tuple(next_fast_len(n + r, real=True) for n in self.image_size)
        self.learn = learn
        if not learn:  # fixed kernels are transformed once (not saved: rebuilt from them)
            self._register_complex("spectrum", self._transform(weight))
        h, w = self.image_size
        fy, fx = self.fft_size
        self._register_complex("inverse_rows", _inverse_dft(fy, h))
        self._register_complex("inverse_cols", _inverse_dft(fx, w).T)
        self.colour = nn.Parameter(torch.full((in_channels,), 1.0 / in_channels),
                                   requires_grad=in_channels > 1)
        self.pairs = len(kernels)
        heads = np.zeros((0, 1), np.complex128) if heads is None else np.asarray(heads)
        if heads.ndim != 2:
            raise ValueError(f"heads must be (M, taps) temporal filters, got {heads.shape}")
        # rebuilt from the configuration and frame rate, so not saved
        self.register_buffer("heads", torch.view_as_real(torch.as_tensor(
            heads, dtype=torch.complex128)).float(), persistent=False)  # (M, taps, 2)
        self.out_channels = self.pairs * (1 + heads.shape[0])

    @property
    def n_heads(self) -> int:
        """Temporal heads (motion-energy channels) per pair."""
        return int(self.heads.shape[0])

    def forward(self, x: Tensor) -> Tensor:
        """Energies (B, out_channels, H, W) of images (B, C, H, W), each a movie of one
        frame (frames before it are zero)."""
        e = self._chunked(x, energy=True).to(x.dtype)
        if not self.n_heads:
            return e
        lag0 = torch.linalg.vector_norm(self.heads[:, 0], dim=-1).to(e.dtype)  # (M,)
        scale = torch.cat([torch.ones_like(lag0[:1]), lag0])
        return (e[:, :, None] * scale[None, None, :, None, None]).flatten(1, 2)

    def responses(self, x: Tensor) -> Tensor:
        """Complex responses ``even + i·odd`` (B, n_orientations · n_scales, H, W) of images
        (B, C, H, W); their magnitude (plus 1e-8 under the root) is :meth:`forward`."""
        return self._chunked(x, energy=False)

    def _chunked(self, x: Tensor, energy: bool) -> Tensor:
        img = torch.einsum("bchw,c->bhw", x, self.colour.to(x.dtype))
        kern = self._transform(self.kernels) if self.learn else self._complex("spectrum")
        # a channel's spectrum product (B × fy × fx complex values) and the energies (B × F ×
        # H × W) are the largest intermediates: images go in chunks that keep them near
        # CHUNK_BYTES, so that a movie segment of hundreds of frames needs no more memory
        # than a batch of images
        fy, fx = self.fft_size
        per_image = 8 * 3 * fy * fx + 4 * kern.shape[0] * self.image_size[0] * self.image_size[1]
        step = max(1, CHUNK_BYTES // per_image)
        parts = [self._planes(img[i:i + step], kern, energy)
                 for i in range(0, img.shape[0], step)]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def _planes(self, img: Tensor, kern: Tensor, energy: bool) -> Tensor:
        fy, fx = self.fft_size
        spec = torch.fft.fft2(img.float(), s=(fy, fx))  # (B, fy, fx)
        rows, cols = self._complex("inverse_rows"), self._complex("inverse_cols")
        planes = []
        for k in kern:  # one channel at a time: (B, fy, fx) complex at most
            z = rows @ (spec * k) @ cols  # (B, H, W): even + i·odd
            planes.append(quadrature_energy(torch.view_as_real(z)) if energy else z)
        return torch.stack(planes, 1)

    def _transform(self, kernels: Tensor) -> Tensor:
        """FFT (F, fy, fx) of the complex kernels ``even + i·odd``, centred on index (0, 0)."""
        fy, fx = self.fft_size
        r = self.radius
        padded = torch.nn.functional.pad(kernels.float(),
                                         (0, fx - kernels.shape[-1], 0, fy - kernels.shape[-2]))
        rolled = torch.roll(padded, (-r, -r), dims=(-2, -1))
        return torch.fft.fft2(torch.complex(rolled[:, 0], rolled[:, 1]))

    def _register_complex(self, name: str, value: Tensor) -> None:
        # as two real buffers: Module.to(float dtype) would drop a complex one's imaginary
        # part; not saved (rebuilt from the kernels and sizes)
        self.register_buffer(f"{name}_re", value.real.float().contiguous(), persistent=False)
        self.register_buffer(f"{name}_im", value.imag.float().contiguous(), persistent=False)

    def _complex(self, name: str) -> Tensor:
        return torch.complex(getattr(self, f"{name}_re").float(),
                             getattr(self, f"{name}_im").float())


def motion_filters(hz: list[float], fps: float, taps: int) -> np.ndarray:
    """Causal complex temporal filters of motion-energy channels: for each frequency ``f``
    (Hz) one turning at ``+f`` and one at ``−f`` over ``taps`` frames, lag 0 first.

    ``h_l = w_l · e^{±2πi f l / fps} − c_± · w_l`` with a raised-cosine envelope ``w`` over
    the taps and ``c_±`` chosen so that ``Σ h_l = 0``: applied to a pair's complex response
    ``z``, the energy ``|Σ_l h_l z_{t−l}|`` of one sign grows for one direction of motion
    across the pair's stripes and that of the other for the opposite direction (Adelson &
    Bergen 1985), and nothing that stays still gives any (the static energy is its own
    channel). Unit L2 norm. Frequencies at or above ``fps / 2`` cannot tell the two
    directions apart, and one frame cannot show motion: those give no filters.

    Returns
    -------
    ndarray of shape (2 · n_usable, taps), complex128
        Rows ``+f₁, −f₁, +f₂, …`` for the usable frequencies in the order given.
    """
    usable = [float(f) for f in hz if 0 < f < fps / 2] if taps > 1 else []
    lags = np.arange(taps)
    w = np.sin(np.pi * (lags + 0.5) / taps) ** 2
    rows = []
    for f in usable:
        for sign in (1.0, -1.0):
            h = w * np.exp(sign * 2j * np.pi * f * lags / fps)
            h = h - w * (h.sum() / w.sum())
            rows.append(h / np.sqrt((np.abs(h) ** 2).sum()))
    return np.array(rows, np.complex128).reshape(len(rows), taps)


def quadrature_energy(pair: Tensor, dim: int = -1) -> Tensor:
    """Local energy ``√(even² + odd² + 1e-8)`` of responses whose (even, odd) parts lie
    along ``dim`` (size 2), which is removed; the constant keeps the gradient finite where
    both parts vanish."""
    return torch.sqrt(pair.square().sum(dim) + 1e-8)


def _inverse_dft(n: int, keep: int) -> Tensor:
    """Rows ``0 … keep−1`` of the inverse DFT matrix of length ``n``: (keep, n), complex128."""
    k = torch.arange(n, dtype=torch.float64)
    j = torch.arange(keep, dtype=torch.float64)
    return torch.exp(2j * math.pi * j[:, None] * k[None] / n) / n

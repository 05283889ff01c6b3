"""The Gabor bank of a full space-time movie model: quadrature responses filtered in time
before their energy (a learned motion-energy bank)."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import signal

from _configs import default_config
from niflow import config as cfgmod
from niflow.model.filters import GaborBank, bank_wavelengths, gabor_kernel
from niflow.model.video import CausalQuadrature, VideoNIF


def _gabor_config(space_time: str) -> cfgmod.RunConfig:
    cfg = cfgmod.candidate(default_config(3), "gabor-gaussian")
    cfg.video.space_time = space_time
    return cfg


def test_quadrature_responses_are_the_direct_complex_convolution():
    lams = bank_wavelengths(30, 2)
    bank = GaborBank(1, (30, 28), 3, lams)
    x = torch.rand(2, 1, 30, 28)
    z = bank.responses(x)
    assert z.is_complex() and z.shape == (2, 6, 30, 28)
    for o in range(3):
        for k, lam in enumerate(lams):
            kern = gabor_kernel(float(lam), 60.0 * o)
            want = signal.convolve2d(x[1, 0].numpy().astype(np.float64), kern, mode="same")
            np.testing.assert_allclose(z[1, o * 2 + k].numpy(), want, atol=2e-5)
    assert torch.allclose(bank(x), torch.sqrt(z.abs() ** 2 + 1e-8), atol=1e-6)


def test_the_quadrature_filter_is_a_causal_sum_of_past_responses_before_the_energy():
    """e_t = |z_t + Σ_l h_l z_{t−l}|, with z the direct convolutions and zeros before frame 0."""
    torch.manual_seed(0)
    lams = bank_wavelengths(20, 2)
    bank = GaborBank(1, (20, 20), 2, lams)
    layer = CausalQuadrature(bank, taps=3)
    with torch.no_grad():
        layer.past.normal_()
    x = torch.rand(2, 5, 1, 20, 20)
    got = layer(x).unflatten(0, (2, 5)).detach().numpy()
    h = layer.past.detach().numpy()  # (F, lags 2 and 1, re/im)
    h = h[..., 0] + 1j * h[..., 1]
    kernels = [gabor_kernel(float(lam), 90.0 * o) for o in range(2) for lam in lams]
    z = np.array([[[signal.convolve2d(x[b, t, 0].numpy().astype(np.float64), k, mode="same")
                    for k in kernels] for t in range(5)] for b in range(2)])
    for t in range(5):
        y = z[:, t].copy()
        for lag in (1, 2):
            if t - lag >= 0:
                y += h[None, :, 2 - lag, None, None] * z[:, t - lag]
        np.testing.assert_allclose(got[:, t], np.sqrt(np.abs(y) ** 2 + 1e-8), atol=5e-5)


def test_a_quadrature_filter_whose_phase_turns_prefers_one_direction_of_motion():
    """A grating drifting across the stripes of a channel (wavelength λ, v px per frame)
    turns its response's phase by ω·v per frame (ω = 2π/λ): with h_1 = exp(−iωv) the energy
    doubles for that direction and grows by |1 + exp(−2iωv)| for the other (closed form)."""
    lam, v = 8.0, 1.0
    bank = GaborBank(1, (48, 48), 4, np.array([lam]))  # channel 0: horizontal stripes
    layer = CausalQuadrature(bank, taps=2)
    phase = 2 * math.pi * v / lam
    with torch.no_grad():
        layer.past[0, 0] = torch.tensor([math.cos(phase), -math.sin(phase)])
    rows = torch.arange(48, dtype=torch.float32)[:, None].expand(48, 48)
    t = torch.arange(4, dtype=torch.float32)[:, None, None]

    def drifting(direction: float) -> torch.Tensor:
        return torch.cos(2 * math.pi * (rows - direction * v * t) / lam)[None, :, None]

    static = bank(drifting(1.0)[0, 3:4])[0, 0, 20:28, 20:28]
    down = layer(drifting(1.0)).unflatten(0, (1, 4))[0, 3, 0, 20:28, 20:28]
    up = layer(drifting(-1.0)).unflatten(0, (1, 4))[0, 3, 0, 20:28, 20:28]
    assert torch.allclose(down / static, torch.full_like(static, 2.0), rtol=0.03)
    null = abs(1 + complex(math.cos(2 * phase), -math.sin(2 * phase)))  # √2 here
    assert torch.allclose(up / static, torch.full_like(static, null), rtol=0.03)
    # channels whose filter stayed at zero are the static bank
    frames = drifting(1.0)
    assert torch.allclose(layer(frames)[:, 1:], bank(frames[0])[:, 1:], atol=1e-6)


def test_the_quadrature_filter_learns_from_gradients():
    """One step on a loss that only a filtered response can lower moves its past taps."""
    torch.manual_seed(0)
    full = VideoNIF(_gabor_config("full"), (1, 16, 16), {"V1": 3, "V2": 2}, 4.0)
    x = torch.rand(1, 10, 1, 16, 16)
    loss = full.drive(x)["V1"].square().mean()
    loss.backward()
    grad = full.space_time_conv["V1"].past.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0

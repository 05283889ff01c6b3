"""The temporal factor of the observation model: one haemodynamic response per voxel.

A spatial readout (Gaussian or low-rank) turns an area's features at every frame into each
voxel's neural drive ``d_v(t)``, shape (B, T, V) at the frame rate. The voxel's BOLD signal at
a volume acquired at time ``t_j`` is the drive of the frames shown before it, weighted by the
voxel's haemodynamic response function::

    ŷ_v(t_j) = (1 / fps) · Σ_{i : t_i < t_j} h_v(t_j − t_i) · d_v(t_i)

``h_v`` is a double gamma (response shape 6, undershoot shape 16) whose time scale ``s_v``
and undershoot ratio ``u_v`` are learned per voxel, ``h_v(t) = (Γ₆(t/s_v) − u_v Γ₁₆(t/s_v)) /
s_v``: two parameters that place the peak (≈ 5 s_v) and the undershoot, so the reported
latency and width mean the voxel's response and cannot turn into a multi-peaked kernel on
noisy data. Its amplitude is the spatial readout's (channel weights), so ``h_v`` has a fixed
area of 1 − u_v.

Before a run starts the drive is taken to be the voxel's ``baseline`` (a learned level, its
steady drive: frames before the first are neither seen nor blank), so the first volumes of a
run do not rise from zero while the response fills in. Lags are measured from the last frame
before each volume: with ``tr · fps`` an integer the
frame just before a volume lags by exactly ``1 / fps``; otherwise the lag of every frame is
rounded up to the next whole frame (an error below one frame, 1/fps s).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["HRFReadout", "double_gamma"]

RESPONSE_SHAPE = 6.0
UNDERSHOOT_SHAPE = 16.0
SCALE_RANGE = (0.5, 2.0)  # time scales: peaks between about 2.5 and 10 s


def _gamma_pdf(x: Tensor, k: float) -> Tensor:
    safe = torch.clamp(x, min=1e-12)
    out = torch.exp((k - 1) * torch.log(safe) - safe - math.lgamma(k))
    return torch.where(x > 0, out, torch.zeros_like(out))


def double_gamma(t: Tensor, scale: Tensor, undershoot: Tensor) -> Tensor:
    """``h(t) = (Γ₆(t/s) − u·Γ₁₆(t/s)) / s`` for lags ``t`` (L,) and per-voxel ``s``, ``u`` (V,).

    Returns
    -------
    Tensor of shape (V, L)
    """
    x = t[None, :] / scale[:, None]
    return (_gamma_pdf(x, RESPONSE_SHAPE)
            - undershoot[:, None] * _gamma_pdf(x, UNDERSHOOT_SHAPE)) / scale[:, None]


class HRFReadout(nn.Module):
    """Per-voxel haemodynamic responses mapping frame-rate drive to volumes.

    Parameters
    ----------
    n_voxels : int
    fps : float
        Frames per second of the stimulus.
    span_s : float
        Longest lag considered (seconds); 32 s holds the undershoot of slow responses.
    peak_s : float
        Initial peak latency of every voxel.

    Attributes
    ----------
    raw_scale : Parameter of shape (V,)
        Time scale ``s = lo + (hi − lo) · sigmoid(raw_scale)`` within ``SCALE_RANGE``.
    raw_undershoot : Parameter of shape (V,)
        Undershoot ratio ``u = 0.5 · sigmoid(raw_undershoot)`` (canonical: 1/6).
    baseline : Parameter of shape (V,)
        The drive before a run's first frame (0 unless initialised).
    """

    def __init__(self, n_voxels: int, fps: float, span_s: float = 32.0, peak_s: float = 5.0,
                 ) -> None:
        super().__init__()
        self.n_voxels, self.fps = int(n_voxels), float(fps)
        self.n_lags = max(1, int(math.ceil(span_s * fps)))
        self.raw_scale = nn.Parameter(torch.zeros(n_voxels))
        self.raw_undershoot = nn.Parameter(torch.zeros(n_voxels))
        self.baseline = nn.Parameter(torch.zeros(n_voxels))
        self.initialize(peak_s)

    def initialize(self, peak_s: float | Tensor = 5.0, undershoot: float = 1 / 6) -> None:
        """Start every voxel (or each, for a tensor of shape (V,)) at ``peak_s`` seconds."""
        lo, hi = SCALE_RANGE
        s = torch.as_tensor(peak_s, dtype=torch.float64) / (RESPONSE_SHAPE - 1)
        p = ((s - lo) / (hi - lo)).clamp(1e-4, 1 - 1e-4)
        with torch.no_grad():
            self.raw_scale.copy_(torch.logit(p).expand(self.n_voxels).to(self.raw_scale))
            self.raw_undershoot.fill_(math.log((2 * undershoot) / (1 - 2 * undershoot)))

    def scale(self) -> Tensor:
        lo, hi = SCALE_RANGE
        return lo + (hi - lo) * torch.sigmoid(self.raw_scale)

    def undershoot(self) -> Tensor:
        return 0.5 * torch.sigmoid(self.raw_undershoot)

    def kernel(self) -> Tensor:
        """``h_v`` at lags ``1/fps, 2/fps, …`` (the frame just before a volume first).

        Returns
        -------
        Tensor of shape (V, n_lags)
        """
        lags = torch.arange(1, self.n_lags + 1, dtype=self.raw_scale.dtype,
                            device=self.raw_scale.device) / self.fps
        return double_gamma(lags, self.scale(), self.undershoot())

    def forward(self, drive: Tensor, last_frames: Tensor) -> Tensor:
        """BOLD predictions for volumes whose last preceding frames are ``last_frames``.

        Parameters
        ----------
        drive : Tensor of shape (B, T, V)
            Neural drive at the frame rate; frame ``T − 1`` is the latest.
        last_frames : Tensor of shape (n_vol,), int
            For each volume, the index along ``T`` of the last frame shown before it. Frames
            before index 0 count as zero drive (the start of a run).

        Returns
        -------
        Tensor of shape (B, n_vol, V)
        """
        if drive.ndim != 3 or drive.shape[2] != self.n_voxels:
            raise ValueError(f"drive must have shape (B, T, {self.n_voxels}), got "
                             f"{tuple(drive.shape)}")
        b, t, v = drive.shape
        k = self.kernel().to(drive.dtype)  # (V, L): k[:, l] weighs the frame l frames back
        base = self.baseline.to(drive.dtype)
        # causal depthwise convolution: out[..., i] = Σ_l k[l] · d[i − l], with d = baseline
        # before the first frame, i.e. the baseline's full response plus the deviations'
        x = F.pad((drive - base).transpose(1, 2), (self.n_lags - 1, 0))
        out = F.conv1d(x, k.flip(1)[:, None, :], groups=v) / self.fps  # (B, V, T)
        out = out + (base * k.sum(1) / self.fps)[None, :, None]
        return out[:, :, last_frames].transpose(1, 2)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        # weights saved before the baseline existed took the drive before a run as zero
        key = prefix + "baseline"
        if key not in state_dict and prefix + "raw_scale" in state_dict:
            state_dict[key] = torch.zeros_like(state_dict[prefix + "raw_scale"])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def regularizer(self) -> Tensor:
        """No penalty: two bounded parameters per voxel are the constraint."""
        return self.raw_scale.new_zeros(())

    def peak_and_width(self, dt: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
        """Each voxel's HRF maximum (seconds after the stimulus) and full width at half
        maximum, on a ``dt`` grid.

        Returns
        -------
        peak_s, fwhm_s : ndarray of shape (V,)
        """
        with torch.no_grad():
            t = torch.arange(dt, self.n_lags / self.fps, dt, dtype=torch.float64)
            h = double_gamma(t, self.scale().double().cpu(), self.undershoot().double().cpu())
            i = torch.argmax(h, dim=1)
            peak = t[i]
            half = h >= (h.gather(1, i[:, None]) / 2)
            idx = torch.arange(t.numel())
            first = torch.where(half, idx, t.numel()).min(dim=1).values
            last = torch.where(half, idx, -1).max(dim=1).values
        return peak.numpy(), ((last - first).double() * dt).numpy()

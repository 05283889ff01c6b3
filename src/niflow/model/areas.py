"""Areas and the area graph: conv → nonlinearity → normalisation → [1×1 mix] → pooling.

Each area also carries the affine map from its grid to stimulus pixels
(``stimulus = scale · grid + offset`` on each axis, pixel centres, top-left pixel at 0), traced
through every convolution padding and pooling stride, so receptive fields come out in
stimulus coordinates.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from niflow.config import STIMULUS, AreaConfig, ConfigError
from niflow.model.filters import GaborBank, bank_wavelengths
from niflow.model.norm import BatchNorm2d


@dataclass(frozen=True)
class Geometry:
    """Shape of a feature tensor and where its grid cells sit on the stimulus.

    ``channels`` and ``grid = (H, W)``; a cell ``(i, j)`` is centred on stimulus pixel
    ``(y, x) = (scale * i + offset, scale * j + offset)``.
    """

    channels: int
    grid: tuple[int, int]
    scale: float = 1.0
    offset: float = 0.0

    def to_stimulus(self, grid_coord: Tensor | float) -> Tensor | float:
        return self.scale * grid_coord + self.offset


def _nonlinearity(name: str) -> nn.Module:
    return {
        "sigmoid": nn.Sigmoid(),
        "relu": nn.ReLU(),
        "square": _Square(),
        "abs": _Abs(),
        "softplus": nn.Softplus(),
        "tanh": nn.Tanh(),
        "elu": nn.ELU(),
        "identity": nn.Identity(),
        "relu2": _ReluSquared(),
    }[name]


class _ReluSquared(nn.Module):
    """relu(x)²: a threshold then an expansive power, as in sparse V1 responses."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x) ** 2


class _Square(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * x


class _Abs(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.abs()


class DivisiveNorm(nn.Module):
    """Divide each channel by the local mean activity of all channels plus a learned constant.

    ``y_c = g · x_c / (softplus(s) + pool_5x5(mean_c |x|))``: a contrast gain control that
    keeps squared (energy) responses in range without batch statistics. The gain ``g`` (a
    buffer, 1 unless :meth:`set_strength` changed it) keeps the output's scale when the
    constant is made large, i.e. the normalisation weak.
    """

    def __init__(self, window: int = 5) -> None:
        super().__init__()
        self.window = window
        self.log_sigma = nn.Parameter(torch.zeros(()))
        self.register_buffer("gain", torch.ones(()))

    def forward(self, x: Tensor) -> Tensor:
        drive = x.abs().mean(1, keepdim=True)
        pooled = F.avg_pool2d(drive, self.window, stride=1, padding=self.window // 2,
                              count_include_pad=False)
        return self.gain * x / (F.softplus(self.log_sigma) + pooled)

    @torch.no_grad()
    def set_strength(self, sigma: float, mean_drive: float) -> None:
        """Constant ``sigma`` and gain ``sigma + mean_drive``: an input whose pooled drive is
        its mean passes unscaled, so the constant sets only how strongly contrast is
        normalised (``sigma`` ≫ the drive: hardly at all)."""
        sigma_t = torch.tensor(float(sigma), dtype=torch.float64)
        self.log_sigma.copy_(sigma_t + torch.log(-torch.expm1(-sigma_t)))  # softplus⁻¹
        self.gain.fill_(float(sigma) + float(mean_drive))

    @torch.no_grad()
    def set_default(self) -> None:
        """Back to the constructed state: constant softplus(0), gain 1."""
        self.log_sigma.zero_()
        self.gain.fill_(1.0)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        # weights saved before the gain existed had gain 1
        state_dict.setdefault(prefix + "gain", torch.ones(()))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class Area(nn.Module):
    """One area; ``forward`` takes its sources' feature tensors in config order.

    ``heads``: a Gabor bank's temporal filters (:func:`~niflow.model.filters.motion_filters`,
    movie models only): each pair's motion-energy channels follow its static energy.
    """

    def __init__(self, cfg: AreaConfig, in_geometries: list[Geometry],
                 heads: np.ndarray | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        target = in_geometries[0]
        self.in_grid = target.grid
        in_channels = sum(g.channels for g in in_geometries)
        pad = cfg.conv_padding if cfg.filters == "learned" else 0
        # the bank keeps the grid; a dilated kernel spans dilation · (kernel − 1) + 1 cells
        kernel = cfg.dilation * (cfg.kernel - 1) + 1 if cfg.filters == "learned" else 1
        conv_grid = tuple(n + 2 * pad - kernel + 1 for n in target.grid)
        if min(conv_grid) < 1:
            raise ConfigError(
                f"area {cfg.name!r}: kernel {cfg.kernel} with padding {pad} is larger than its "
                f"input grid {target.grid}")
        pool = cfg.pool if cfg.pool_type != "none" else 1
        out_grid = tuple(n // pool for n in conv_grid)
        if min(out_grid) < 1:
            raise ConfigError(
                f"area {cfg.name!r}: pooling {pool} shrinks grid {conv_grid} to zero")
        if cfg.filters == "learned":
            if heads is not None and len(heads):
                raise ConfigError(f"area {cfg.name!r}: only a Gabor bank has temporal heads")
            self.conv: nn.Module = nn.Conv2d(in_channels, cfg.channels, cfg.kernel,
                                             padding=pad, dilation=cfg.dilation)
        else:
            lams = bank_wavelengths(target.grid[1], cfg.scales, cfg.wavelength_min,
                                    cfg.wavelength_max)
            self.conv = GaborBank(in_channels, target.grid, cfg.orientations, lams,
                                  learn=cfg.filters == "gabor_init", heads=heads)
        channels = self.conv.out_channels if isinstance(self.conv, GaborBank) else cfg.channels
        # per-channel gain (set from training stimuli by calibrate): energies at different
        # wavelengths differ in scale, and the normalisation pools over all of them
        self.register_buffer("gain", torch.ones(channels))
        self.nonlin = _nonlinearity(cfg.nonlinearity)
        self.norm: nn.Module = {
            "none": nn.Identity(),
            "batch": BatchNorm2d(channels),  # global-batch statistics under DDP
            "divisive": DivisiveNorm(),
        }[cfg.norm]
        if cfg.mix_channels > 0:
            self.mix: nn.Module = nn.Sequential(
                nn.Conv2d(channels, cfg.mix_channels, 1), _nonlinearity(cfg.mix_nonlinearity))
        else:
            self.mix = nn.Identity()
        self.pool: nn.Module = nn.Identity()
        if pool > 1:
            self.pool = nn.AvgPool2d(pool) if cfg.pool_type == "avg" else nn.MaxPool2d(pool)
        # conv output i is centred on input i - pad + (k-1)/2; pool output i on pool*i + (pool-1)/2
        conv_offset = (kernel - 1) / 2 - pad
        scale = target.scale * pool
        offset = target.offset + target.scale * (conv_offset + (pool - 1) / 2)
        out_channels = cfg.mix_channels if cfg.mix_channels > 0 else channels
        self.geometry = Geometry(out_channels, (int(out_grid[0]), int(out_grid[1])),
                                 scale, offset)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if isinstance(self.conv, nn.Conv2d):
            nn.init.kaiming_normal_(self.conv.weight, nonlinearity="relu")
            nn.init.zeros_(self.conv.bias)

    @torch.no_grad()
    def calibrate_gain(self, outputs: Iterable[Tensor]) -> None:
        """Set each channel's gain to one over its mean ``|output|`` over ``outputs``, the
        filtering stage's outputs (each (N, C, H, W)) on training stimuli."""
        total, count = None, 0
        for x in outputs:
            part = x.abs().sum((0, 2, 3))
            total = part if total is None else total + part
            count += x.shape[0] * x.shape[2] * x.shape[3]
        if total is None:
            return
        mean = total / max(count, 1)
        self.gain.copy_(torch.where(mean > 0, 1.0 / mean.clamp_min(1e-12), 1.0))

    def kernel_weights(self) -> Tensor:
        """The filtering stage's kernels (out, in, k, k); a Gabor bank gives its even parts,
        weighted by its input-channel weights."""
        if isinstance(self.conv, nn.Conv2d):
            return self.conv.weight
        return self.conv.kernels[:, :1] * self.conv.colour[None, :, None, None]

    def _gather(self, inputs: list[Tensor]) -> Tensor:
        if len(inputs) == 1:
            return inputs[0]
        h, w = self.in_grid
        resized = [x if tuple(x.shape[-2:]) == (h, w) else _resample(x, (h, w)) for x in inputs]
        return torch.cat(resized, dim=1)

    def forward(self, inputs: list[Tensor], bank: Tensor | None = None) -> Tensor:
        """``bank``: this area's filter-bank output, when precomputed (fixed banks only)."""
        x = self.conv(self._gather(inputs)) if bank is None else bank
        x = x * self.gain[:, None, None]
        x = self.norm(self.nonlin(x))
        return self.pool(self.mix(x))


def input_pool(image_size: tuple[int, int], max_px: int) -> int:
    """The smallest whole factor that brings ``image_size`` (H, W) within ``max_px`` pixels
    on each side (1 when it is already, or when ``max_px`` is 0)."""
    side = max(int(image_size[0]), int(image_size[1]))
    return 1 if max_px <= 0 or side <= max_px else -(-side // int(max_px))


def pooled_stimulus(x: Tensor, k: int) -> Tensor:
    """``x`` (..., H, W) averaged over ``k`` × ``k`` blocks, (..., ceil(H/k), ceil(W/k));
    blocks cut by the lower or right edge average the pixels they hold."""
    if k == 1:
        return x
    lead = x.shape[:-2]
    y = F.avg_pool2d(x.reshape(-1, 1, *x.shape[-2:]), k, ceil_mode=True)
    return y.reshape(*lead, *y.shape[-2:])


def _resample(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bring a feature tensor (B, C, h, w) to ``size``: area-average down, bilinear up."""
    if x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class AreaGraph(nn.Module):
    """A DAG of areas fed by the stimulus, evaluated in configuration order.

    Parameters
    ----------
    areas : list of AreaConfig
        Areas in topological order (each source is ``"stimulus"`` or an earlier area).
    in_channels : int
        Stimulus channels.
    image_size : tuple of int
        Stimulus ``(height, width)``.
    heads : dict of str to ndarray of shape (M, taps), complex, optional
        Temporal heads of Gabor-bank areas (movie models), by area.
    input_pool : int, optional
        The stimulus reaches the areas area-averaged over ``input_pool`` × ``input_pool``
        pixel blocks (:func:`pooled_stimulus`); geometries stay in stimulus pixels.
    """

    def __init__(self, areas: list[AreaConfig], in_channels: int,
                 image_size: tuple[int, int],
                 heads: dict[str, np.ndarray] | None = None, input_pool: int = 1) -> None:
        super().__init__()
        k = int(input_pool)
        # block i averages pixels k·i … k·i + k − 1 (the last block may be cut by the edge)
        self.geometries: dict[str, Geometry] = {STIMULUS: Geometry(
            in_channels, (-(-int(image_size[0]) // k), -(-int(image_size[1]) // k)),
            float(k), (k - 1) / 2)}
        self.areas = nn.ModuleDict()
        for cfg in areas:
            area = Area(cfg, [self.geometries[s] for s in cfg.sources],
                        (heads or {}).get(cfg.name))
            self.areas[cfg.name] = area
            self.geometries[cfg.name] = area.geometry

    def fixed_banks(self) -> dict[str, Area]:
        """Areas whose filtering stage is a fixed bank on the stimulus alone."""
        return {name: area for name, area in self.areas.items()
                if isinstance(area.conv, GaborBank) and not area.conv.learn
                and not area.conv.colour.requires_grad}

    def forward(self, stimulus: Tensor, banks: dict[str, Tensor] | None = None,
                ) -> dict[str, Tensor]:
        """Return every area's feature tensor, keyed by area name.

        Parameters
        ----------
        stimulus : Tensor of shape (B, in_channels, height, width)
        banks : dict of str to Tensor, optional
            Precomputed outputs of fixed filter banks (:meth:`fixed_banks`), by area.
        """
        feats: dict[str, Tensor] = {STIMULUS: stimulus}
        banks = banks or {}
        for name, area in self.areas.items():
            feats[name] = area([feats[s] for s in area.cfg.sources], banks.get(name))
        del feats[STIMULUS]
        return feats

    @torch.no_grad()
    def calibrate(self, stimulus: Tensor, batch: int = 64,
                  skip: Collection[str] = ()) -> None:
        """Scale each channel of every Gabor-bank area (but those in ``skip``) to unit mean
        energy over ``stimulus`` (B, C, H, W), the standardised training stimuli. Learned
        areas keep gain 1."""
        for name, area in self.areas.items():
            if isinstance(area.conv, nn.Conv2d) or name in skip:
                continue
            area.calibrate_gain(area.conv(stimulus[i:i + batch])
                                for i in range(0, stimulus.shape[0], batch))

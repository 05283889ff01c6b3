"""The whole NIF model: input normalisation → area graph → one observation model per area."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from niflow.config import STIMULUS, RunConfig
from niflow.model.areas import AreaGraph, Geometry, input_pool, pooled_stimulus
from niflow.model.gaussian import (
    GaussianReadout,
    fit_channel_weights,
    search_prfs_features,
    search_step,
)
from niflow.model.readout import LowRankReadout
from niflow.model.refit import MIN_ROWS_PER_CHANNEL, REFIT_ALPHAS, ChannelMoments, ridge_gcv

INIT_FIT_ROWS = 1024  # training rows the Gaussian readouts' initial regression looks at


def _finer_candidates(source: Geometry, area: Geometry) -> bool:
    """Whether :func:`search_prfs_features` tries centres closer together (stimulus pixels)
    on ``source``'s grid than on ``area``'s."""
    return source.scale * search_step(source.grid) < area.scale * search_step(area.grid)


class NIFModel(nn.Module):
    """Predict voxel responses of several areas from a stimulus.

    Parameters
    ----------
    config : RunConfig
        Area graph and readout settings.
    image_shape : tuple of int
        ``(channels, height, width)`` of one stimulus.
    n_voxels : dict of str to int
        Voxels per area with data; areas without voxels are hidden (computed, not read out).
    heads : dict of str to ndarray of shape (M, taps), complex, optional
        Temporal heads of Gabor-bank areas, by area (a movie model's spatial part,
        :class:`~niflow.model.video.VideoNIF`; a single image is a movie of one frame).

    Notes
    -----
    ``pixel_mean`` and ``pixel_std`` (buffers, scalars) standardise the stimulus; set them from
    training stimuli with :meth:`set_input_stats` so that predictions on new data use the same
    transform.
    """

    def __init__(self, config: RunConfig, image_shape: tuple[int, int, int],
                 n_voxels: dict[str, int], heads: dict[str, np.ndarray] | None = None,
                 ) -> None:
        super().__init__()
        names = config.area_names()
        unknown = [a for a in n_voxels if a not in names]
        if unknown:
            raise ValueError(
                f"responses have area(s) {unknown} that the model config does not define; "
                f"model areas are {names}")
        self.config = config
        self.image_shape = tuple(int(s) for s in image_shape)
        self.input_pool = input_pool(self.image_shape[1:], config.data.input_max_px)
        self.graph = AreaGraph(config.areas, self.image_shape[0], self.image_shape[1:],
                               heads, self.input_pool)
        self.readouts = nn.ModuleDict({area: self._readout(area, n)
                                       for area, n in n_voxels.items()})
        self.register_buffer("pixel_mean", torch.zeros(()))
        self.register_buffer("pixel_std", torch.ones(()))

    def _readout(self, area: str, n: int) -> nn.Module:
        ro, geo = self.config.readout, self.graph.geometries[area]
        if ro.kind == "gaussian":
            return GaussianReadout(n, geo.channels, geo.grid)
        return LowRankReadout(n, geo.channels, geo.grid, ro.rank, ro.init_spatial_std,
                              int(ro.map_chunk_mb * 2**20))

    @property
    def areas_with_voxels(self) -> list[str]:
        return list(self.readouts.keys())

    def geometry(self, area: str) -> Geometry:
        return self.graph.geometries[area]

    def set_input_stats(self, mean: float, std: float) -> None:
        self.pixel_mean.fill_(float(mean))
        self.pixel_std.fill_(float(std) if std > 0 else 1.0)

    def standardize(self, stimulus: Tensor) -> Tensor:
        """The stimulus (..., H, W) as the first area sees it: (stimulus − pixel_mean) /
        pixel_std, area-averaged over ``input_pool`` × ``input_pool`` blocks."""
        return pooled_stimulus((stimulus - self.pixel_mean) / self.pixel_std, self.input_pool)

    def bank_bytes(self, n: int) -> int:
        """Bytes of the fixed filter banks' outputs for ``n`` stimuli (float32)."""
        return sum(n * area.conv.out_channels * area.in_grid[0] * area.in_grid[1] * 4
                   for area in self.graph.fixed_banks().values())

    @torch.no_grad()
    def fixed_banks(self, stimulus: Tensor, batch: int = 32) -> dict[str, Tensor]:
        """Outputs {area: (n, F, H, W)} of the fixed filter banks (they depend on the
        stimulus alone) for ``stimulus`` (n, C, H, W) as read; pass them back to
        :meth:`forward` as ``banks`` to skip recomputing them."""
        banks = self.graph.fixed_banks()
        out: dict[str, list[Tensor]] = {a: [] for a in banks}
        for i in range(0, stimulus.shape[0], batch):
            x = self.standardize(stimulus[i:i + batch])
            for a, area in banks.items():
                out[a].append(area.conv(x))
        return {a: torch.cat(p) for a, p in out.items() if p}

    def features(self, stimulus: Tensor, include_stimulus: bool = False,
                 banks: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Feature tensors of every area, each (B, C_area, H_area, W_area).

        With ``include_stimulus`` the standardised stimulus is added under ``"stimulus"``;
        ``banks``: precomputed :meth:`fixed_banks` outputs of these stimuli.
        """
        expected = self.image_shape
        if stimulus.dim() != 4 or tuple(stimulus.shape[1:]) != expected:
            raise ValueError(
                f"model expects stimuli of shape (B, {expected[0]}, {expected[1]}, "
                f"{expected[2]}), got {tuple(stimulus.shape)}")
        x = self.standardize(stimulus)
        feats = self.graph(x, banks)
        if include_stimulus:
            feats[STIMULUS] = x
        return feats

    def forward(self, stimulus: Tensor, banks: dict[str, Tensor] | None = None,
                ) -> dict[str, Tensor]:
        """Predicted responses per area.

        Parameters
        ----------
        stimulus : Tensor of shape (B, channels, height, width)
        banks : dict of str to Tensor, optional
            :meth:`fixed_banks` of ``stimulus``, if already computed.

        Returns
        -------
        dict of str to Tensor of shape (B, n_voxels[area])
        """
        feats = self.features(stimulus, banks=banks)
        return {area: readout(feats[area]) for area, readout in self.readouts.items()}

    @torch.no_grad()
    def contrast_prior(self, stim: Tensor, responses: dict[str, Tensor]) -> dict[str, Tensor]:
        """Where each voxel looks, from data: correlation with local stimulus contrast.

        Local RMS contrast of the (standardised) stimulus is averaged onto each area's grid;
        each voxel's map is the positive part of its correlation with it over ``stim``.

        Parameters
        ----------
        stim : Tensor of shape (n, channels, height, width)
        responses : dict of str to Tensor of shape (n, n_voxels)

        Returns
        -------
        dict of str to Tensor of shape (n_voxels, H, W)
        """
        x = self.standardize(stim)
        energy = ((x - x.mean(0, keepdim=True)) ** 2).mean(1, keepdim=True)
        out = {}
        for area, resp in responses.items():
            grid = self.graph.geometries[area].grid
            local = torch.nn.functional.adaptive_avg_pool2d(energy, grid).sqrt().flatten(1)
            local = (local - local.mean(0)) / local.std(0).clamp_min(1e-8)
            z = (resp - resp.mean(0)) / resp.std(0).clamp_min(1e-8)
            corr = (z.t() @ local) / max(stim.shape[0] - 1, 1)  # (V, H·W)
            out[area] = corr.clamp_min(0).reshape(-1, *grid)
        return out

    def initialize_readouts(self, stim: Tensor, responses: dict[str, Tensor]) -> None:
        """Start every readout from the training data ``stim`` (n, C, H, W) and z-scored
        ``responses`` {area: (n, V)}.

        Gabor-bank areas first get their channel gains (:meth:`AreaGraph.calibrate`).
        Low-rank maps start at the voxels' :meth:`contrast_prior`. A Gaussian readout starts
        at the best of a grid search over centres and sizes by ridge regression on the
        area's pooled channels (:func:`search_prfs_features`), with those channel weights: a
        fitted linear pRF model that training then refines, instead of a random start that
        noisy data cannot correct.
        """
        was_training = self.training
        self.eval()
        x = self.standardize(stim)
        self.graph.calibrate(x)
        self.initialize_lowrank(stim, responses)
        gaussian = [a for a, r in self.readouts.items() if isinstance(r, GaussianReadout)]
        if gaussian:
            feats = self.init_features(x)
            for area in gaussian:
                y = responses[area][:INIT_FIT_ROWS].to(feats[area].dtype)
                centre, sigma, _ = self.searched_prfs(area, feats, y)
                self.initialize_gaussian(area, feats[area], y, centre, sigma)
        self.train(was_training)

    @torch.no_grad()
    def initialize_lowrank(self, stim: Tensor, responses: dict[str, Tensor]) -> None:
        """Start the low-rank readouts' maps at their voxels' :meth:`contrast_prior`."""
        lowrank = [a for a, r in self.readouts.items() if isinstance(r, LowRankReadout)]
        if lowrank:
            prior = self.contrast_prior(stim, {a: responses[a] for a in lowrank})
            for area in lowrank:
                self.readouts[area].initialize(spatial_prior=prior[area] ** 2)

    @torch.no_grad()
    def init_features(self, x: Tensor) -> dict[str, Tensor]:
        """Every area's features of the first ``INIT_FIT_ROWS`` standardised stimuli."""
        n = min(x.shape[0], INIT_FIT_ROWS)
        parts: dict[str, list[Tensor]] = {a: [] for a in self.graph.areas}
        for i in range(0, n, 32):
            for a, f in self.graph(x[i:min(i + 32, n)]).items():
                parts[a].append(f)
        return {a: torch.cat(p) for a, p in parts.items()}

    @torch.no_grad()
    def initialize_gaussian(self, area: str, features: Tensor, responses: Tensor,
                            centre: Tensor, sigma: Tensor) -> None:
        """Place ``area``'s Gaussian pRFs at ``centre`` (V, 2) and ``sigma`` (V,) and fit
        their channel weights to ``responses`` (n, V) on ``features`` (n, C, H, W)."""
        readout = self.readouts[area]
        readout.initialize(centre=centre, sigma=sigma)
        weight, bias = fit_channel_weights(readout.pooled(features), responses)
        readout.initialize(centre=centre, sigma=sigma, weight=weight, bias=bias)

    def searched_prfs(self, area: str, feats: dict[str, Tensor], y: Tensor,
                      ) -> tuple[Tensor, Tensor, Tensor]:
        """Best pRF per voxel on the area's own grid, searched on its own features and on
        those of the areas feeding it (a downstream area's random initial channels locate
        its voxels worse than its sources' features do), converted through the geometry.

        A source whose search tries centres closer together (in stimulus pixels) than the
        area's own is searched on its own grid, so that a centre between two of the area's
        cells is found as such (24-px movies: V1's 2-px cells under V2's 4-px cells; V2's
        centres came 0.8 px closer to the truth on two of three 24-minute simulations, and
        training did not undo it). Otherwise the source is averaged onto the area's grid
        first (56-px images: V1's search steps over every other of its 2-px cells, as far
        apart as V2's cells; searching it unaveraged there lost up to 0.03 in median r).

        Returns
        -------
        centre : Tensor of shape (V, 2)
        sigma : Tensor of shape (V,)
        explained : Tensor of shape (V,)
            The winner's in-sample fraction of variance explained.
        """
        own = self.graph.geometries[area]
        best_c, best_s, best_e = None, None, None
        for name in [area, *self._upstream(area)]:
            f, geo = feats[name], self.graph.geometries[name]
            if name != area and geo.grid != own.grid and not _finer_candidates(geo, own):
                # on the area's own grid: its cells average the finer cells they cover, and
                # the search costs what the area's own does
                f, geo = F.adaptive_avg_pool2d(f, own.grid), own
            c, s, e = search_prfs_features(f, y)
            c = ((geo.scale * c + geo.offset) - own.offset) / own.scale
            s = s * geo.scale / own.scale
            if best_e is None:
                best_c, best_s, best_e = c, s, e
                continue
            better = e > best_e
            best_c = torch.where(better[:, None], c, best_c)
            best_s = torch.where(better, s, best_s)
            best_e = torch.maximum(e, best_e)
        h, w = own.grid
        best_c[:, 0].clamp_(-0.5, h - 0.5)
        best_c[:, 1].clamp_(-0.5, w - 0.5)
        return best_c, best_s.clamp_min(0.2), best_e

    @torch.no_grad()
    def refit_readouts(self, batches: Iterable[tuple[dict[str, Tensor], dict[str, Tensor]]],
                       n_rows: int, alphas: tuple[float, ...] = REFIT_ALPHAS,
                       min_rows_per_channel: float = MIN_ROWS_PER_CHANNEL,
                       ) -> dict[str, Tensor]:
        """Refit every Gaussian readout's channel weights and bias in closed form.

        With the core and the pRFs as trained, each voxel's weights are the ridge regression
        of its responses on its pooled channels, the penalty chosen per voxel by GCV
        (:func:`niflow.model.refit.ridge_gcv`). Low-rank readouts are left as they are, and
        so is a Gaussian readout with fewer than ``min_rows_per_channel`` rows per channel
        of its area; when no readout is left, ``batches`` is not read.

        Parameters
        ----------
        batches : iterable of (dict, dict of str to Tensor of shape (B, n_voxels[area]))
            Model inputs ``{"stimulus": (B, channels, height, width)}``, optionally with
            ``"banks"`` (:meth:`fixed_banks` of those stimuli), as
            :meth:`niflow.train.loop.Batches.batches` yields them, and z-scored responses.
        n_rows : int
            Rows that ``batches`` holds in all.

        Returns
        -------
        dict of str to Tensor of shape (n_voxels,)
            Per refitted area, every voxel's chosen relative penalty; empty when no
            readout was refitted.
        """
        areas = [a for a, r in self.readouts.items() if isinstance(r, GaussianReadout)
                 and n_rows >= min_rows_per_channel * r.channels]
        if not areas:
            return {}
        device = next(self.parameters()).device
        moments = {a: ChannelMoments.zeros(self.readouts[a].n_voxels,
                                           self.readouts[a].channels, device) for a in areas}
        was_training = self.training
        self.eval()
        for inputs, y in batches:
            feats = self.features(inputs["stimulus"], banks=inputs.get("banks"))
            for a in areas:
                moments[a].add(self.readouts[a].pooled(feats[a]), y[a])
        self.train(was_training)
        chosen = {}
        for a in areas:
            if moments[a].n != n_rows:
                raise ValueError(f"refit_readouts: batches held {moments[a].n} rows, "
                                 f"n_rows says {n_rows}")
            ro = self.readouts[a]
            weight, bias, alpha = ridge_gcv(moments[a], alphas)
            ro.weight.copy_(weight.to(ro.weight.dtype))
            ro.bias.copy_(bias.to(ro.bias.dtype))
            chosen[a] = alpha.cpu()
        return chosen

    def _upstream(self, area: str) -> list[str]:
        """Areas that feed ``area``, directly or not (the stimulus excluded)."""
        seen: list[str] = []
        stack = [s for s in self.graph.areas[area].cfg.sources if s != STIMULUS]
        while stack:
            name = stack.pop()
            if name not in seen:
                seen.append(name)
                stack += [s for s in self.graph.areas[name].cfg.sources if s != STIMULUS]
        return seen

    def regularizer(self) -> Tensor:
        terms = [r.regularizer(self.config.readout.l1_channels) for r in self.readouts.values()]
        return torch.stack(terms).sum()

    def parameter_groups(self, lr: float) -> list[dict]:
        """Adam parameter groups: core, readout spatial logits, other readout parameters."""
        spatial, other = [], []
        for r in self.readouts.values():
            if isinstance(r, GaussianReadout):
                spatial += [r.centre, r.log_sigma]
                other += [r.weight, r.bias]
            else:
                spatial += [r.uy, r.ux]
                other += [r.amp, r.weight, r.bias]
        ro = self.config.readout
        return [
            {"params": [p for p in self.graph.parameters() if p.requires_grad], "lr": lr,
             "name": "core"},
            {"params": spatial, "lr": lr * ro.spatial_lr_scale, "name": "readout_spatial"},
            {"params": other, "lr": lr * ro.lr_scale, "name": "readout"},
        ]

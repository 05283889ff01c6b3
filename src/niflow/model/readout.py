"""Low-rank observation model: how each voxel reads its area's feature tensor.

For voxel ``v``, rank component ``k``, channel ``c`` and grid position ``(y, x)``::

    ŷ_v = b_v + Σ_k softplus(a_vk) · Σ_{c,y,x} softmax_y(uy_vk)[y] · softmax_x(ux_vk)[x]
                                              · w_cv · U[c, y, x]

The rank-weighted spatial map ``M_v = Σ_k softplus(a_vk) · uy_vk ⊗ ux_vk`` does not depend on
the stimulus, so the cheapest order for a batch is: build ``M`` once (V·K·H·W), contract the
features with it in one matrix product (B·C·H·W·V), then weight channels (B·C·V). No tensor of
size batch × channels × grid × voxels is ever built; the largest intermediate is (B, C, V).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint


def check_features(features: Tensor, channels: int, grid: tuple[int, int]) -> None:
    """Raise ``ValueError`` (with the shapes) unless ``features`` is (B, channels, *grid)."""
    if features.dim() != 4 or tuple(features.shape[1:]) != (channels, *grid):
        raise ValueError(f"readout expects features of shape (B, {channels}, {grid[0]}, "
                         f"{grid[1]}), got {tuple(features.shape)}")


class LowRankReadout(nn.Module):
    """Observation model for the voxels of one area.

    Parameters
    ----------
    n_voxels : int
        Number of voxels ``V`` read from this area.
    channels : int
        Channels ``C`` of the area's feature tensor.
    grid : tuple of int
        ``(H, W)`` of the area's feature tensor.
    rank : int
        Spatial components ``K`` per voxel.
    init_spatial_std : float
        Standard deviation of the initial spatial logits (0 = uniform maps).
    map_chunk_bytes : int
        Largest dense map tensor (V, H·W) built at once; 0 = never chunk.

    Attributes
    ----------
    uy : Parameter of shape (V, K, H)
        Row logits; ``softmax`` over ``H``.
    ux : Parameter of shape (V, K, W)
        Column logits; ``softmax`` over ``W``.
    amp : Parameter of shape (V, K)
        Amplitude logits; ``softplus`` gives each component's non-negative weight.
    weight : Parameter of shape (C, V)
        Channel weights ``w_cv`` (the reference's ``Uc``).
    bias : Parameter of shape (V,)
        One bias per voxel, outside the rank sum.
    """

    def __init__(self, n_voxels: int, channels: int, grid: tuple[int, int], rank: int = 2,
                 init_spatial_std: float = 0.1, map_chunk_bytes: int = 256 * 2**20) -> None:
        super().__init__()
        if n_voxels < 1 or channels < 1 or rank < 1 or min(grid) < 1:
            raise ValueError(
                f"readout needs positive sizes, got n_voxels={n_voxels}, channels={channels}, "
                f"grid={grid}, rank={rank}")
        self.n_voxels, self.channels, self.rank = n_voxels, channels, rank
        self.grid = (int(grid[0]), int(grid[1]))
        h, w = self.grid
        self.uy = nn.Parameter(torch.empty(n_voxels, rank, h))
        self.ux = nn.Parameter(torch.empty(n_voxels, rank, w))
        self.amp = nn.Parameter(torch.empty(n_voxels, rank))
        self.weight = nn.Parameter(torch.empty(channels, n_voxels))
        self.bias = nn.Parameter(torch.empty(n_voxels))
        self.init_spatial_std = init_spatial_std
        self.map_chunk_bytes = map_chunk_bytes
        self.initialize()

    def initialize(self, mean_response: Tensor | None = None,
                   spatial_prior: Tensor | None = None) -> None:
        """Reset parameters.

        Parameters
        ----------
        mean_response : Tensor of shape (V,), optional
            Initial bias (zero otherwise).
        spatial_prior : Tensor of shape (V, H, W), optional
            Non-negative map of where each voxel probably looks (e.g. its correlation with
            local stimulus contrast); the row and column logits start at the log of its
            marginals, so training refines a plausible receptive field instead of having to
            find one from uniform maps, where letter-shaped stimuli offer many wrong minima.

        Amplitudes start at softplus⁻¹(1/K) so the initial map sums to one whatever the rank;
        channel weights are scaled so unit-variance channels give unit-variance predictions.
        """
        with torch.no_grad():
            nn.init.normal_(self.uy, std=self.init_spatial_std)
            nn.init.normal_(self.ux, std=self.init_spatial_std)
            if spatial_prior is not None:
                if tuple(spatial_prior.shape) != (self.n_voxels, *self.grid):
                    raise ValueError(
                        f"spatial_prior must have shape ({self.n_voxels}, {self.grid[0]}, "
                        f"{self.grid[1]}), got {tuple(spatial_prior.shape)}")
                p = spatial_prior.clamp_min(0).to(self.uy.dtype)
                p = p / p.sum((1, 2), keepdim=True).clamp_min(1e-12)
                floor_y, floor_x = 0.05 / self.grid[0], 0.05 / self.grid[1]
                self.uy.add_(torch.log(p.sum(2) + floor_y)[:, None, :])
                self.ux.add_(torch.log(p.sum(1) + floor_x)[:, None, :])
            self.amp.fill_(math.log(math.expm1(1.0 / self.rank)))
            nn.init.normal_(self.weight, std=1.0 / math.sqrt(self.channels))
            if mean_response is None:
                self.bias.zero_()
            else:
                self.bias.copy_(torch.as_tensor(mean_response, dtype=self.bias.dtype))

    def spatial_factors(self) -> tuple[Tensor, Tensor, Tensor]:
        """Return ``(amplitudes (V, K), row maps (V, K, H), column maps (V, K, W))``."""
        return F.softplus(self.amp), torch.softmax(self.uy, -1), torch.softmax(self.ux, -1)

    def spatial_map(self) -> Tensor:
        """Rank-weighted spatial map ``M`` of shape (V, H, W)."""
        a, py, px = self.spatial_factors()
        return torch.einsum("vk,vky,vkx->vyx", a, py, px)

    def _pooled(self, flat: Tensor, start: int, stop: int) -> Tensor:
        """Features (B, C, H·W) contracted with voxels start:stop's maps → (B, C, stop-start)."""
        a = F.softplus(self.amp[start:stop])
        py = torch.softmax(self.uy[start:stop], -1)
        px = torch.softmax(self.ux[start:stop], -1)
        spatial = torch.einsum("vk,vky,vkx->vyx", a, py, px).reshape(stop - start, -1)
        return torch.matmul(flat, spatial.t())

    def voxels_per_chunk(self, element_size: int = 4) -> int:
        """How many voxels' dense maps fit in ``map_chunk_bytes`` (all of them if it is 0)."""
        if self.map_chunk_bytes <= 0:
            return self.n_voxels
        per_voxel = self.grid[0] * self.grid[1] * element_size
        return max(1, min(self.n_voxels, int(self.map_chunk_bytes // per_voxel)))

    def forward(self, features: Tensor) -> Tensor:
        """Predict voxel responses.

        The dense maps of all voxels are built at once when they fit in ``map_chunk_bytes``;
        beyond that, voxels are processed in blocks whose maps are rebuilt during the backward
        pass (activation checkpointing), so memory stays flat in the number of voxels.

        Parameters
        ----------
        features : Tensor of shape (B, C, H, W)

        Returns
        -------
        Tensor of shape (B, V)
        """
        check_features(features, self.channels, self.grid)
        b = features.shape[0]
        flat = features.reshape(b, self.channels, self.grid[0] * self.grid[1])
        chunk = self.voxels_per_chunk(features.element_size())
        if chunk >= self.n_voxels:
            pooled = self._pooled(flat, 0, self.n_voxels)  # (B, C, V)
        else:
            parts = []
            for start in range(0, self.n_voxels, chunk):
                stop = min(start + chunk, self.n_voxels)
                if torch.is_grad_enabled():
                    parts.append(checkpoint(self._pooled, flat, start, stop,
                                            use_reentrant=False))
                else:
                    parts.append(self._pooled(flat, start, stop))
            pooled = torch.cat(parts, dim=-1)
        return torch.einsum("bcv,cv->bv", pooled, self.weight) + self.bias

    def regularizer(self, l1_channels: float = 0.0) -> Tensor:
        """Penalty added to the loss: L1 on channel weights, averaged over voxels."""
        if l1_channels == 0.0:
            return self.weight.new_zeros(())
        return l1_channels * self.weight.abs().sum(0).mean()

    def extra_repr(self) -> str:
        return (f"n_voxels={self.n_voxels}, channels={self.channels}, grid={self.grid}, "
                f"rank={self.rank}")

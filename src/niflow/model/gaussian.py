"""Gaussian pRF observation model: each voxel reads its area through one isotropic Gaussian.

For voxel ``v`` with centre ``(μy_v, μx_v)`` and size ``σ_v`` (grid cells), channel ``c``::

    ŷ_v = b_v + Σ_c w_cv · Σ_{y,x} g(y; μy_v, σ_v) · g(x; μx_v, σ_v) · U[c, y, x]

    g(i; μ, σ) = Φ((i + ½ − μ) / σ) − Φ((i − ½ − μ) / σ)

``g`` is the mass of a Gaussian over grid cell ``i``: the map is exact for pRFs smaller than a
cell (a point-sampled Gaussian would vanish between cell centres and lose its gradient), and
it sums to one over the infinite plane, so a voxel whose pRF extends past the border reads
less of the image instead of being renormalised onto it. A voxel has ``3 + C + 1``
parameters instead of the low-rank readout's ``K·(H + W + 1) + C + 1``: the constraint the
field uses for small, noisy data sets, and one whose size parameter means the receptive field.

Like :class:`~niflow.model.readout.LowRankReadout`, the dense maps (V, H·W) are built once per
batch and contracted with the features in one matrix product.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from niflow.model.readout import check_features

SIGMA_MIN = 0.15  # grid cells: below this the map is one cell whatever σ is
SIGMAS_SEARCHED = (0.35, 0.7, 1.0, 1.4, 2.0, 2.8, 4.0, 5.6)  # grid cells, initial search


def _cell_mass(centre: Tensor, sigma: Tensor, n: int) -> Tensor:
    """Gaussian mass over cells ``0..n-1``: (V, n) for centres and sizes of shape (V,)."""
    edges = torch.arange(n + 1, dtype=centre.dtype, device=centre.device) - 0.5
    z = (edges[None, :] - centre[:, None]) / (sigma[:, None] * math.sqrt(2.0))
    cdf = 0.5 * torch.erf(z)
    return cdf[:, 1:] - cdf[:, :-1]


class GaussianReadout(nn.Module):
    """Observation model with one Gaussian pRF per voxel.

    Parameters
    ----------
    n_voxels : int
    channels : int
        Channels ``C`` of the area's feature tensor.
    grid : tuple of int
        ``(H, W)`` of the area's feature tensor.

    Attributes
    ----------
    centre : Parameter of shape (V, 2)
        ``(μy, μx)`` in grid cells (cell centres at integers).
    log_sigma : Parameter of shape (V,)
        ``σ = SIGMA_MIN + exp(log_sigma)`` in grid cells.
    weight : Parameter of shape (C, V)
    bias : Parameter of shape (V,)
    """

    def __init__(self, n_voxels: int, channels: int, grid: tuple[int, int]) -> None:
        super().__init__()
        if n_voxels < 1 or channels < 1 or min(grid) < 1:
            raise ValueError(f"readout needs positive sizes, got n_voxels={n_voxels}, "
                             f"channels={channels}, grid={grid}")
        self.n_voxels, self.channels = n_voxels, channels
        self.grid = (int(grid[0]), int(grid[1]))
        self.centre = nn.Parameter(torch.empty(n_voxels, 2))
        self.log_sigma = nn.Parameter(torch.empty(n_voxels))
        self.weight = nn.Parameter(torch.empty(channels, n_voxels))
        self.bias = nn.Parameter(torch.empty(n_voxels))
        self.initialize()

    def initialize(self, centre: Tensor | None = None, sigma: Tensor | None = None,
                   weight: Tensor | None = None, bias: Tensor | None = None) -> None:
        """Set parameters; anything not given is reset (centres at the grid centre, σ of
        two cells, channel weights ~ N(0, 1/C), bias 0).

        Parameters
        ----------
        centre : Tensor of shape (V, 2), optional
            ``(μy, μx)`` in grid cells.
        sigma : Tensor of shape (V,), optional
            Sizes in grid cells (> ``SIGMA_MIN``).
        weight : Tensor of shape (C, V), optional
        bias : Tensor of shape (V,), optional
        """
        h, w = self.grid
        with torch.no_grad():
            if centre is None:
                self.centre[:, 0] = (h - 1) / 2
                self.centre[:, 1] = (w - 1) / 2
            else:
                self.centre.copy_(torch.as_tensor(centre, dtype=self.centre.dtype))
            s = (torch.full((self.n_voxels,), 2.0) if sigma is None
                 else torch.as_tensor(sigma, dtype=self.log_sigma.dtype))
            self.log_sigma.copy_(torch.log((s - SIGMA_MIN).clamp_min(1e-3)))
            if weight is None:
                nn.init.normal_(self.weight, std=1.0 / math.sqrt(self.channels))
            else:
                self.weight.copy_(torch.as_tensor(weight, dtype=self.weight.dtype))
            if bias is None:
                self.bias.zero_()
            else:
                self.bias.copy_(torch.as_tensor(bias, dtype=self.bias.dtype))

    def sigma(self) -> Tensor:
        """pRF sizes (V,) in grid cells."""
        return SIGMA_MIN + torch.exp(self.log_sigma)

    def maps(self, centre: Tensor, log_sigma: Tensor) -> Tensor:
        """Dense maps (V, H, W) of Gaussians with these centres (V, 2) and log sizes (V,)
        (the parameters' form): a function of them alone, for ``torch.func`` transforms."""
        s = SIGMA_MIN + torch.exp(log_sigma)
        gy = _cell_mass(centre[:, 0], s, self.grid[0])
        gx = _cell_mass(centre[:, 1], s, self.grid[1])
        return gy[:, :, None] * gx[:, None, :]

    def spatial_map(self) -> Tensor:
        """Dense maps (V, H, W); each sums to the share of its Gaussian on the grid."""
        return self.maps(self.centre, self.log_sigma)

    def prf_grid(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(μy, μx, σ)`` of every voxel in grid cells, each of shape (V,)."""
        return self.centre[:, 0], self.centre[:, 1], self.sigma()

    def pooled(self, features: Tensor) -> Tensor:
        """Features (B, C, H, W) pooled by every voxel's Gaussian: (B, C, V)."""
        b = features.shape[0]
        flat = features.reshape(b, self.channels, self.grid[0] * self.grid[1])
        maps = self.spatial_map().reshape(self.n_voxels, -1).to(flat.dtype)
        return torch.matmul(flat, maps.t())

    def forward(self, features: Tensor) -> Tensor:
        """Predicted responses (B, V) of features (B, C, H, W)."""
        check_features(features, self.channels, self.grid)
        return torch.einsum("bcv,cv->bv", self.pooled(features), self.weight) + self.bias

    def regularizer(self, l1_channels: float = 0.0) -> Tensor:
        """Penalty added to the loss: L1 on channel weights, averaged over voxels."""
        if l1_channels == 0.0:
            return self.weight.new_zeros(())
        return l1_channels * self.weight.abs().sum(0).mean()

    def extra_repr(self) -> str:
        return f"n_voxels={self.n_voxels}, channels={self.channels}, grid={self.grid}"


def search_step(grid: tuple[int, int]) -> int:
    """Cells between the candidate centres :func:`search_prfs_features` tries on a grid.

    On grids finer than 16 cells a side every other cell: that quarters the cost and loses
    nothing the first epochs do not recover (the Gaussians searched there are at least 0.7
    cells wide); training refines the centres.
    """
    return 2 if min(grid) > 16 else 1


@torch.no_grad()
def search_prfs_features(features: Tensor, responses: Tensor,
                         sigmas: tuple[float, ...] = SIGMAS_SEARCHED, ridge: float = 1.0,
                         ) -> tuple[Tensor, Tensor, Tensor]:
    """Grid search of each voxel's pRF by ridge regression on the pooled channels.

    For every candidate (each grid cell as centre, each size in ``sigmas``) the channels are
    pooled by the candidate's Gaussian and every voxel's responses are regressed on them
    (ridge, as :func:`fit_channel_weights`); the candidate that explains most of the voxel's
    variance wins. Unlike a search on one summary drive (such as local contrast), this finds
    voxels that are driven by a few channels only, or by a difference of channels (e.g.
    end-stopped or junction-selective voxels, whose drive is not local contrast).

    Parameters
    ----------
    features : Tensor of shape (n, C, H, W)
    responses : Tensor of shape (n, V)

    Returns
    -------
    centre : Tensor of shape (V, 2)
        ``(μy, μx)`` in grid cells.
    sigma : Tensor of shape (V,)
    explained : Tensor of shape (V,)
        The winning candidate's in-sample fraction of variance explained.
    """
    n, c, h, w = features.shape
    dtype = features.dtype
    f = features - features.mean(0, keepdim=True)
    y = responses.to(dtype) - responses.to(dtype).mean(0)
    total = (y * y).sum(0).clamp_min(1e-12)
    v = y.shape[1]
    best = torch.full((v,), -1.0, dtype=dtype)
    centre = torch.zeros(v, 2, dtype=dtype)
    size = torch.full((v,), sigmas[0], dtype=dtype)
    eye = torch.eye(c, dtype=dtype)
    step = search_step((h, w))
    cy = torch.arange(0, h, step, dtype=dtype)
    cx = torch.arange(0, w, step, dtype=dtype)
    for s in sigmas:
        if step > 1 and s < 0.7:
            continue
        gy = _cell_mass(cy, torch.full((cy.numel(),), s, dtype=dtype), h)  # (centres, H)
        gx = _cell_mass(cx, torch.full((cx.numel(),), s, dtype=dtype), w)
        n_c = cy.numel() * cx.numel()
        pooled = torch.einsum("ncyx,iy,jx->ncij", f, gy, gx).reshape(n, c, n_c)
        gram = torch.einsum("ncj,ndj->jcd", pooled, pooled)  # (J, C, C)
        lam = torch.diagonal(gram, dim1=1, dim2=2).mean(1).clamp_min(1e-12) * ridge
        cross = (pooled.reshape(n, c * n_c).t() @ y).reshape(c, n_c, v)  # one GEMM
        cross = cross.permute(1, 0, 2)  # (J, C, V)
        # the ridge keeps each system well conditioned: a Cholesky solve in float32 is enough
        chol = torch.linalg.cholesky(gram + lam[:, None, None] * eye)
        wts = torch.cholesky_solve(cross, chol)
        explained = (wts * cross).sum(1) / total  # (J, V)
        value, where = explained.max(0)
        better = value > best
        best = torch.where(better, value, best)
        size = torch.where(better, torch.full_like(size, s), size)
        centre[better, 0] = cy[where[better] // cx.numel()]
        centre[better, 1] = cx[where[better] % cx.numel()]
    return centre, size, best


@torch.no_grad()
def fit_channel_weights(pooled: Tensor, responses: Tensor, ridge: float = 1.0,
                        ) -> tuple[Tensor, Tensor]:
    """Per-voxel ridge regression of responses on that voxel's pooled channels.

    Parameters
    ----------
    pooled : Tensor of shape (n, C, V)
        Each voxel's channels pooled by its pRF (:meth:`GaussianReadout.pooled`).
    responses : Tensor of shape (n, V)
    ridge : float
        Penalty relative to the mean diagonal of each voxel's Gram matrix.

    Returns
    -------
    weight : Tensor of shape (C, V)
    bias : Tensor of shape (V,)
    """
    p = pooled.double()
    y = responses.double()
    pm, ym = p.mean(0), y.mean(0)
    pc, yc = p - pm, y - ym
    gram = torch.einsum("ncv,ndv->vcd", pc, pc)
    scale = torch.diagonal(gram, dim1=1, dim2=2).mean(1).clamp_min(1e-12)
    eye = torch.eye(gram.shape[1], dtype=gram.dtype)
    rhs = torch.einsum("ncv,nv->vc", pc, yc)
    wts = torch.linalg.solve(gram + ridge * scale[:, None, None] * eye, rhs[..., None])[..., 0]
    bias = ym - torch.einsum("cv,vc->v", pm, wts)
    return wts.t().to(pooled.dtype), bias.to(pooled.dtype)

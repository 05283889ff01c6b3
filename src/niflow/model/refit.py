"""Closed-form refit of Gaussian readouts' channel weights after training.

Training ends with channel weights that early stopping left wherever the noisy validation
score peaked. With the pRFs and the core fixed, each voxel's prediction is linear in its
weights and bias (:class:`~niflow.model.gaussian.GaussianReadout`), so the best weights are a
per-voxel ridge regression on the voxel's pooled channels. Its penalty is chosen per voxel by
generalised cross-validation (GCV), from sufficient statistics accumulated batch by batch, so
that a refit over many rows (or rows streamed from disk) needs memory of ``V·C²`` numbers, not
``n·C·V``.

For voxel ``v`` with centred pooled channels ``P`` (n, C), centred responses ``y`` (n,),
``Pᵀ P = Q diag(λ) Qᵀ`` and ``z = Qᵀ Pᵀ y``, the penalty ``a = α · mean(λ)`` gives::

    w(a)   = Q diag(1 / (λ + a)) z
    RSS(a) = yᵀy − Σ_k z_k² (2 / (λ_k + a) − λ_k / (λ_k + a)²)
    df(a)  = 1 + Σ_k λ_k / (λ_k + a)          (the intercept counts one)
    GCV(a) = n · RSS(a) / (n − df(a))²
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

# GCV's choice of penalty is an asymptotic argument: with fewer rows than this per channel
# the refit is left out (the weights stay as trained). At 90 rows for 16 channels it gained
# in three simulated data sets and lost in two; at 288 rows it gained or tied in 10 of 12
# regime x area rows and lost at most 0.002 in the other two (BENCHMARKS.md, held-out
# accuracy)
MIN_ROWS_PER_CHANNEL = 10

# penalties relative to the mean eigenvalue of each voxel's Gram matrix: from almost
# ordinary least squares to almost the mean response
REFIT_ALPHAS = tuple(10.0 ** (-3 + 0.5 * i) for i in range(15))


@dataclass
class ChannelMoments:
    """Running sums over rows of one area's pooled channels and responses (float64).

    Attributes
    ----------
    n : int
        Rows seen.
    sum_p : Tensor of shape (V, C)
    sum_y : Tensor of shape (V,)
    gram : Tensor of shape (V, C, C)
        Uncentred ``Σ_rows p pᵀ`` per voxel.
    cross : Tensor of shape (V, C)
        Uncentred ``Σ_rows p y`` per voxel.
    yy : Tensor of shape (V,)
    """

    n: int
    sum_p: Tensor
    sum_y: Tensor
    gram: Tensor
    cross: Tensor
    yy: Tensor

    @classmethod
    def zeros(cls, n_voxels: int, channels: int, device: torch.device | str = "cpu",
              ) -> ChannelMoments:
        z = dict(dtype=torch.float64, device=device)
        return cls(0, torch.zeros(n_voxels, channels, **z), torch.zeros(n_voxels, **z),
                   torch.zeros(n_voxels, channels, channels, **z),
                   torch.zeros(n_voxels, channels, **z), torch.zeros(n_voxels, **z))

    def add(self, pooled: Tensor, responses: Tensor) -> None:
        """Add rows: ``pooled`` (B, C, V) from :meth:`GaussianReadout.pooled`, ``responses``
        (B, V)."""
        b, c, v = pooled.shape
        if responses.shape != (b, v) or self.sum_p.shape != (v, c):
            raise ValueError(f"pooled channels {tuple(pooled.shape)} and responses "
                             f"{tuple(responses.shape)} do not match moments of "
                             f"{self.sum_p.shape[0]} voxels x {self.sum_p.shape[1]} channels")
        p = pooled.to(torch.float64)
        y = responses.to(device=p.device, dtype=torch.float64)
        self.n += b
        self.sum_p += p.sum(0).t()
        self.sum_y += y.sum(0)
        self.gram += torch.einsum("bcv,bdv->vcd", p, p)
        self.cross += torch.einsum("bcv,bv->vc", p, y)
        self.yy += (y * y).sum(0)


@torch.no_grad()
def ridge_gcv(moments: ChannelMoments, alphas: tuple[float, ...] = REFIT_ALPHAS,
              ) -> tuple[Tensor, Tensor, Tensor]:
    """Per-voxel ridge regression with an intercept, its penalty chosen by GCV.

    Parameters
    ----------
    moments : ChannelMoments
        Of ``n > 2`` rows.
    alphas : tuple of float
        Candidate penalties relative to the mean eigenvalue of each voxel's centred Gram
        matrix.

    Returns
    -------
    weight : Tensor of shape (C, V)
    bias : Tensor of shape (V,)
    alpha : Tensor of shape (V,)
        The chosen relative penalty of every voxel.
    """
    n = moments.n
    if n < 3:
        raise ValueError(f"a ridge refit needs at least 3 rows, got {n}")
    pm, ym = moments.sum_p / n, moments.sum_y / n
    gram = moments.gram - n * pm[:, :, None] * pm[:, None, :]
    cross = moments.cross - n * pm * ym[:, None]
    yy = (moments.yy - n * ym * ym).clamp_min(0.0)
    lam, q = torch.linalg.eigh(gram)  # (V, C), (V, C, C)
    lam = lam.clamp_min(0.0)
    z = torch.einsum("vck,vc->vk", q, cross)
    scale = lam.mean(1, keepdim=True).clamp_min(1e-12)
    best = torch.full_like(yy, math.inf)
    best_a = torch.full_like(yy, alphas[0])
    for a in alphas:
        d = lam + a * scale
        rss = (yy - (z * z * (2.0 / d - lam / (d * d))).sum(1)).clamp_min(0.0)
        df = 1.0 + (lam / d).sum(1)
        gcv = n * rss / (n - df).clamp_min(1e-6) ** 2
        better = gcv < best
        best = torch.where(better, gcv, best)
        best_a = torch.where(better, torch.full_like(best_a, a), best_a)
    d = lam + best_a[:, None] * scale
    w = torch.einsum("vck,vk->vc", q, z / d)
    bias = ym - (pm * w).sum(1)
    return w.t(), bias, best_a

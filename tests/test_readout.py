"""The observation model against a naive loop implementation of its formula, and gradcheck."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from niflow.model import LowRankReadout


def naive_readout(features, uy, ux, amp, weight, bias):
    """ŷ_v = b_v + Σ_k softplus(a_vk) Σ_{c,y,x} softmax(uy_vk)[y] softmax(ux_vk)[x] w_cv U[c,y,x],
    written as explicit loops over samples, voxels and ranks."""
    b, c, h, w = features.shape
    v, k, _ = uy.shape
    out = torch.zeros(b, v, dtype=features.dtype)
    for n in range(b):
        for vi in range(v):
            total = bias[vi].clone()
            for ki in range(k):
                py = torch.exp(uy[vi, ki]) / torch.exp(uy[vi, ki]).sum()
                px = torch.exp(ux[vi, ki]) / torch.exp(ux[vi, ki]).sum()
                amp_k = math.log1p(math.exp(float(amp[vi, ki].detach())))
                inner = 0.0
                for ci in range(c):
                    for yi in range(h):
                        for xi in range(w):
                            inner += py[yi] * px[xi] * weight[ci, vi] * features[n, ci, yi, xi]
                total = total + amp_k * inner
            out[n, vi] = total
    return out


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("grid", [(4, 5), (3, 3)])
def test_readout_matches_naive_formula(rank, grid):
    torch.manual_seed(rank)
    ro = LowRankReadout(n_voxels=4, channels=3, grid=grid, rank=rank, init_spatial_std=1.0)
    ro = ro.double()
    with torch.no_grad():
        ro.amp.normal_()
        ro.bias.normal_()
    x = torch.randn(2, 3, *grid, dtype=torch.float64)
    got = ro(x)
    want = naive_readout(x, ro.uy, ro.ux, ro.amp, ro.weight, ro.bias)
    assert got.shape == (2, 4)
    torch.testing.assert_close(got, want.detach(), rtol=1e-5, atol=1e-5)


def test_readout_gradcheck():
    torch.manual_seed(0)
    ro = LowRankReadout(n_voxels=3, channels=2, grid=(3, 4), rank=2, init_spatial_std=1.0).double()
    x = torch.randn(2, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    params = (ro.uy, ro.ux, ro.amp, ro.weight, ro.bias)

    def f(x, uy, ux, amp, weight, bias):
        return torch.func.functional_call(
            ro, {"uy": uy, "ux": ux, "amp": amp, "weight": weight, "bias": bias}, (x,))

    inputs = (x,) + tuple(p.detach().clone().requires_grad_(True) for p in params)
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6)


def test_spatial_map_is_rank_weighted_outer_product():
    torch.manual_seed(1)
    ro = LowRankReadout(5, 2, (6, 7), rank=2, init_spatial_std=1.0)
    m = ro.spatial_map()
    a = torch.nn.functional.softplus(ro.amp)
    want = sum(a[:, k, None, None] * torch.softmax(ro.uy[:, k], -1)[:, :, None]
               * torch.softmax(ro.ux[:, k], -1)[:, None, :] for k in range(2))
    torch.testing.assert_close(m, want)
    # each softmax factor sums to one, so a map sums to its total amplitude
    torch.testing.assert_close(m.sum((1, 2)), a.sum(1))


def test_initial_map_sums_to_one_and_bias_from_mean():
    ro = LowRankReadout(4, 2, (5, 5), rank=3)
    torch.testing.assert_close(ro.spatial_map().sum((1, 2)), torch.ones(4))
    ro.initialize(mean_response=torch.arange(4.0))
    torch.testing.assert_close(ro.bias.detach(), torch.arange(4.0))


def test_spatial_prior_puts_the_initial_peak_on_the_prior_peak():
    prior = torch.zeros(3, 8, 9)
    peaks = [(1, 2), (6, 7), (4, 0)]
    for v, (y, x) in enumerate(peaks):
        prior[v, y, x] = 1.0
    ro = LowRankReadout(3, 2, (8, 9), rank=2, init_spatial_std=0.0)
    ro.initialize(spatial_prior=prior)
    m = ro.spatial_map()
    for v, (y, x) in enumerate(peaks):
        assert divmod(int(m[v].argmax()), 9) == (y, x)


def test_readout_rejects_wrong_feature_shape_with_shapes_in_message():
    ro = LowRankReadout(3, 4, (5, 6))
    with pytest.raises(ValueError, match=r"\(B, 4, 5, 6\).*\(2, 3, 5, 6\)"):
        ro(torch.zeros(2, 3, 5, 6))


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any operation produces."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_readout_never_builds_batch_channel_grid_voxel_tensor():
    b, c, h, w, v = 4, 8, 28, 28, 500
    ro = LowRankReadout(v, c, (h, w), rank=2)
    x = torch.randn(b, c, h, w)
    mode = _LargestTensor()
    with mode:
        ro(x).sum().backward()
    # the dense map (V, H·W) is the largest thing needed; B·C·H·W·V would be 32× larger
    assert mode.largest <= max(v * h * w, b * c * h * w, b * c * v)


@pytest.mark.parametrize("chunk_voxels", [1, 3, 7])
def test_chunked_readout_matches_dense_in_values_and_gradients(chunk_voxels):
    torch.manual_seed(2)
    dense = LowRankReadout(10, 3, (4, 5), rank=2, init_spatial_std=1.0, map_chunk_bytes=0)
    chunked = LowRankReadout(10, 3, (4, 5), rank=2, map_chunk_bytes=chunk_voxels * 4 * 5 * 8)
    chunked.load_state_dict(dense.state_dict())
    dense, chunked = dense.double(), chunked.double()
    assert chunked.voxels_per_chunk(8) == chunk_voxels
    x = torch.randn(3, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    y1, y2 = dense(x), chunked(x2)
    torch.testing.assert_close(y2, y1)
    g = torch.randn_like(y1)
    y1.backward(g)
    y2.backward(g)
    torch.testing.assert_close(x2.grad, x.grad)
    for (name, p1), (_, p2) in zip(dense.named_parameters(), chunked.named_parameters(),
                                   strict=True):
        torch.testing.assert_close(p2.grad, p1.grad, msg=name)

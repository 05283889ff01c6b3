"""Batch normalisation whose statistics span every data-parallel process."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn


class BatchNorm2d(nn.BatchNorm2d):
    """Batch normalisation whose batch statistics span every data-parallel process.

    Alone, this is :class:`torch.nn.BatchNorm2d`. When a process group is running, the
    per-channel sums and sums of squares are all-reduced (through the autograd-aware
    collective, so gradients flow across processes), which makes the result equal to
    single-process batch normalisation of the global batch; unlike
    :class:`torch.nn.SyncBatchNorm`, this also works with gloo on CPUs.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1):
            return super().forward(x)
        x32 = x.to(torch.promote_types(x.dtype, torch.float32))
        local = torch.cat([x32.sum((0, 2, 3)), (x32 * x32).sum((0, 2, 3)),
                           x32.new_tensor([x.shape[0] * x.shape[2] * x.shape[3]])])
        total = _AllReduceSum.apply(local)
        c = self.num_features
        count = total[2 * c]
        mean = total[:c] / count
        var = (total[c:2 * c] / count - mean * mean).clamp_min(0)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                unbiased = var * count / (count - 1).clamp_min(1)
                self.running_mean.mul_(1 - m).add_(m * mean.detach())
                self.running_var.mul_(1 - m).add_(m * unbiased.detach())
                self.num_batches_tracked.add_(1)
        y = (x32 - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + self.eps)
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(x.dtype)


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes whose gradient is the sum over processes of the gradients: the
    derivative of a total loss that adds every process's loss."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad

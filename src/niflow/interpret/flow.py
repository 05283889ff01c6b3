"""Information flow between areas: connection weights and ablation of each source's input."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from niflow.config import STIMULUS
from niflow.model.fitted import FittedModel, model_and_input
from niflow.model.nif import NIFModel


def _source_channels(model: NIFModel, target: str) -> dict[str, slice]:
    """Input-channel block of each source in the target's convolution (config order)."""
    area = model.graph.areas[target]
    blocks, start = {}, 0
    for s in area.cfg.sources:
        c = model.graph.geometries[s].channels
        blocks[s] = slice(start, start + c)
        start += c
    return blocks


def _forward_ablated(model: NIFModel, x: torch.Tensor, target: str, source: str | None,
                     replacement: Callable[[torch.Tensor], torch.Tensor] | None,
                     ) -> torch.Tensor:
    """Target area's readout with one source's input replaced (``None``: intact).

    ``x`` is a batch of scaled stimuli (B, c, h, w); ``replacement(tensor)`` returns what the
    target sees instead of that source's feature tensor. Areas are called directly, in graph
    order, up to the target (areas after it cannot change its response).
    """
    feats = {STIMULUS: model.standardize(x)}
    for name, area in model.graph.areas.items():
        inputs = [feats[s] for s in area.cfg.sources]
        if name == target and source is not None:
            inputs = [replacement(t) if s == source else t
                      for s, t in zip(area.cfg.sources, inputs, strict=True)]
        feats[name] = area(inputs)
        if name == target:
            break
    return model.readouts[target](feats[target])


def _feature_batches(model: NIFModel, stim: np.ndarray, batch: int,
                     ) -> Iterator[dict[str, torch.Tensor]]:
    """Feature tensors of the standardised stimulus and every area, batch by batch."""
    import torch

    with torch.no_grad():
        for i in range(0, len(stim), batch):
            yield model.features(torch.as_tensor(stim[i:i + batch]), include_stimulus=True)


def _source_means(model: NIFModel, stim: np.ndarray, batch: int = 128,
                  ) -> dict[str, torch.Tensor]:
    """Mean feature tensor (C, H, W) of the stimulus and of every area over ``stim``."""
    sums: dict[str, torch.Tensor] = {}
    for feats in _feature_batches(model, stim, batch):
        for k, v in feats.items():
            sums[k] = sums.get(k, 0) + v.sum(0)
    return {k: v / len(stim) for k, v in sums.items()}


@dataclass
class FlowResult:
    """Source ablations of one target area.

    Attributes
    ----------
    target, source : str
    r_full : ndarray of shape (n_voxels,)
        Held-out r of the intact model.
    r_zero, r_mean : ndarray of shape (n_voxels,)
        Held-out r with the source's input to the target set to zero, or to its mean
        feature tensor over the reference (training) stimuli.
    weight_norm : float
        Frobenius norm of the target convolution's weights from this source.
    weight_share : float
        That block's share of the squared norm of all the target's input weights.
    effective_share : float
        The same share after scaling each input channel's weights by the channel's standard
        deviation over the reference stimuli (weights on a quiet channel matter less).
    channel_norms : ndarray of shape (C_target, C_source)
        L2 norm of each output-channel × input-channel kernel.
    """

    target: str
    source: str
    r_full: np.ndarray
    r_zero: np.ndarray
    r_mean: np.ndarray
    weight_norm: float
    weight_share: float
    effective_share: float
    channel_norms: np.ndarray

    def row(self) -> dict:
        """One summary row for ``flow.csv``."""
        med = np.nanmedian
        return {"target": self.target, "source": self.source, "n_voxels": len(self.r_full),
                "median_r": float(med(self.r_full)),
                "median_r_zero": float(med(self.r_zero)),
                "median_r_mean": float(med(self.r_mean)),
                "median_drop_zero": float(med(self.r_full - self.r_zero)),
                "median_drop_mean": float(med(self.r_full - self.r_mean)),
                "weight_norm": self.weight_norm, "weight_share": self.weight_share,
                "effective_weight_share": self.effective_share}


def connection_weights(model: NIFModel, target: str,
                       channel_std: dict[str, np.ndarray] | None = None,
                       kernel: np.ndarray | None = None) -> dict[str, dict]:
    """Channel-to-channel weight norms of a target area's convolution, per source.

    Parameters
    ----------
    channel_std : dict of str to ndarray of shape (C_source,), optional
        Standard deviation of each source channel's activity; gives ``effective_share``.
    kernel : ndarray of shape (C_target, C_in, ...), optional
        The target's kernels, if not its 2D ones (a space-time area's, over its lags too);
        each channel pair's norm is taken over all trailing axes.

    Returns
    -------
    dict of source to {"channel_norms": ndarray (C_target, C_source), "norm": float,
    "share": float, "effective_share": float (NaN without ``channel_std``)}
    """
    w = (model.graph.areas[target].kernel_weights().detach().cpu().numpy() if kernel is None
         else kernel).astype(np.float64)
    norms = np.sqrt((w ** 2).reshape(*w.shape[:2], -1).sum(2))  # (C_out, C_in)
    blocks = _source_channels(model, target)
    total = float((norms ** 2).sum())
    eff = {s: (norms[:, b] * channel_std[s][None, :]) if channel_std is not None else None
           for s, b in blocks.items()}
    eff_total = (sum(float((e ** 2).sum()) for e in eff.values())
                 if channel_std is not None else float("nan"))
    out = {}
    for s, b in blocks.items():
        block = norms[:, b]
        sq = float((block ** 2).sum())
        out[s] = {"channel_norms": block, "norm": math.sqrt(sq),
                  "share": sq / total if total > 0 else float("nan"),
                  "effective_share": (float((eff[s] ** 2).sum()) / eff_total
                                      if channel_std is not None and eff_total > 0
                                      else float("nan"))}
    return out


def information_flow(model: FittedModel | NIFModel, stim: np.ndarray,
                     true: dict[str, np.ndarray], reference_stim: np.ndarray | None = None,
                     batch: int = 128) -> list[FlowResult]:
    """Ablate each source of each area with voxels and score the target on held-out rows.

    Parameters
    ----------
    model : FittedModel (a :class:`niflow.Run` is one) or NIFModel
        Of a FittedModel the first (chosen) model of its ensemble is measured.
    stim : ndarray
        Stimuli of the scored rows. With a FittedModel as loaded, (n_rows, height, width) or
        colour (n_rows, height, width, 3) or (n_rows, 3, height, width), uint8 or float
        (scaled as in training here); with a bare NIFModel already scaled, (n_rows,
        channels, height, width).
    true : dict of str to ndarray of shape (n_rows, n_voxels)
        Measured responses of those rows per area (any affine scale: r is used); the
        voxels (columns) the model predicts, e.g. ``responses[area][:, run.voxel_index[area]]``.
    reference_stim : ndarray, optional
        Stimuli (same forms as ``stim``) whose mean feature tensors replace an ablated source
        in the "mean" mode and whose channel activity scales the weights (the training rows;
        default ``stim``).

    Returns
    -------
    list of FlowResult, one per (target, source) edge, in graph order.

    Raises
    ------
    ValueError
        If the stimuli's shape does not fit the model.
    """
    import torch

    from niflow.evaluate.statistics import pearson_r

    ref = stim if reference_stim is None else reference_stim
    _, ref = model_and_input(model, ref)
    model, stim = model_and_input(model, stim)
    was_training = model.training
    # evaluation mode before any forward pass: in training mode batch norm would use (and
    # update) batch statistics, changing the model it is meant to measure
    model.eval()
    results = []
    try:
        means = _source_means(model, ref, batch)
        std = _channel_std(model, ref, means, batch)
        with torch.no_grad():
            for target in model.areas_with_voxels:
                if target not in true:
                    continue
                sources = model.graph.areas[target].cfg.sources
                weights = connection_weights(model, target, std)
                x = torch.as_tensor(stim)

                def run(source, repl, target=target, x=x):
                    parts = [_forward_ablated(model, x[i:i + batch], target, source, repl)
                             for i in range(0, len(x), batch)]
                    return torch.cat(parts).cpu().numpy()

                r_full = pearson_r(run(None, None), true[target])
                for s in sources:
                    zero = run(s, torch.zeros_like)
                    mean = run(s, lambda t, m=means[s]: m.expand_as(t))
                    results.append(FlowResult(
                        target, s, r_full, pearson_r(zero, true[target]),
                        pearson_r(mean, true[target]), weights[s]["norm"],
                        weights[s]["share"], weights[s]["effective_share"],
                        weights[s]["channel_norms"]))
    finally:
        model.train(was_training)
    return results


def _channel_std(model: NIFModel, stim: np.ndarray, means: dict[str, torch.Tensor], batch: int,
                 ) -> dict[str, np.ndarray]:
    """Standard deviation of every channel of the stimulus and of each area over ``stim``
    and grid positions, as each is seen by its targets, shape (C,) per source."""
    sq: dict[str, torch.Tensor] = {}
    count = 0
    for feats in _feature_batches(model, stim, batch):
        for k, v in feats.items():
            sq[k] = sq.get(k, 0) + ((v - means[k]) ** 2).sum((0, 2, 3))
        count += len(feats[STIMULUS])
    out = {}
    for k, v in sq.items():
        cells = count * int(np.prod(means[k].shape[1:]))
        out[k] = np.sqrt(v.cpu().numpy().astype(np.float64) / max(cells, 1))
    return out

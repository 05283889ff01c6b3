"""The NIF model on movies: (2+1)D areas, per-frame spatial readouts, per-voxel HRFs.

Every area is the static area of :mod:`niflow.model.areas` applied to each frame, followed
by a causal temporal filter per channel (factorised space-time: the Sensorium-style (2+1)D
core), or, with ``config.video.space_time = "full"``, a learned area filters space and time
at once with causal 3D kernels (:class:`CausalConv3d`); either way an area's output at frame
``t`` depends on frames ``t, t−1, …`` only. The temporal
filters start as the identity, which makes the static model the special case of a movie of
one frame. Each area's spatial readout (Gaussian pRF or low-rank) gives every voxel's drive
at every frame; :class:`~niflow.model.hrf.HRFReadout` turns the drive into the volumes.

Shapes: frames (B, T, C, H, W) → drive {area: (B, T, V)} → volumes {area: (B, n_vol, V)}.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from niflow.config import STIMULUS, RunConfig
from niflow.model.hrf import HRFReadout
from niflow.model.nif import NIFModel

__all__ = ["CausalTemporal", "VideoNIF"]

HRF_INIT_WINDOW_S = (4.0, 6.0)  # frames this long before a volume weigh most in its BOLD


class CausalTemporal(nn.Module):
    """Depthwise causal filter over frames, ``y_t = Σ_l w_l · x_{t−l}`` per channel.

    Parameters
    ----------
    channels : int
    taps : int
        Frames of the filter (lag 0 to ``taps − 1``); initialised to the identity.
    """

    def __init__(self, channels: int, taps: int) -> None:
        super().__init__()
        self.taps = int(taps)
        weight = torch.zeros(channels, 1, self.taps)
        weight[:, 0, -1] = 1.0  # conv1d's last tap is lag 0
        self.weight = nn.Parameter(weight)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` (B, T, C, H, W) → (B, T, C, H, W); frames before the first count as zero."""
        if self.taps == 1:
            return x * self.weight[:, 0, 0][None, None, :, None, None]
        b, t, c, h, w = x.shape
        y = x.permute(0, 3, 4, 2, 1).reshape(b * h * w, c, t)
        y = F.conv1d(F.pad(y, (self.taps - 1, 0)), self.weight, groups=c)
        return y.reshape(b, h, w, c, t).permute(0, 4, 3, 1, 2)


class CausalConv3d(nn.Module):
    """An area's 2D convolution extended into the past: causal 3D kernels whose lag-0 slice
    is the area's own 2D kernel (so the kernel figures and ``modelparams`` stay the current
    frame's filters) and whose earlier lags start at zero (the static area at the start).

    Parameters
    ----------
    conv : nn.Conv2d
        The area's spatial convolution (stride 1); its weight and bias are shared.
    taps : int
        Frames of the kernel (lag 0 to ``taps − 1``).
    """

    def __init__(self, conv: nn.Conv2d, taps: int) -> None:
        super().__init__()
        if conv.stride != (1, 1) or conv.groups != 1:
            raise ValueError("a full space-time area needs a stride-1, ungrouped convolution")
        self.conv = conv
        self.taps = int(taps)
        out_c, in_c, kh, kw = conv.weight.shape
        self.past = nn.Parameter(torch.zeros(out_c, in_c, self.taps - 1, kh, kw))

    def forward(self, x: Tensor) -> Tensor:
        """``x`` (B, T, C, H, W) → (B·T, C_out, H', W'); frames before the first are zero."""
        b, t = x.shape[:2]
        weight = torch.cat([self.past, self.conv.weight[:, :, None]], dim=2)
        y = F.conv3d(F.pad(x.transpose(1, 2), (0, 0, 0, 0, self.taps - 1, 0)), weight,
                     self.conv.bias, padding=(0, *self.conv.padding),
                     dilation=(1, *self.conv.dilation))
        return y.transpose(1, 2).flatten(0, 1)


class VideoNIF(nn.Module):
    """Predict the volumes of several areas from the frames before them.

    Parameters
    ----------
    config : RunConfig
        Areas and spatial readouts, as for static images.
    frame_shape : tuple of int
        ``(channels, height, width)`` of a frame.
    n_voxels : dict of str to int
    fps : float
        Frames per second.
    taps_s : float, optional
        Length of each area's temporal filter (seconds); default ``config.video.taps_s``.
    hrf_span_s : float, optional
        Longest haemodynamic lag; default ``config.video.hrf_span_s``.
    """

    def __init__(self, config: RunConfig, frame_shape: tuple[int, int, int],
                 n_voxels: dict[str, int], fps: float, taps_s: float | None = None,
                 hrf_span_s: float | None = None) -> None:
        super().__init__()
        self.fps = float(fps)
        self.taps_s = float(config.video.taps_s if taps_s is None else taps_s)
        self.hrf_span_s = float(config.video.hrf_span_s if hrf_span_s is None else hrf_span_s)
        self.space_time = config.video.space_time
        self.spatial = NIFModel(config, frame_shape, n_voxels)
        taps = max(1, int(round(self.taps_s * fps)))
        full = {name for name, area in self.spatial.graph.areas.items()
                if self.space_time == "full" and taps > 1
                and isinstance(area.conv, nn.Conv2d)}
        # learned areas of a "full" model filter space and time at once; the others (and a
        # fixed Gabor bank) filter each frame, then each channel in time
        self.space_time_conv = nn.ModuleDict({
            name: CausalConv3d(self.spatial.graph.areas[name].conv, taps) for name in full})
        self.temporal = nn.ModuleDict({
            name: CausalTemporal(self.spatial.geometry(name).channels, taps)
            for name in self.spatial.graph.areas if name not in full})
        hrf_span_s = self.hrf_span_s
        self.hrf = nn.ModuleDict({a: HRFReadout(n, fps, hrf_span_s) for a, n in n_voxels.items()})

    @property
    def history(self) -> int:
        """Frames before a volume's last frame that reach its prediction."""
        taps = sum(t.taps - 1 for t in (*self.temporal.values(),
                                         *self.space_time_conv.values()))
        return max(h.n_lags for h in self.hrf.values()) + taps

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return self.spatial.image_shape  # type: ignore[return-value]

    def _check(self, frames: Tensor) -> None:
        if frames.dim() != 5 or tuple(frames.shape[2:]) != self.frame_shape:
            c, h, w = self.frame_shape
            raise ValueError(f"model expects frames of shape (B, T, {c}, {h}, {w}), got "
                             f"{tuple(frames.shape)}")

    def features(self, frames: Tensor) -> dict[str, Tensor]:
        """Every area's features at every frame, {area: (B, T, C_a, H_a, W_a)}."""
        self._check(frames)
        b, t = frames.shape[:2]
        feats: dict[str, Tensor] = {STIMULUS: self.spatial.standardize(frames.flatten(0, 1))}
        for name, area in self.spatial.graph.areas.items():
            inputs = [feats[s] for s in area.cfg.sources]
            if name in self.space_time_conv:
                gathered = area._gather(inputs).unflatten(0, (b, t))
                feats[name] = area(inputs, bank=self.space_time_conv[name](gathered))
                continue
            y = area(inputs)
            feats[name] = self.temporal[name](y.unflatten(0, (b, t))).flatten(0, 1)
        del feats[STIMULUS]
        return {a: f.unflatten(0, (b, t)) for a, f in feats.items()}

    def drive(self, frames: Tensor) -> dict[str, Tensor]:
        """Each voxel's neural drive at every frame, {area: (B, T, V)}."""
        feats = self.features(frames)
        return {a: ro(feats[a].flatten(0, 1)).unflatten(0, feats[a].shape[:2])
                for a, ro in self.spatial.readouts.items()}

    def forward(self, frames: Tensor, last_frames: Tensor) -> dict[str, Tensor]:
        """Predicted volumes.

        Parameters
        ----------
        frames : Tensor of shape (B, T, C, H, W)
            Consecutive frames of one run (standardised inside, like static stimuli).
        last_frames : Tensor of shape (n_vol,), int
            Index along ``T`` of the last frame shown before each volume.

        Returns
        -------
        dict of str to Tensor of shape (B, n_vol, n_voxels)
        """
        return {a: self.hrf[a](d, last_frames) for a, d in self.drive(frames).items()}

    def initialize_readouts(self, frames: Tensor, responses: dict[str, Tensor]) -> None:
        """Start the spatial readouts as for static images, from frames paired with volumes.

        Parameters
        ----------
        frames : Tensor of shape (n, C, H, W)
            For each training volume, the mean frame of the ``HRF_INIT_WINDOW_S`` seconds
            before it (:func:`hrf_window_frames`): what a canonical HRF weighs most.
        responses : dict of str to Tensor of shape (n, V)
            The volumes, z-scored.
        """
        self.spatial.initialize_readouts(frames, responses)
        # the readouts now map one frame to one volume; the HRF multiplies a steady drive by
        # its area, 1 - 1/6, which the readouts' weights undo
        with torch.no_grad():
            for ro in self.spatial.readouts.values():
                ro.weight.mul_(6 / 5)
                ro.bias.mul_(6 / 5)

    def regularizer(self) -> Tensor:
        return self.spatial.regularizer()

    def parameter_groups(self, lr: float) -> list[dict]:
        groups = self.spatial.parameter_groups(lr)
        past = [p for name, p in self.space_time_conv.named_parameters()
                if name.endswith(".past")]
        groups.append({"params": list(self.temporal.parameters()) + past, "lr": lr,
                       "name": "temporal"})
        groups.append({"params": list(self.hrf.parameters()), "lr": lr, "name": "hrf"})
        return groups

    def hrf_parameters(self) -> dict[str, dict[str, np.ndarray]]:
        """Per area: ``hrf_peak_s`` and ``hrf_fwhm_s`` of every voxel (seconds)."""
        out = {}
        for a, h in self.hrf.items():
            peak, width = h.peak_and_width()
            out[a] = {"hrf_peak_s": peak, "hrf_fwhm_s": width}
        return out

"""The NIF model on movies: (2+1)D areas, per-frame spatial readouts, per-voxel HRFs.

Every area is the static area of :mod:`niflow.model.areas` applied to each frame, followed
by a causal temporal filter per channel (factorised space-time: the Sensorium-style (2+1)D
core), or, with ``config.video.space_time = "full"``, a learned area filters space and time
at once with causal 3D kernels (:class:`CausalConv3d`) and a Gabor bank filters its
quadrature responses in time before their energy (:class:`CausalQuadrature`, a learned
motion-energy bank); a Gabor bank with ``motion_hz`` adds fixed motion-energy channels in
either form (:func:`~niflow.model.filters.motion_filters`). Either way an area's output at
frame ``t`` depends on frames ``t, t−1, …`` only. The temporal
filters start as the identity, which makes the static model the special case of a movie of
one frame. Each area's spatial readout (Gaussian pRF or low-rank) gives every voxel's drive
at every frame; :class:`~niflow.model.hrf.HRFReadout` turns the drive into the volumes.

Shapes: frames (B, T, C, H, W) → drive {area: (B, T, V)} → volumes {area: (B, n_vol, V)}.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from niflow.config import STIMULUS, RunConfig
from niflow.model.areas import DivisiveNorm
from niflow.model.filters import GaborBank, motion_filters, quadrature_energy
from niflow.model.gaussian import GaussianReadout, fit_channel_weights
from niflow.model.hrf import HRFReadout
from niflow.model.nif import NIFModel

__all__ = ["CausalConv3d", "CausalQuadrature", "CausalTemporal", "Replacements", "VideoNIF",
           "Weighted", "motion_heads"]

# what the readouts' initialisation asks for: z-scored responses {area: (m, V)} of m
# volumes, their HRF-weighted features {peak_s: {area: (m, C, H, W)}} and the mean frame's
# features {area: (C, H, W)} (niflow.train.video_init.hrf_weighted_features)
Weighted = Callable[[], tuple[dict[str, Tensor], dict[float, dict[str, Tensor]],
                              dict[str, Tensor]]]

# what a target area reads instead of a source's features, by (target, source): ablations
Replacements = dict[tuple[str, str], Callable[[Tensor], Tensor]]

HRF_INIT_WINDOW_S = (4.0, 6.0)  # frames this long before a volume weigh most in its BOLD
# the divisive normalisations' constant at the start, in units of their mean drive: large,
# so they start close to the identity. Started at softplus(0) ≈ 0.69 (with calibrated Gabor
# energies of mean 1, strong) they flattened the changes of contrast over time that drive
# BOLD in a movie, and a few hundred volumes did not undo it: on simulated movies (8 min,
# BENCHMARKS.md) the Gabor model's V1 median r was 0.12-0.13 against 0.17-0.23 started weak.
NORM_START = 100.0


@torch.no_grad()
def _mean_drives(run: Callable[[], None], norms: list[DivisiveNorm]) -> list[float]:
    """Mean pooled drive ``mean_c |input|`` reaching each normalisation while ``run()``
    passes frames through the model."""
    sums = [0.0] * len(norms)
    counts = [0] * len(norms)

    def hook(i: int):
        def record(_module, inputs):
            sums[i] += float(inputs[0].abs().mean(1).sum())
            counts[i] += inputs[0].shape[0] * inputs[0].shape[2] * inputs[0].shape[3]
        return record

    handles = [m.register_forward_pre_hook(hook(i)) for i, m in enumerate(norms)]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return [s / max(c, 1) for s, c in zip(sums, counts, strict=True)]


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


class CausalQuadrature(nn.Module):
    """A Gabor bank extended into the past: each pair's complex (quadrature) response is
    filtered by causal complex filters before the energies are taken.

    Head 0 (the pair's static channel) is ``e_t = |z_t + Σ_{l≥1} h_l · z_{t−l}|`` with a
    learned ``h`` (``learn=True``: the filter's phase turning with the lag makes the channel
    prefer one direction of motion and its magnitudes change or persistence, a learned
    motion-energy bank after Adelson & Bergen 1985; every ``h_l = 0`` at the start) or
    ``|z_t|`` (``learn=False``). The bank's fixed heads (:attr:`GaborBank.heads`,
    motion-energy channels) follow it, in the bank's channel order.

    Parameters
    ----------
    bank : GaborBank
        The area's spatial bank; its kernels, colour weights and heads are shared.
    taps : int
        Frames of the filters (lag 0 to ``taps − 1``); lag 0's coefficient of head 0 is
        fixed at 1 (a common phase or scale would be invisible to the energy or absorbed
        downstream).
    learn : bool
        Whether head 0 has a learned past.
    """

    def __init__(self, bank: GaborBank, taps: int, learn: bool = True) -> None:
        super().__init__()
        self.bank = bank
        self.taps = max(int(taps), int(bank.heads.shape[1]) if bank.n_heads else 1)
        self.learn = learn
        if learn:
            # lags taps − 1 … 1, as (real, imaginary): complex parameters would not survive
            # Module.to(float dtype)
            self.past = nn.Parameter(torch.zeros(bank.pairs, self.taps - 1, 2))

    def forward(self, x: Tensor) -> Tensor:
        """``x`` (B, T, C, H, W) → energies (B·T, F, H, W), ``F = bank.out_channels``;
        frames before the first are zero."""
        b, t, _, h, w = x.shape
        with torch.set_grad_enabled(torch.is_grad_enabled() and self._needs_grad()):
            z = self.bank.responses(x.flatten(0, 1))  # (B·T, P, H, W) complex
            p = z.shape[1]
            # (real, imaginary) of every pair as two conv1d channels over time: the complex
            # products are a grouped convolution, one call forward and backward, and the
            # energy is taken before the frames go back in front (a complex multiply-and-
            # shift per lag took 1.4x as long forward and backward at 24 px)
            y = torch.view_as_real(z).unflatten(0, (b, t)).permute(0, 3, 4, 2, 5, 1)
            y = F.pad(y.reshape(b * h * w, 2 * p, t), (self.taps - 1, 0))
            weight = self._complex_weight().to(y.dtype)
            heads = weight.shape[0] // (2 * p)
            # rows of pixels in chunks: the filtered pairs (2 · heads values per energy)
            # are the largest intermediate
            step = max(1, QUADRATURE_CHUNK_BYTES // (8 * heads * p * (t + self.taps)))
            e = torch.cat([quadrature_energy(
                F.conv1d(y[i:i + step], weight, groups=p).unflatten(1, (p * heads, 2)), dim=2)
                for i in range(0, y.shape[0], step)])  # (B·H·W, P·heads, T)
        return e.reshape(b, h, w, -1, t).permute(0, 4, 3, 1, 2).flatten(0, 1).to(x.dtype)

    def _needs_grad(self) -> bool:
        return any(q.requires_grad for q in self.parameters())

    def _complex_weight(self) -> Tensor:
        """conv1d weight (P·heads·2, 2, taps) of the complex filters: per pair and head,
        output rows (re, im) from input columns (re, im) are [[h_re, −h_im], [h_im, h_re]]
        at every lag (lag 0 last)."""
        ref = self.bank.heads
        p, taps = self.bank.pairs, self.taps
        static = torch.zeros(p, 1, taps, 2, dtype=ref.dtype, device=ref.device)
        static[:, 0, -1, 0] = 1.0
        if self.learn:
            static = torch.cat([self.past.to(ref.dtype)[:, None], static[:, :, -1:]], 2)
        filters = [static]
        if self.bank.n_heads:
            fixed = ref.flip(1)  # lag 0 last
            fixed = F.pad(fixed, (0, 0, taps - fixed.shape[1], 0))
            filters.append(fixed[None].expand(p, -1, -1, -1))
        hre, him = torch.cat(filters, 1).unbind(-1)  # (P, heads, taps)
        rows = torch.stack([torch.stack([hre, -him], 2), torch.stack([him, hre], 2)], 2)
        return rows.flatten(0, 2)  # (P·heads·2, 2, taps)


QUADRATURE_CHUNK_BYTES = 64 * 2**20


def _space_time_layer(conv: nn.Module, taps: int, full: bool) -> nn.Module:
    """An area's filtering stage over frames: 3D kernels for a learned convolution of a
    full space-time model, temporal quadrature filters for a Gabor bank (learned for its
    static channels in a full model)."""
    if isinstance(conv, nn.Conv2d):
        return CausalConv3d(conv, taps)
    return CausalQuadrature(conv, taps, learn=full)  # type: ignore[arg-type]


def motion_heads(config: RunConfig, fps: float, taps: int) -> dict[str, np.ndarray]:
    """The temporal heads of every Gabor-bank area with usable ``motion_hz`` at ``fps``
    with filters of ``taps`` frames: {area: (M, taps) complex}."""
    out = {}
    for a in config.areas:
        if a.filters != "learned" and a.motion_hz:
            heads = motion_filters(a.motion_hz, fps, taps)
            if len(heads):
                out[a.name] = heads
    return out


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
        taps = max(1, int(round(self.taps_s * fps)))
        self.spatial = NIFModel(config, frame_shape, n_voxels, motion_heads(config, fps, taps))
        areas = self.spatial.graph.areas
        full = {name for name, area in areas.items()
                if self.space_time == "full" and taps > 1
                and isinstance(area.conv, (nn.Conv2d, GaborBank))}
        moving = {name for name, area in areas.items()
                  if isinstance(area.conv, GaborBank) and area.conv.n_heads}
        # learned areas of a "full" model filter space and time at once with 3D kernels; a
        # Gabor bank's quadrature responses are filtered in time before their energy (its
        # static channels by a learned filter in a "full" model, its motion-energy channels
        # by fixed ones) and its channels then in time as in the factorised model (which
        # keeps its sustained and transient mix); the other areas filter each frame, then
        # each channel in time
        self.space_time_conv = nn.ModuleDict({
            name: _space_time_layer(areas[name].conv, taps, name in full)
            for name in sorted(full | moving)})
        self.temporal = nn.ModuleDict({
            name: CausalTemporal(self.spatial.geometry(name).channels, taps)
            for name, area in areas.items()
            if name not in full or isinstance(area.conv, GaborBank)})
        hrf_span_s = self.hrf_span_s
        self.hrf = nn.ModuleDict({a: HRFReadout(n, fps, hrf_span_s) for a, n in n_voxels.items()})

    @property
    def history(self) -> int:
        """Frames before a volume's last frame that reach its prediction."""
        taps = sum(t.taps - 1 for t in (*self.temporal.values(),
                                         *self.space_time_conv.values()))
        return max(h.n_lags for h in self.hrf.values()) + taps

    @property
    def needs_clips(self) -> bool:
        """Whether :meth:`initialize_readouts` needs clips (motion-energy channels)."""
        return bool(self._moving_banks())

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return self.spatial.image_shape  # type: ignore[return-value]

    def _check(self, frames: Tensor) -> None:
        if frames.dim() != 5 or tuple(frames.shape[2:]) != self.frame_shape:
            c, h, w = self.frame_shape
            raise ValueError(f"model expects frames of shape (B, T, {c}, {h}, {w}), got "
                             f"{tuple(frames.shape)}")

    def features(self, frames: Tensor, replace: Replacements | None = None,
                 ) -> dict[str, Tensor]:
        """Every area's features at every frame, {area: (B, T, C_a, H_a, W_a)}.

        ``replace`` maps ``(target, source)`` to a function of the source's features
        (B·T, C, H, W) that the target reads instead (an ablation; other areas still read
        the source itself).
        """
        self._check(frames)
        b, t = frames.shape[:2]
        feats: dict[str, Tensor] = {STIMULUS: self.spatial.standardize(frames.flatten(0, 1))}
        replace = replace or {}
        for name, area in self.spatial.graph.areas.items():
            inputs = [replace[(name, s)](feats[s]) if (name, s) in replace else feats[s]
                      for s in area.cfg.sources]
            if name in self.space_time_conv:
                gathered = area._gather(inputs).unflatten(0, (b, t))
                y = area(inputs, bank=self.space_time_conv[name](gathered))
            else:
                y = area(inputs)
            if name in self.temporal:
                y = self.temporal[name](y.unflatten(0, (b, t))).flatten(0, 1)
            feats[name] = y
        del feats[STIMULUS]
        return {a: f.unflatten(0, (b, t)) for a, f in feats.items()}

    def drive(self, frames: Tensor, replace: Replacements | None = None,
              ) -> dict[str, Tensor]:
        """Each voxel's neural drive at every frame, {area: (B, T, V)} (``replace``: as for
        :meth:`features`)."""
        feats = self.features(frames, replace)
        return {a: ro(feats[a].flatten(0, 1)).unflatten(0, feats[a].shape[:2])
                for a, ro in self.spatial.readouts.items()}

    def forward(self, frames: Tensor, last_frames: Tensor,
                replace: Replacements | None = None) -> dict[str, Tensor]:
        """Predicted volumes (``replace``: an ablation, as for :meth:`features`).

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
        return {a: self.hrf[a](d, last_frames) for a, d in self.drive(frames, replace).items()}

    def initialize_readouts(self, frames: Tensor, responses: dict[str, Tensor],
                            weighted: Weighted, shown: Tensor | None = None,
                            clips: Tensor | None = None) -> None:
        """Start the spatial readouts (and each voxel's HRF latency) from training volumes.

        Parameters
        ----------
        frames : Tensor of shape (n, C, H, W)
            For each training volume, the mean frame of the ``HRF_INIT_WINDOW_S`` seconds
            before it (:func:`~niflow.train.video_init.hrf_window_frames`): low-rank maps
            start at their contrast prior (and Gabor banks calibrate on them unless
            ``shown`` is given).
        responses : dict of str to Tensor of shape (n, V)
            The volumes, z-scored.
        weighted : callable
            Called once the banks are calibrated (:data:`Weighted`); returns the z-scored
            responses of m training volumes, for each of a few HRF peak latencies every
            area's per-frame features weighted by that HRF and summed over the frames before
            each volume, and the mean frame's features
            (:func:`~niflow.train.video_init.hrf_weighted_features`). With the temporal
            filters at the identity, a voxel's readout applied to them *is* the model's prediction
            of its volumes, so each Gaussian readout starts at the static search's best pRF
            for the latency that explains the voxel best, its HRF at that latency and its
            baseline at the mean frame's drive; the divisive normalisations start weak
            (:data:`NORM_START`). (Regressing on ``frames`` instead, as before, blurred
            whatever moved.)
        shown : Tensor of shape (m, C, H, W), optional
            Frames as shown, on which Gabor banks calibrate their channel gains (the
            features ``weighted`` weighs are those of single frames, whose fine-scale
            energy an averaged frame lacks); default ``frames``.
        clips : Tensor of shape (k, T, C, H, W), optional
            Runs of consecutive frames as shown
            (:func:`~niflow.train.video_init.calibration_clips`); needed by Gabor banks with
            motion-energy channels, which calibrate on them (a single frame shows no
            motion), as do then the normalisations' strengths.
        """
        spatial = self.spatial
        was_training = self.training
        self.eval()
        with torch.no_grad():
            x = spatial.standardize(frames if shown is None else shown)
            moving = self._moving_banks()
            # banks with motion-energy channels calibrate on clips below: a frame alone
            # shows no motion
            spatial.graph.calibrate(x, skip=moving)
            if moving and (clips is None or not len(clips)):
                raise ValueError(f"area(s) {sorted(moving)} have motion-energy channels: "
                                 f"their calibration needs clips of consecutive frames")
            norms = [m for m in spatial.graph.modules() if isinstance(m, DivisiveNorm)]
            if moving:
                self._calibrate_over_time(moving, clips)

                def run() -> None:
                    for i in range(0, clips.shape[0], 4):
                        self.features(clips[i:i + 4])
            else:
                def run() -> None:
                    for i in range(0, x.shape[0], 64):
                        spatial.graph(x[i:i + 64])
            for norm, drive in zip(norms, _mean_drives(run, norms), strict=True):
                norm.set_strength(NORM_START * drive, drive)
            spatial.initialize_lowrank(frames, responses)
            gaussian = [a for a, r in spatial.readouts.items() if isinstance(r, GaussianReadout)]
            if gaussian:
                self._initialize_gaussians(gaussian, weighted)
        self.train(was_training)

    def _moving_banks(self) -> dict[str, CausalQuadrature]:
        """Gabor-bank areas with motion-energy channels, by name."""
        return {a: m for a, m in self.space_time_conv.items()
                if isinstance(m, CausalQuadrature) and m.bank.n_heads}

    def _calibrate_over_time(self, moving: dict[str, CausalQuadrature], clips: Tensor) -> None:
        """Scale each channel of the banks in ``moving`` to unit mean energy over the clips'
        frames, leaving out each clip's first ``taps − 1`` (their filters reach before it)."""
        def energies(layer: CausalQuadrature) -> Iterator[Tensor]:
            for i in range(0, clips.shape[0], 4):
                x = self.spatial.standardize(clips[i:i + 4])
                yield layer(x).unflatten(0, x.shape[:2])[:, layer.taps - 1:].flatten(0, 1)

        for name, layer in moving.items():
            self.spatial.graph.areas[name].calibrate_gain(energies(layer))

    def _initialize_gaussians(self, areas: list[str], weighted: Weighted) -> None:
        """Every voxel's pRF, channel weights, HRF latency and baseline from the weighted
        features."""
        volumes, by_peak, mean = weighted()
        for a in areas:
            found = self._searched(a, by_peak, volumes[a])
            self._initialize_gaussian(a, by_peak, volumes[a], found)
            # before a run, the drive of the mean frame's features
            self.hrf[a].baseline.copy_(self.spatial.readouts[a](mean[a][None])[0])

    def _searched(self, area: str, by_peak: dict[float, dict[str, Tensor]],
                  responses: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Per voxel, the pRF and HRF latency whose weighted features explain it most:
        centre (V, 2), sigma (V,), explained (V,), peak latency (V,)."""
        best = None
        for peak, feats in by_peak.items():
            y = responses.to(feats[area].dtype)
            centre, sigma, explained = self.spatial.searched_prfs(area, feats, y)
            if best is None:
                best = (centre, sigma, explained, torch.full_like(explained, peak))
                continue
            win = explained > best[2]
            best = (torch.where(win[:, None], centre, best[0]), torch.where(win, sigma, best[1]),
                    torch.maximum(explained, best[2]),
                    torch.where(win, torch.full_like(explained, peak), best[3]))
        assert best is not None
        return best

    def _initialize_gaussian(self, area: str, by_peak: dict[float, dict[str, Tensor]],
                             responses: Tensor,
                             found: tuple[Tensor, Tensor, Tensor, Tensor]) -> None:
        centre, sigma, _, peak = found
        readout = self.spatial.readouts[area]
        readout.initialize(centre=centre, sigma=sigma)
        pooled = None
        for p, feats in by_peak.items():
            mine = readout.pooled(feats[area])  # (n, C, V)
            pooled = mine if pooled is None else torch.where((peak == p)[None, None], mine,
                                                               pooled)
        assert pooled is not None
        weight, bias = fit_channel_weights(pooled, responses.to(pooled.dtype))
        hrf = self.hrf[area]
        hrf.initialize(peak.double())
        # the weighted features carry each frame's share of the HRF but the bias does not:
        # in the model it is a steady drive, which the HRF scales by its area
        area_under = hrf.kernel().sum(1) / self.fps
        readout.initialize(centre=centre, sigma=sigma, weight=weight,
                           bias=bias / area_under.to(bias.dtype))

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

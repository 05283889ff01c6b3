"""Run configuration: model graph, readout and training settings, as dataclasses.

A configuration is plain data: it round-trips through JSON (``to_dict`` / ``from_dict``),
unknown keys and impossible values are rejected with a :class:`ConfigError` that names the
offending key, and the two presets (``default`` and ``basicnif``) are defined here once.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NONLINEARITIES = ("sigmoid", "relu", "square", "abs", "softplus", "tanh", "elu", "identity",
                  "relu2")
FILTERS = ("learned", "gabor", "gabor_init")
READOUTS = ("lowrank", "gaussian")
NORMS = ("none", "batch", "divisive")
POOLS = ("avg", "max", "none")
STIMULUS = "stimulus"
PRECISIONS = ("float32", "bfloat16", "float64")


class ConfigError(ValueError):
    """A configuration value or key is invalid."""


@dataclass
class AreaConfig:
    """One brain area: conv → nonlinearity → normalisation → [1×1 mix] → pooling.

    Parameters
    ----------
    name : str
        Area name; voxel responses are matched to areas by this name (e.g. ``"V1"``).
    sources : list of str
        Areas (or ``"stimulus"``) feeding this area. Several sources are resampled to the
        grid of the first one and concatenated on channels.
    channels, kernel : int
        Output channels and (square) kernel size of the area's convolution.
    padding : int or None
        Convolution padding; ``None`` keeps the grid size (``kernel // 2``).
    nonlinearity : str
        One of ``NONLINEARITIES``.
    norm : str
        ``"none"``, ``"batch"`` (batch norm) or ``"divisive"`` (each channel divided by the
        locally pooled mean activity of all channels plus a learned constant).
    mix_channels : int
        If > 0, a 1×1 convolution to this many channels followed by ``mix_nonlinearity``,
        after normalisation: a cheap second stage inside the area.
    pool : int
        Pooling window and stride (1 = no pooling).
    pool_type : str
        ``"avg"``, ``"max"`` or ``"none"``.
    filters : str
        ``"learned"``: a learned ``kernel`` × ``kernel`` convolution with ``channels``
        outputs. ``"gabor"``: a fixed bank of quadrature Gabor pairs (``orientations`` ×
        ``scales`` wavelengths, log-spaced from ``wavelength_min`` to ``wavelength_max``
        pixels; ``None``: width / 3.5) whose local energy ``√(even² + odd²)`` is each
        channel (so ``channels`` and ``kernel`` are not used); ``"gabor_init"``: the same
        bank, learned from there. Only for an area fed by the stimulus alone.
    dilation : int
        Spacing of a learned kernel's taps (1 = dense): a 3×3 kernel with dilation 2 compares
        positions 2 cells apart, e.g. an energy and the energy beyond a line's end.
    motion_hz : list of float
        Gabor banks in movie models only: temporal frequencies (Hz) of motion-energy
        channels. For each, every pair adds two channels, the energies of its complex
        response filtered over the past ``video.taps_s`` at ``+f`` and ``−f`` (the two
        directions across its stripes; :func:`niflow.model.filters.motion_filters`).
        Frequencies at or above half the frame rate, or with filters of one frame, are not
        built; static images (movies of one frame) ignore them.
    """

    name: str
    sources: list[str] = field(default_factory=lambda: [STIMULUS])
    channels: int = 6
    kernel: int = 3
    padding: int | None = None
    nonlinearity: str = "sigmoid"
    norm: str = "none"
    mix_channels: int = 0
    mix_nonlinearity: str = "relu"
    pool: int = 2
    pool_type: str = "avg"
    filters: str = "learned"
    dilation: int = 1
    orientations: int = 8
    scales: int = 4
    wavelength_min: float = 4.0
    wavelength_max: float | None = None
    motion_hz: list[float] = field(default_factory=list)

    @property
    def conv_channels(self) -> int:
        """Channels after the filtering stage (before any 1×1 mixing) of a static model;
        a movie model's motion-energy channels come on top (:class:`~niflow.model.areas.
        Area`)."""
        return self.orientations * self.scales if self.filters != "learned" else self.channels

    @property
    def out_channels(self) -> int:
        """The area's output channels in a static model (see :attr:`conv_channels`)."""
        return self.mix_channels if self.mix_channels > 0 else self.conv_channels

    @property
    def conv_padding(self) -> int:
        return self.dilation * (self.kernel // 2) if self.padding is None else self.padding


@dataclass
class ReadoutConfig:
    """Observation model shared by all areas.

    ``kind``: ``"lowrank"`` (rank-``rank`` separable softmax maps, the reference's model) or
    ``"gaussian"`` (one isotropic Gaussian pRF per voxel: centre, size, channel weights;
    :mod:`niflow.model.gaussian`). ``rank``: spatial components per voxel (low-rank only);
    ``spatial_lr_scale`` and ``lr_scale`` multiply the training learning rate for the
    spatial parameters (logits, or Gaussian centres and log-sizes) and for the other readout
    parameters (a larger spatial rate lets the maps sharpen onto the receptive field);
    ``l1_channels`` is an L1 penalty on the channel weights per voxel. ``refit``: after
    training, every Gaussian readout's channel weights and bias are refitted in closed form
    on the training and validation rows (per-voxel ridge, penalty by generalised
    cross-validation: :mod:`niflow.model.refit`) where there are at least 10 such rows per
    channel of the area; static image models only.
    """

    kind: str = "lowrank"
    rank: int = 2
    spatial_lr_scale: float = 1.0
    lr_scale: float = 1.0
    l1_channels: float = 0.0
    init_spatial_std: float = 0.1
    init: str = "contrast"  # "contrast": maps start at each voxel's contrast correlation
    map_chunk_mb: float = 256.0  # dense maps larger than this are built in voxel blocks
    refit: bool = True


@dataclass
class TrainConfig:
    """Optimisation settings (Adam)."""

    lr: float = 0.01
    batch_size: int = 3
    epochs: int = 15
    weight_decay: float = 0.0
    seed: int = 0
    val_fraction: float = 0.1
    patience: int = 5
    area_weighting: str = "voxels"  # "voxels": every voxel counts once; "equal": per area
    threads: int = 0  # 0 = leave torch's default
    # "bfloat16": forward and backward under bf16 autocast (weights, loss and Adam stay
    # float32); faster on hardware with bf16 matrix units, at a measured cost in accuracy.
    # "float64": everything in double precision (slow; for numerical checks)
    precision: str = "float32"


@dataclass
class DataConfig:
    """How inputs are read and scaled."""

    stim_variable: str = "stim"
    stim_scale: str = "auto"  # auto: integers / dtype max, floats / max if max > 1
    input_norm: str = "standardize"  # standardize with train-set pixel mean/std, or "none"
    # visual angle subtended by the stimulus width (degrees); None: results in pixels only
    visual_field_deg: float | None = None
    # larger stimuli are area-averaged by a whole factor to within this many pixels before
    # the first area (0: never); pRFs stay in stimulus pixels
    input_max_px: int = 0


@dataclass
class SelectConfig:
    """Automatic model selection and ensembling (:mod:`niflow.train.select`).

    ``candidates``: names from :data:`FAMILY`; each replaces the configuration's areas and
    readout, is trained on the training rows and scored on the validation rows (median r
    over all voxels), and the best one is kept. Empty: train the configuration as given.
    ``members``: the kept model plus ``members - 1`` more of the same kind, each trained
    with its own validation part (drawn with seed ``train.seed + i``) and initial weights;
    predictions are their average and pRF parameters their median. ``member_rows``: with
    few rows, more members (static images only; ``members == 1`` stays one model): the
    ensemble has at least ``ceil(member_rows / rows)`` members, ``rows`` the training and
    validation rows, but no more than ``max_members`` (0: always ``members``); a fit costs
    about its rows, so the ensemble's cost stays about that of ``member_rows`` rows.
    ``budget_s``: no further candidate or member is started once this many seconds of
    training have been spent (0: no limit); what was skipped is recorded.
    """

    candidates: list[str] = field(default_factory=list)
    members: int = 1
    member_rows: int = 0
    max_members: int = 4
    budget_s: float = 0.0


@dataclass
class VideoConfig:
    """Movie models (:mod:`niflow.model.video`); unused for static images.

    ``space_time``: ``"factorised"`` ((2+1)D: each area's 2D filters per frame, then a
    causal temporal filter per channel) or ``"full"`` (learned areas filter space and time
    at once with causal 3D kernels; a Gabor bank filters its quadrature responses in time
    before their energy, a learned motion-energy bank, then each channel). ``taps_s``: the
    temporal extent of each area's filters (seconds). ``hrf_span_s``: the longest
    haemodynamic lag. ``segment_s``: volumes per training step (seconds of a run).
    """

    space_time: str = "factorised"
    taps_s: float = 0.5
    hrf_span_s: float = 32.0
    segment_s: float = 60.0


SPACE_TIME = ("factorised", "full")


@dataclass
class RunConfig:
    """Everything needed to rebuild and retrain a model."""

    preset: str = "default"
    areas: list[AreaConfig] = field(default_factory=list)
    readout: ReadoutConfig = field(default_factory=ReadoutConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    video: VideoConfig = field(default_factory=VideoConfig)

    def area(self, name: str) -> AreaConfig:
        for area in self.areas:
            if area.name == name:
                return area
        raise ConfigError(f"no area named {name!r}; areas are {self.area_names()}")

    def area_names(self) -> list[str]:
        return [a.name for a in self.areas]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> RunConfig:
        validate(self)
        return self


def _basicnif_areas() -> list[AreaConfig]:
    return [
        AreaConfig("V1", [STIMULUS], channels=6, kernel=3, nonlinearity="sigmoid"),
        AreaConfig("V2", ["V1"], channels=6, kernel=3, nonlinearity="sigmoid"),
    ]


def _default_areas() -> list[AreaConfig]:
    # An energy-like V1 (wide kernels, squaring, divisive normalisation, 1×1 mixing) beats
    # the sigmoid reference core on strongly nonlinear voxels; V2 rectifies V1's output.
    return [
        AreaConfig(
            "V1", [STIMULUS], channels=16, kernel=7, nonlinearity="square", norm="divisive",
            mix_channels=16, mix_nonlinearity="relu",
        ),
        AreaConfig("V2", ["V1"], channels=16, kernel=3, nonlinearity="relu", norm="batch"),
    ]


def _gabor_areas() -> list[AreaConfig]:
    # a fixed multi-scale quadrature bank (8 orientations × 4 wavelengths) with learned
    # normalisation: V1's filters need not be learned from a few hundred images; V2's 3×3
    # taps 2 cells (4 px) apart reach the energy beyond a line's end (end-stopping,
    # junctions) at the parameter count of a dense 3×3 kernel
    return [
        AreaConfig("V1", [STIMULUS], filters="gabor", orientations=8, scales=4,
                   nonlinearity="identity", norm="divisive"),
        AreaConfig("V2", ["V1"], channels=16, kernel=3, dilation=2, nonlinearity="relu",
                   norm="batch"),
    ]


# The family automatic selection chooses from: name -> (areas, readout kind). Each is
# defined for the two-area V1 → V2 layout: a configuration with further areas under a
# member's V1 and V2 takes each member's V1 and V2 and keeps the further areas (V3 reading
# V2, ...); one with other areas keeps its own.
FAMILY: dict[str, tuple] = {
    "learned-gaussian": (_default_areas, "gaussian"),
    "gabor-gaussian": (_gabor_areas, "gaussian"),
    "learned-lowrank": (_default_areas, "lowrank"),
}


def _takes_family_areas(cfg: RunConfig, name: str) -> bool:
    """Whether :func:`candidate` ``name`` replaces ``cfg``'s first areas by its own: those
    of the same layout (V1 and V2), or further areas under a V1 and V2 that are a family
    member's (as added for a response file's V3, or ``configs/three-areas.json``)."""
    own = FAMILY[name][0]()
    if cfg.area_names() == [a.name for a in own]:
        return True
    first = cfg.areas[:len(own)]
    return len(cfg.areas) > len(own) and any(first == make() for make, _ in FAMILY.values())


def candidate(cfg: RunConfig, name: str) -> RunConfig:
    """``cfg`` with the areas and readout of family member ``name``, selection switched off.

    The family's areas are V1 and V2: a configuration of V1 and V2, or of a member's V1
    and V2 followed by further areas, takes the member's V1 and V2 (and keeps the further
    areas); one whose areas differ keeps them and takes only the readout kind.
    """
    if name not in FAMILY:
        raise ConfigError(f"config.select.candidates: unknown candidate {name!r}; "
                          f"choose from {sorted(FAMILY)}")
    make_areas, kind = FAMILY[name]
    out = from_dict(cfg.to_dict())
    if _takes_family_areas(out, name):
        family = make_areas()
        out.areas = family + out.areas[len(family):]
    out.readout.kind = kind
    out.select = SelectConfig()
    return out.validate()


def preset(name: str = "default") -> RunConfig:
    """Return a fresh configuration for a named preset.

    ``"basicnif"`` reproduces the reference script (two 3×3 sigmoid areas with 6 channels,
    rank 2, Adam 0.01, batch 3, 15 epochs); ``"default"`` chooses on the validation rows
    between a fixed Gabor-bank V1 and a learned V1 (both with Gaussian pRF readouts) and
    averages an ensemble of two models of the winner (:mod:`niflow.train.select`).
    """
    if name == "basicnif":
        return RunConfig(
            preset="basicnif",
            areas=_basicnif_areas(),
            readout=ReadoutConfig(rank=2, init_spatial_std=0.2, init="random"),
            train=TrainConfig(val_fraction=0.1, patience=15),
            data=DataConfig(input_norm="none"),
        )
    if name == "default":
        return RunConfig(
            preset="default",
            areas=_default_areas(),
            readout=ReadoutConfig(kind="gaussian", rank=2, spatial_lr_scale=10.0,
                                  lr_scale=1.0),
            # batch 16 at lr 0.006 for 25 epochs: same held-out r as batch 8 at 0.003 for 30
            # epochs in 2/3 of the time (BENCHMARKS.md, "demo training")
            train=TrainConfig(lr=0.006, batch_size=16, epochs=25, patience=6),
            # chosen on the validation rows among a Gabor-bank and a learned V1, both with
            # Gaussian pRF readouts, then an ensemble of two of the winner (BENCHMARKS.md,
            # accuracy; three fits: under 60 s at BRAINS size on 2 cores)
            # with fewer than 300 training and validation rows up to 4 members (~100
            # images: +0.012 median r in both areas of the small-data regime, BENCHMARKS.md)
            select=SelectConfig(candidates=["gabor-gaussian", "learned-gaussian"], members=2,
                                member_rows=300, max_members=4, budget_s=0.0),
        )
    raise ConfigError(f"unknown preset {name!r}; choose one of {PRESETS}")


PRESETS = ("default", "basicnif")


def _from_fields(cls, data: dict[str, Any], where: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(names)}")
    missing = sorted(n for n, f in names.items() if n not in data
                     and f.default is dataclasses.MISSING
                     and f.default_factory is dataclasses.MISSING)
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {missing}")
    return cls(**data)


def from_dict(data: dict[str, Any]) -> RunConfig:
    """Build a validated :class:`RunConfig` from a mapping.

    Keys missing from the mapping take the values of its ``preset`` (default ``"default"``);
    nested sections (``readout``, ``train``, ``data``) are merged key by key, while ``areas``,
    when given, replaces the preset's list entirely.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"config: expected a mapping, got {type(data).__name__}")
    allowed = {"preset", "areas", "readout", "train", "data", "select", "video"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"config: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    base = preset(data.get("preset", "default"))
    merged = base.to_dict()
    for section in ("readout", "train", "data", "select", "video"):
        if section in data:
            if not isinstance(data[section], dict):
                raise ConfigError(f"config.{section}: expected a mapping")
            merged[section] = {**merged[section], **data[section]}
    if "areas" in data:
        if not isinstance(data["areas"], list):
            raise ConfigError("config.areas: expected a list of areas")
        merged["areas"] = data["areas"]
    cfg = RunConfig(
        preset=merged["preset"],
        areas=[_from_fields(AreaConfig, a, f"config.areas[{i}]")
               for i, a in enumerate(merged["areas"])],
        readout=_from_fields(ReadoutConfig, merged["readout"], "config.readout"),
        train=_from_fields(TrainConfig, merged["train"], "config.train"),
        data=_from_fields(DataConfig, merged["data"], "config.data"),
        select=_from_fields(SelectConfig, merged["select"], "config.select"),
        video=_from_fields(VideoConfig, merged["video"], "config.video"),
    )
    return cfg.validate()


def read_json(path: str | Path) -> dict[str, Any]:
    """The raw mapping of a JSON config file (:class:`ConfigError` if unreadable)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: not a readable JSON file ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object at the top level")
    return data


def load(path: str | Path) -> RunConfig:
    """Read a JSON configuration file (see ``configs/`` for examples)."""
    data = read_json(path)
    try:
        return from_dict(data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _check_type(value: Any, types: type | tuple[type, ...], where: str) -> None:
    # bool is an int in Python; a flag where a count is expected is a mistake
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise ConfigError(f"{where}: expected {types}, got bool")
    _check(isinstance(value, types), f"{where}: expected {types}, got {type(value).__name__}")


def check_areas_kept(cfg: RunConfig) -> None:
    """Refuse V1/V2 settings that selection would silently replace by a candidate's.

    Not part of :func:`validate`: a configuration with areas of one's own and the default
    ``select`` builds a model as given; only training it with selection would drop them.
    """
    replacing = [c for c in cfg.select.candidates if c in FAMILY and _takes_family_areas(cfg, c)]
    if not replacing or cfg.preset not in PRESETS:
        return
    own = {a.name: a for a in preset(cfg.preset).areas}
    changed = [a.name for a in cfg.areas if a.name in own and own[a.name] != a]
    if not changed:
        return
    raise ConfigError(
        f"config.areas: {' and '.join(changed)} set differently from preset "
        f"{cfg.preset!r}, but config.select.candidates {cfg.select.candidates} trains each "
        f"candidate's own {' and '.join(own)}, so these settings would not be "
        "used; set \"select\": {\"candidates\": []} to train your areas, or leave \"areas\" "
        "out to select among the candidates")


def validate(cfg: RunConfig) -> None:
    """Raise :class:`ConfigError` for wrong types, impossible values or a broken area graph."""
    _check(len(cfg.areas) > 0, "config.areas: at least one area is required")
    seen: set[str] = set()
    for i, a in enumerate(cfg.areas):
        where = f"config.areas[{i}] ({a.name!r})"
        _check_type(a.name, str, f"{where}.name")
        _check(a.name != STIMULUS and a.name not in seen and a.name.isidentifier(),
               f"{where}.name: must be a unique identifier other than 'stimulus'")
        _check_type(a.sources, list, f"{where}.sources")
        _check(len(a.sources) > 0, f"{where}.sources: at least one source is required")
        for s in a.sources:
            _check_type(s, str, f"{where}.sources")
            _check(s == STIMULUS or s in seen,
                   f"{where}.sources: {s!r} is not 'stimulus' or an earlier area ({sorted(seen)})")
        for key in ("channels", "kernel", "pool", "mix_channels", "dilation"):
            _check_type(getattr(a, key), int, f"{where}.{key}")
        for key in ("channels", "kernel", "pool", "dilation"):
            _check(getattr(a, key) >= 1, f"{where}.{key}: must be >= 1, got {getattr(a, key)}")
        _check(a.mix_channels >= 0, f"{where}.mix_channels: must be >= 0")
        if a.padding is not None:
            _check_type(a.padding, int, f"{where}.padding")
            _check(a.padding >= 0, f"{where}.padding: must be >= 0, got {a.padding}")
        _check(a.nonlinearity in NONLINEARITIES,
               f"{where}.nonlinearity: {a.nonlinearity!r} not in {NONLINEARITIES}")
        _check(a.mix_nonlinearity in NONLINEARITIES,
               f"{where}.mix_nonlinearity: {a.mix_nonlinearity!r} not in {NONLINEARITIES}")
        _check(a.norm in NORMS, f"{where}.norm: {a.norm!r} not in {NORMS}")
        _check(a.pool_type in POOLS, f"{where}.pool_type: {a.pool_type!r} not in {POOLS}")
        _check(a.filters in FILTERS, f"{where}.filters: {a.filters!r} not in {FILTERS}")
        if a.filters != "learned":
            _check(a.sources == [STIMULUS],
                   f"{where}.filters: a Gabor bank needs the stimulus as its only source")
            for key in ("orientations", "scales"):
                _check_type(getattr(a, key), int, f"{where}.{key}")
                _check(getattr(a, key) >= 1, f"{where}.{key}: must be >= 1")
            _check_type(a.wavelength_min, (int, float), f"{where}.wavelength_min")
            _check(a.wavelength_min >= 2, f"{where}.wavelength_min: must be >= 2 pixels")
            if a.wavelength_max is not None:
                _check_type(a.wavelength_max, (int, float), f"{where}.wavelength_max")
                _check(a.wavelength_max >= a.wavelength_min,
                       f"{where}.wavelength_max: must be >= wavelength_min")
        _check(isinstance(a.motion_hz, list)
               and all(isinstance(f, (int, float)) and not isinstance(f, bool) and f > 0
                       for f in a.motion_hz),
               f"{where}.motion_hz: expected a list of positive frequencies (Hz), "
               f"got {a.motion_hz!r}")
        _check(not a.motion_hz or a.filters != "learned",
               f"{where}.motion_hz: only a Gabor bank (filters 'gabor' or 'gabor_init') has "
               f"motion-energy channels")
        seen.add(a.name)
    r = cfg.readout
    _check(r.kind in READOUTS, f"config.readout.kind: {r.kind!r} not in {READOUTS}")
    _check_type(r.rank, int, "config.readout.rank")
    _check(r.rank >= 1, f"config.readout.rank: must be >= 1, got {r.rank}")
    for key in ("spatial_lr_scale", "lr_scale", "init_spatial_std"):
        _check_type(getattr(r, key), (int, float), f"config.readout.{key}")
        _check(getattr(r, key) > 0 and math.isfinite(getattr(r, key)),
               f"config.readout.{key}: must be a finite number > 0, got {getattr(r, key)}")
    _check(r.init in ("contrast", "random"),
           f"config.readout.init: {r.init!r} not in ('contrast', 'random')")
    _check_type(r.map_chunk_mb, (int, float), "config.readout.map_chunk_mb")
    _check(r.map_chunk_mb >= 0, "config.readout.map_chunk_mb: must be >= 0 (0 = never chunk)")
    _check_type(r.l1_channels, (int, float), "config.readout.l1_channels")
    _check(r.l1_channels >= 0 and math.isfinite(r.l1_channels),
           f"config.readout.l1_channels: must be a finite number >= 0, got {r.l1_channels}")
    _check_type(r.refit, bool, "config.readout.refit")
    t = cfg.train
    for key in ("batch_size", "epochs", "seed", "patience", "threads"):
        _check_type(getattr(t, key), int, f"config.train.{key}")
    _check_type(t.lr, (int, float), "config.train.lr")
    _check(t.lr > 0 and math.isfinite(t.lr), f"config.train.lr: must be a finite number > 0, "
           f"got {t.lr}")
    # numpy's and torch's generators take seeds in [0, 2**63)
    _check(0 <= t.seed < 2**63, f"config.train.seed: must be in [0, 2**63), got {t.seed}")
    for key in ("batch_size", "epochs", "patience"):
        _check(getattr(t, key) >= 1, f"config.train.{key}: must be >= 1, got {getattr(t, key)}")
    _check(t.threads >= 0, "config.train.threads: must be >= 0")
    _check_type(t.val_fraction, (int, float), "config.train.val_fraction")
    _check(0 <= t.val_fraction < 0.5, "config.train.val_fraction: must be in [0, 0.5)")
    _check_type(t.weight_decay, (int, float), "config.train.weight_decay")
    _check(t.weight_decay >= 0 and math.isfinite(t.weight_decay),
           f"config.train.weight_decay: must be a finite number >= 0, got {t.weight_decay}")
    _check(t.area_weighting in ("voxels", "equal"),
           f"config.train.area_weighting: {t.area_weighting!r} not in ('voxels', 'equal')")
    _check(t.precision in PRECISIONS,
           f"config.train.precision: {t.precision!r} not in {PRECISIONS}")
    sel = cfg.select
    _check_type(sel.candidates, list, "config.select.candidates")
    for c in sel.candidates:
        _check(c in FAMILY, f"config.select.candidates: unknown candidate {c!r}; choose "
               f"from {sorted(FAMILY)}")
    _check(len(set(sel.candidates)) == len(sel.candidates),
           "config.select.candidates: a candidate is listed twice")
    for key in ("members", "member_rows", "max_members"):
        _check_type(getattr(sel, key), int, f"config.select.{key}")
    _check(1 <= sel.members <= 32, f"config.select.members: must be in 1..32, got {sel.members}")
    _check(sel.member_rows >= 0,
           f"config.select.member_rows: must be >= 0 (0 = always members), got {sel.member_rows}")
    _check(1 <= sel.max_members <= 32,
           f"config.select.max_members: must be in 1..32, got {sel.max_members}")
    _check_type(sel.budget_s, (int, float), "config.select.budget_s")
    _check(sel.budget_s >= 0 and math.isfinite(sel.budget_s),
           "config.select.budget_s: must be a finite number >= 0 (0 = no limit)")
    v = cfg.video
    _check(v.space_time in SPACE_TIME,
           f"config.video.space_time: {v.space_time!r} not in {SPACE_TIME}")
    for name in ("taps_s", "hrf_span_s", "segment_s"):
        value = getattr(v, name)
        _check_type(value, (int, float), f"config.video.{name}")
        _check(math.isfinite(value) and value > 0,
               f"config.video.{name}: must be a positive number of seconds, got {value}")
    d = cfg.data
    _check_type(d.stim_variable, str, "config.data.stim_variable")
    _check(d.stim_scale in ("auto", "none"), f"config.data.stim_scale: {d.stim_scale!r}")
    _check(d.input_norm in ("standardize", "none"), f"config.data.input_norm: {d.input_norm!r}")
    _check_type(d.input_max_px, int, "config.data.input_max_px")
    _check(d.input_max_px >= 0, f"config.data.input_max_px: must be >= 0, got {d.input_max_px}")
    if d.visual_field_deg is not None:
        _check_type(d.visual_field_deg, (int, float), "config.data.visual_field_deg")
        _check(math.isfinite(d.visual_field_deg) and d.visual_field_deg > 0,
               f"config.data.visual_field_deg: must be > 0, got {d.visual_field_deg}")


def save(cfg: RunConfig, path: str | Path) -> None:
    """Write the configuration as JSON, atomically."""
    from niflow._atomic import atomic_write_text

    atomic_write_text(Path(path), json.dumps(cfg.to_dict(), indent=2) + "\n")

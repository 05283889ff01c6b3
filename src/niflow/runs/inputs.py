"""Validation at the door of a training run: data, configuration and the model's geometry together,
before anything is written.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from niflow.config import AreaConfig, ConfigError, RunConfig, check_areas_kept, from_dict
from niflow.data.dataset import (
    DroppedVoxelsWarning,
    Split,
    auto_test_rows,
    is_auto,
    make_split,
    usable_voxel_columns,
)
from niflow.data.errors import DataError
from niflow.data.io import load_responses, load_stimuli
from niflow.data.validate import (
    RowSpec,
    _spec_text,
    _where,
    check_areas,
    check_response_array,
    check_row_indices,
    check_rows,
    check_stimulus_array,
    image_shape,
    new_area_names,
)
from niflow.model.areas import AreaGraph, input_pool


@dataclass
class Inputs:
    """Checked inputs of a training run: what :func:`niflow.runs.pipeline.train_inputs` consumes.

    Attributes
    ----------
    stim : ndarray of shape (n_samples, height, width) or colour (n_samples, height, width, 3)
        or (n_samples, 3, height, width), as read (dtype and layout unchanged).
    responses : dict of str to ndarray of shape (n_samples, n_voxels)
        Every column of the input, dropped voxels included (``voxel_index`` selects).
    config : RunConfig
        Validated, geometry included.
    split : Split
        Train, validation and test rows.
    voxel_index : dict of str to ndarray of shape (n_kept,), int
        Columns of each area that will be fitted.
    warnings : list of str
        One line per area with dropped voxels (also issued as ``DroppedVoxelsWarning``).
    sources : dict of str to str
        Input files (``{"stim": path, "bold": path}``), empty for arrays.
    areas_note : str or None
        The line saying which response areas were added to the configuration
        (:func:`config_for_areas`; also issued as :class:`AddedAreasWarning`).
    pooled_note : str or None
        The line saying that the stimuli reach the first area in pixel blocks
        (:func:`pooled_stimulus_note`; also issued as :class:`PooledStimulusWarning`).
    """

    stim: np.ndarray
    responses: dict[str, np.ndarray]
    config: RunConfig
    split: Split
    voxel_index: dict[str, np.ndarray]
    warnings: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)
    areas_note: str | None = None
    pooled_note: str | None = None

    @property
    def n_samples(self) -> int:
        return int(self.stim.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(channels, height, width)`` of one stimulus."""
        return image_shape(self.stim)

    @property
    def test_rows(self) -> np.ndarray:
        return self.split.test

    @property
    def n_voxels(self) -> dict[str, int]:
        """Voxels that will be fitted, per area."""
        return {a: int(i.size) for a, i in self.voxel_index.items()}


class AddedAreasWarning(UserWarning):
    """The response file names areas the configuration lacks; they were added to it."""


class PooledStimulusWarning(UserWarning):
    """Stimuli larger than ``data.input_max_px`` reach the first area in pixel blocks, or
    movie frames are large enough that pooling them would save much time and memory."""


def pooled_stimulus_note(cfg: RunConfig, shape: tuple[int, int, int], source: str,
                         ) -> str | None:
    """The line saying that stimuli of ``shape`` (C, H, W) from ``source`` reach the first
    area averaged over pixel blocks (:func:`niflow.model.areas.input_pool`), or ``None``."""
    k = input_pool(shape[1:], cfg.data.input_max_px)
    if k == 1:
        return None
    h, w = shape[1:]
    return (f"{source}: stimuli of {h} x {w} px reach the first area averaged over {k} x {k} "
            f"pixel blocks ({-(-h // k)} x {-(-w // k)}, as data.input_max_px "
            f"{cfg.data.input_max_px} asks; pRFs stay in stimulus pixels); set "
            f"\"data\": {{\"input_max_px\": 0}} in a config file to keep every pixel, at "
            f"about {k * k} times the time and memory")


# How deep in the visual hierarchy an area a response file may name sits (upper case; other
# names: UNKNOWN_DEPTH). An area the configuration lacks reads the deepest area it has of a
# lower depth, so V3 reads V2, V4 reads V3, and LO and MT both read V4.
AREA_DEPTH = {
    "V1": 1, "V2": 2, "V3": 3, "V3V": 3, "V3D": 3, "VP": 3,
    "V3A": 4, "V3B": 4, "V3AB": 4, "V4": 4, "HV4": 4, "V4V": 4,
    "VO1": 5, "VO2": 5, "LO1": 5, "LO2": 5, "LO": 5, "LOC": 5, "TO1": 5, "TO2": 5,
    "MT": 5, "HMT": 5, "V5": 5, "MST": 5,
}
UNKNOWN_DEPTH = 6
POOL_FROM = 12  # an added area halves its source's grid only if that is this many cells


def _depth(name: str) -> int:
    return AREA_DEPTH.get(name.upper(), UNKNOWN_DEPTH)


def added_area(name: str, source: str, pool: int) -> AreaConfig:
    """The area added for a response area the configuration lacks: the default preset's V2
    (16 channels, 3×3 kernels, ReLU, batch normalisation) reading ``source``."""
    return AreaConfig(name, [source], channels=16, kernel=3, nonlinearity="relu",
                      norm="batch", pool=pool)


def config_for_areas(cfg: RunConfig, names: list[str], shape: tuple[int, int, int],
                     source: str = "responses") -> tuple[RunConfig, str | None]:
    """``cfg`` with an area for every response area in ``names`` that it lacks.

    A response file may name areas beyond the configuration's (e.g. V3 and V4 beside V1 and
    V2). Each is added after the configuration's areas as :func:`added_area`, in the order
    of :data:`AREA_DEPTH`, reading the deepest area already there of a lower depth (names
    not in the table read the deepest area: siblings, not a chain). It halves its source's
    grid (pooling 2) while that grid has at least :data:`POOL_FROM` cells on its shorter
    side, so that deeper areas see larger regions without collapsing to a few cells.

    Parameters
    ----------
    names : list of str
        Response areas, in file order. Names that are not identifiers (or ``"stimulus"``),
        and names that differ from an area of ``cfg`` only in case (``v1``), are not added:
        :func:`niflow.data.validate.check_areas` refuses them.
    shape : tuple of int
        ``(channels, height, width)`` of one stimulus (frame).
    source : str
        The response file, named in the note.

    Returns
    -------
    cfg : RunConfig
        ``cfg`` itself if nothing is missing, else a validated copy with the added areas.
    note : str or None
        One line naming what was added and how to choose otherwise.
    """
    missing = new_area_names(names, cfg)
    if not missing:
        return cfg, None
    out = from_dict(cfg.to_dict())
    said = []
    for name in sorted(missing, key=_depth):  # stable: file order within a depth
        below = [a.name for a in out.areas if _depth(a.name) < _depth(name)]
        # the last of the deepest (max keeps the first of equals, hence reversed)
        feed = max(reversed(below), key=_depth) if below else out.areas[-1].name
        with torch.device("meta"):
            grid = AreaGraph(out.areas, shape[0], shape[1:], input_pool=input_pool(
                shape[1:], cfg.data.input_max_px)).geometries[feed].grid
        pool = 2 if min(grid) >= POOL_FROM else 1
        out.areas.append(added_area(name, feed, pool))
        said.append(f"{name} reads {feed}" + (" (pooled by 2)" if pool == 2 else ""))
    out.validate()
    are = f"areas {', '.join(missing)} are" if len(missing) > 1 else f"area {missing[0]} is"
    note = (f"{source}: {are} not in the model config "
            f"({', '.join(cfg.area_names())}), so added: {'; '.join(said)}; each "
            f"has 16 channels, 3x3 kernels, ReLU and batch norm (set \"areas\" in a config "
            f"file to choose otherwise)")
    return out, note


def check_config(cfg: RunConfig, shape: tuple[int, int, int], source: str = "config",
                 ) -> RunConfig:
    """Keys, types and values of ``cfg``, then its area graph on images of ``shape``.

    Parameters
    ----------
    shape : tuple of int
        ``(channels, height, width)`` of one stimulus.
    source : str
        Where the configuration came from (a file, ``"command line"``), for messages.
    """
    try:
        cfg.validate()
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    try:
        # on the meta device nothing is allocated and no random number is drawn: only the
        # shapes are traced, by the same code that builds the real model
        with torch.device("meta"):
            AreaGraph(cfg.areas, shape[0], shape[1:],
                      input_pool=input_pool(shape[1:], cfg.data.input_max_px))
    except ConfigError as err:
        raise ConfigError(f"{source}: {err} for stimuli of {shape[1]}x{shape[2]} pixels; use "
                          f"a smaller kernel, more padding or less pooling") from None
    try:
        check_areas_kept(cfg)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    return cfg


def check_arrays(stim: np.ndarray, responses: dict[str, np.ndarray], cfg: RunConfig,
                 test_rows: RowSpec, *, train_rows: RowSpec = None,
                 sources: dict[str, str] | None = None, config_source: str = "config",
                 require_test_rows: bool = False) -> Inputs:
    """Validate arrays for training; nothing is written.

    Parameters
    ----------
    stim : ndarray of shape (n_samples, height, width) or colour (n_samples, height, width, 3)
        or (n_samples, 3, height, width) (:mod:`niflow.data.layout`)
    responses : dict of str to ndarray of shape (n_samples, n_voxels)
    cfg : RunConfig
    test_rows : str, path or array of int
        Held-out rows: a spec such as ``"288:360"`` or indices; ``"auto"`` (the command
        line's default) is ``"288:360"`` for the 360 rows of the BRAINS layout and an error
        for any other number (:func:`niflow.data.dataset.auto_test_rows`).
    train_rows : str, path or array of int, optional
        Rows to train on (default: all rows not in ``test_rows``); must not overlap them.
    sources : dict, optional
        ``{"stim": path, "bold": path}`` the arrays were read from (named in messages).
    config_source : str
        Where ``cfg`` came from, for messages.
    require_test_rows : bool
        Refuse an empty test set (the command line always scores held-out rows).

    Returns
    -------
    Inputs

    Raises
    ------
    DataError, ConfigError
        With a one-line message naming the file, the variable and the fix.
    """
    sources = dict(sources or {})
    stim_source = sources.get("stim", "stimuli")
    bold_source = sources.get("bold", "responses")
    try:
        cfg.validate()
    except ConfigError as err:
        raise ConfigError(f"{config_source}: {err}") from None
    stim_var = cfg.data.stim_variable
    stim = check_stimulus_array(stim, stim_source, stim_var)
    if not isinstance(responses, dict) or not responses:
        raise DataError(f"{bold_source}: no response variables; expected one (n_samples, "
                        f"n_voxels) array per area, e.g. 'V1', 'V2'")
    responses = {a: check_response_array(r, bold_source, a) for a, r in responses.items()}
    check_rows(stim, responses, stim_source, stim_var, bold_source)
    check_config(cfg, image_shape(stim), config_source)
    cfg, areas_note = config_for_areas(cfg, list(responses), image_shape(stim), bold_source)
    if areas_note:
        warnings.warn(areas_note, AddedAreasWarning, stacklevel=2)
        check_config(cfg, image_shape(stim), config_source)
    check_areas(responses, cfg, bold_source)
    for area, r in responses.items():
        if r.shape[1] == 0:
            raise DataError(f"{_where(bold_source, area)} has no voxels (shape {r.shape})")

    n = stim.shape[0]
    if is_auto(test_rows):  # the BRAINS rows for the BRAINS layout, otherwise refused
        test_rows = auto_test_rows(n, stim_source)
    test = check_row_indices(test_rows, n, "test rows")
    if require_test_rows and test.size == 0:
        raise DataError(f"test rows {_spec_text(test_rows)} selects no rows of {stim_source} "
                        f"({n} samples); held-out rows are required")
    train = None if train_rows is None else check_row_indices(train_rows, n, "train rows")
    split = make_split(n, test, cfg.train.val_fraction, cfg.train.seed, train)

    fit_rows = np.concatenate([split.train, split.val])
    index, notes = usable_voxel_columns(responses, fit_rows, bold_source)
    for note in notes:
        warnings.warn(note, DroppedVoxelsWarning, stacklevel=2)
    pooled = pooled_stimulus_note(cfg, image_shape(stim), stim_source)
    if pooled:
        warnings.warn(pooled, PooledStimulusWarning, stacklevel=2)
    return Inputs(stim=stim, responses=responses, config=cfg, split=split, voxel_index=index,
                  warnings=notes, sources={k: str(v) for k, v in sources.items()},
                  areas_note=areas_note, pooled_note=pooled)


def validate_inputs(stim_path: str | Path, bold_path: str | Path, cfg: RunConfig,
                    test_rows: RowSpec, *, train_rows: RowSpec = None,
                    config_source: str = "config") -> Inputs:
    """Read and validate the files of a training run; nothing is written.

    Parameters
    ----------
    stim_path : path
        Stimulus file (``.mat`` v5/v7.3, ``.npz``, ``.h5``) with variable
        ``cfg.data.stim_variable`` of shape (n_samples, height, width), or colour
        (n_samples, height, width, 3) or (n_samples, 3, height, width).
    bold_path : path
        Response file with one (n_samples, n_voxels) variable per area.
    cfg : RunConfig
    test_rows, train_rows : str, path or array of int
        See :func:`check_arrays`; at least one test row is required.
    config_source : str
        Where ``cfg`` came from, for messages.

    Returns
    -------
    Inputs
    """
    try:
        cfg.validate()  # a broken config is reported before any file is read
    except ConfigError as err:
        raise ConfigError(f"{config_source}: {err}") from None
    stim = load_stimuli(stim_path, cfg.data.stim_variable)
    responses = load_responses(bold_path)
    return check_arrays(stim, responses, cfg, test_rows, train_rows=train_rows,
                        sources={"stim": str(stim_path), "bold": str(bold_path)},
                        config_source=config_source, require_test_rows=True)

"""Validation at the door: every input is checked before anything is written.

The command line (``niflow train``, ``niflow evaluate``) and the Python API
(:func:`niflow.train_run`) go through the same checks, so a problem with the data or the
configuration is reported the same way everywhere: one :class:`~niflow.data.errors.DataError` or
:class:`~niflow.config.ConfigError` whose one-line message names the file, the variable and
what to do, raised before a run folder exists.

Checked here:

* files: missing, unreadable, of an unsupported kind, without the expected variable (in
  :mod:`niflow.data.io`, through :func:`check_stimulus_array` and :func:`check_response_array`);
* stimuli: numeric, one grey or colour image per row (layouts: :mod:`niflow.data.layout`),
  at least one row, finite;
* responses: numeric, one 2-D (n_samples, n_voxels) array per area, at least one voxel;
* row counts of stimuli and responses, with a diagnosis of arrays that look transposed
  (MATLAB stores images as height × width × n; a voxel-by-sample matrix is common too);
* area names against the model configuration;
* test rows (and optional training rows): in range, not repeated, not overlapping;
* voxels with NaN/Inf or without variance: dropped with one warning per area that says how
  many and why; an area with no usable voxel is an error;
* the configuration: keys, types and values (:func:`niflow.config.validate`), and the
  geometry of the area graph on the actual image size (a kernel larger than its input grid,
  pooling that shrinks a grid to nothing).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from niflow.config import STIMULUS, RunConfig
from niflow.data.dataset import (
    parse_rows,
)
from niflow.data.errors import DataError
from niflow.data.layout import CHANNELS_LAST, LAYOUTS_TEXT, stimulus_layout
from niflow.data.layout import image_shape as _layout_image_shape

STIM_LAYOUT = LAYOUTS_TEXT
RowSpec = str | Path | np.ndarray | list[int] | None


def image_shape(stim: np.ndarray) -> tuple[int, int, int]:
    """``(channels, height, width)`` of the stimuli ``(n, h, w)``, ``(n, h, w, 3)`` or
    ``(n, c, h, w)`` (:mod:`niflow.data.layout`)."""
    return _layout_image_shape(stim.shape)


def _where(source: str, name: str) -> str:
    return f"{source}: variable {name!r}"


def _is_numeric(arr: object) -> bool:
    return isinstance(arr, np.ndarray) and arr.dtype.kind in "biuf"


def _describe(arr: object) -> str:
    return str(arr.dtype) if isinstance(arr, np.ndarray) else type(arr).__name__


# --------------------------------------------------------------------------- single arrays


def check_stimulus_array(stim: object, source: str = "stimuli", variable: str = "stim",
                         ) -> np.ndarray:
    """Check that ``stim`` holds one finite grey or colour image per row.

    Parameters
    ----------
    stim : ndarray of shape (n_samples, height, width) or colour (n_samples, height, width, 3)
        or (n_samples, 3, height, width). A 4-D array whose last axis is 3 is channel-last,
        else one whose axis 1 is 3 (or 1, grey) is channel-first; any other 4-D array is
        refused (:mod:`niflow.data.layout`).
    source, variable : str
        Where it came from, for messages (file path and variable name).

    Returns
    -------
    ndarray, ``stim`` itself.
    """
    where = _where(source, variable)
    if not _is_numeric(stim):
        raise DataError(f"{where} is not a numeric array (got {_describe(stim)})")
    assert isinstance(stim, np.ndarray)
    stimulus_layout(stim.shape, where)
    if stim.size == 0:
        raise DataError(f"{where} has shape {stim.shape}: no images (or empty images)")
    if stim.dtype.kind == "f" and not np.isfinite(stim).all():
        bad = np.flatnonzero(~np.isfinite(stim).reshape(stim.shape[0], -1).all(1))
        raise DataError(f"{where} contains NaN or Inf in {bad.size} image(s) (first: row "
                        f"{bad[0]}); replace those pixels or remove those rows")
    return stim


def check_response_array(arr: object, source: str = "responses", name: str = "V1",
                         ) -> np.ndarray:
    """Check one area's responses; a 1-D array is one voxel.

    Parameters
    ----------
    arr : ndarray of shape (n_samples, n_voxels) or (n_samples,)
    source, name : str
        File path and variable (area) name, for messages.

    Returns
    -------
    ndarray of shape (n_samples, n_voxels), dtype unchanged.
    """
    where = _where(source, name)
    if not _is_numeric(arr):
        raise DataError(f"{where} is not a numeric array (got {_describe(arr)}); responses are "
                        f"one (n_samples, n_voxels) array per area")
    assert isinstance(arr, np.ndarray)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        hint = ("; is this the stimulus file? (pass it as --stim)" if arr.ndim in (3, 4)
                else "")
        raise DataError(f"{where} has shape {arr.shape}; expected (n_samples, n_voxels){hint}")
    return arr


# --------------------------------------------------------------------------- several arrays


def check_rows(stim: np.ndarray, responses: dict[str, np.ndarray], stim_source: str,
               stim_variable: str, bold_source: str) -> None:
    """Stimuli and every area must have the same number of rows (samples).

    When the counts disagree, an array whose *last* axis has the count the others have on
    their first is reported as transposed, with the fix: the usual result of exporting
    MATLAB's height × width × n image stacks or voxel × sample matrices.
    """
    n = stim.shape[0]
    if all(r.shape[0] == n for r in responses.values()):
        return
    stim_where = _where(stim_source, stim_variable)
    named = [(stim_where, stim_variable, stim, True)] + [
        (_where(bold_source, a), a, r, False) for a, r in responses.items()]
    candidates = [n]
    # square images put equal sizes last; only then could a correct stack look transposed
    # (a channel-last colour stack ends in its colour axis, never in a sample count)
    if stim.shape[-1] != stim.shape[-2] and stimulus_layout(stim.shape) != CHANNELS_LAST:
        candidates.append(stim.shape[-1])
    for m in candidates:
        flipped = []
        for where, name, arr, is_stim in named:
            if arr.shape[0] == m:
                continue
            if arr.shape[-1] != m:
                break
            flipped.append((where, name, arr, is_stim))
        else:
            raise DataError(_transposed_message(*flipped[0]))
    for area, r in responses.items():
        if r.shape[0] != n:
            raise DataError(f"{_where(bold_source, area)} has {r.shape[0]} rows but "
                            f"{stim_where} has {n} images; rows must match one to one")


def transposed_responses_message(where: str, name: str, shape: tuple[int, ...],
                                 rows: str = "n_samples") -> str:
    """The one line for a response variable ``name`` of ``shape`` (n_voxels, rows)."""
    return (f"{where} has shape {shape} and looks transposed: expected ({rows}, n_voxels) = "
            f"{shape[::-1]}; transpose it (numpy: {name}.T; MATLAB: {name} = {name}')")


def _transposed_message(where: str, name: str, arr: np.ndarray, is_stim: bool) -> str:
    if not is_stim:
        return transposed_responses_message(where, name, arr.shape)
    if arr.ndim == 3:
        layout, order, ml_order = "(n_samples, height, width)", (2, 0, 1), "[3 1 2]"
    else:
        layout, order, ml_order = "(n_samples, channels, height, width)", (3, 2, 0, 1), \
            "[4 3 1 2]"
    expected = tuple(arr.shape[i] for i in order)
    return (f"{where} has shape {arr.shape} and looks transposed: expected {layout} = "
            f"{expected}; move the sample axis first (numpy: {name}.transpose{order}; "
            f"MATLAB: {name} = permute({name}, {ml_order}))")


def new_area_names(names: Iterable[str], cfg: RunConfig) -> list[str]:
    """Response areas that ``cfg`` lacks and training may add (:func:`niflow.runs.inputs.
    config_for_areas`): identifiers other than ``"stimulus"`` that differ from every
    configured area in more than case (a ``v1`` beside ``V1`` is V1 misnamed)."""
    upper = {a.upper() for a in cfg.area_names()}
    return [n for n in names if n not in cfg.area_names() and n.isidentifier()
            and n != STIMULUS and n.upper() not in upper]


def check_areas(responses: dict[str, np.ndarray], cfg: RunConfig, source: str) -> None:
    """Every response variable must name an area of the model configuration.

    Training adds the areas a configuration lacks (:func:`niflow.runs.inputs.
    config_for_areas`) if their names can be area names; the rest are refused here.
    """
    unusable = [a for a in responses if a not in cfg.area_names()
                and (not a.isidentifier() or a == STIMULUS)]
    if unusable:
        raise DataError(
            f"{source}: area variable(s) {unusable} cannot name areas (use letters, digits "
            f"and underscores, not starting with a digit, and not 'stimulus'); rename them")
    cased = {a.upper(): a for a in cfg.area_names()}
    miscased = [a for a in responses if a not in cased.values() and a.upper() in cased]
    if miscased:
        raise DataError(
            f"{source}: area variable(s) {miscased} differ from the model's "
            f"{[cased[a.upper()] for a in miscased]} only in case; rename them to match")
    unknown = [a for a in responses if a not in cfg.area_names()]
    if unknown:
        raise DataError(
            f"{source}: area variable(s) {unknown} do not match any area of the model config "
            f"{cfg.area_names()}; rename the variables or add areas to the config")


def check_row_indices(rows: RowSpec, n_samples: int, name: str = "test rows") -> np.ndarray:
    """Row indices from a spec (see :func:`niflow.data.dataset.parse_rows`) or an array.

    Returns
    -------
    ndarray of shape (n_rows,), int64, sorted and unique, each in ``0 .. n_samples - 1``.
    """
    if rows is None or isinstance(rows, str | Path):
        return parse_rows(rows, n_samples, name)
    idx = np.asarray(rows)
    if idx.dtype.kind == "f" and np.isfinite(idx).all() and np.all(idx == np.round(idx)):
        idx = idx.astype(np.int64)
    if idx.dtype.kind not in "iu" and idx.size:
        raise DataError(f"{name}: expected integer row indices, got {idx.dtype}")
    idx = idx.astype(np.int64).ravel()
    outside = idx[(idx >= n_samples) | (idx < -n_samples)]
    if outside.size:
        raise DataError(f"{name}: index {outside[0]} is outside 0..{n_samples - 1} "
                        f"({n_samples} samples)")
    idx = np.where(idx < 0, idx + n_samples, idx)
    if np.unique(idx).size != idx.size:
        raise DataError(f"{name}: repeated indices")
    return np.sort(idx)


def _spec_text(rows: RowSpec) -> str:
    return repr(str(rows)) if isinstance(rows, str | Path) else "(array)"


# --------------------------------------------------------------------------- entry points


def check_evaluation_arrays(stim: np.ndarray, responses: dict[str, np.ndarray],
                            cfg: RunConfig, model_shape: tuple[int, int, int],
                            voxel_index: dict[str, np.ndarray], rows: RowSpec,
                            sources: dict[str, str]) -> np.ndarray:
    """Validate data for scoring a trained model; return the rows to score.

    Parameters
    ----------
    stim : ndarray of shape (n_samples, height, width) or (n_samples, channels, height, width)
    responses : dict of str to ndarray of shape (n_samples, n_voxels)
    cfg : RunConfig
        The trained run's configuration.
    model_shape : tuple of int
        ``(channels, height, width)`` the model was trained on.
    voxel_index : dict of str to ndarray of int
        Input columns the model predicts, per area.
    rows : str, path or array of int, optional
        Rows to score (default: all).
    sources : dict of str to str
        ``{"stim": path, "bold": path}``.

    Returns
    -------
    ndarray of shape (n_rows,), int64
    """
    stim_source, bold_source = sources["stim"], sources["bold"]
    stim_where = _where(stim_source, cfg.data.stim_variable)
    check_rows(stim, responses, stim_source, cfg.data.stim_variable, bold_source)
    check_areas(responses, cfg, bold_source)
    for area, r in responses.items():
        if area in voxel_index and r.shape[1] <= int(np.max(voxel_index[area])):
            raise DataError(f"{_where(bold_source, area)} has {r.shape[1]} voxels; the model "
                            f"reads input columns up to {int(np.max(voxel_index[area]))}")
    if image_shape(stim) != tuple(model_shape):
        raise DataError(f"{stim_where}: images of shape {image_shape(stim)} (channels, height, "
                        f"width) do not match the model's {tuple(model_shape)}")
    n = stim.shape[0]
    if rows is None or (isinstance(rows, str) and not rows.strip()):
        return np.arange(n)
    idx = check_row_indices(rows, n, "rows")
    if idx.size == 0:
        raise DataError(f"rows {_spec_text(rows)} selects no rows of {stim_source} ({n} "
                        f"samples)")
    return idx

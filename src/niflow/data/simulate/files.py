"""Writing a simulation in the layout of the real data set, and reading it back."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import scipy.io
from numpy.typing import ArrayLike, NDArray

from niflow.data.io import save_mat, save_npz
from niflow.data.simulate.cortex import Simulation, simulate_responses
from niflow.data.simulate.features import as_unit_float
from niflow.data.simulate.glyphs import make_glyphs
from niflow.data.simulate.settings import SimConfig

__all__ = ["load_simulation", "load_truth", "simulate", "write_simulation"]

def _stim_uint8(stim: ArrayLike) -> NDArray[np.uint8]:
    x = np.asarray(stim)
    if x.dtype == np.uint8:
        return x
    return np.round(as_unit_float(x) * 255).astype(np.uint8)


def write_simulation(sim: Simulation, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write a simulation in the layout of the real BRAINS data plus the ground truth.

    Files (each written atomically: temp file in ``out_dir``, then ``os.replace``):

    * ``stim.mat``: variable ``stim``, uint8 of shape (n_samples, height, width).
    * ``bold.mat``: one variable per area, float32 of shape (n_samples, n_voxels).
    * ``truth.npz``: ``{area}_{key}`` for every key of ``sim.truth[area]`` (at least
      ``prf_x``, ``prf_y``, ``prf_sigma``, ``reliability``, ``feature_weights``), plus
      ``{area}_repeats`` (n_repeats, n_samples, n_voxels), ``{area}_signal``
      (n_samples, n_voxels), ``labels`` (n_samples,) if known, ``areas`` (n_areas,) str and
      ``config_json`` (0-d str: SimConfig fields plus ``seed`` and ``n_voxels``).

    Parameters
    ----------
    sim : Simulation
    out_dir : str or path-like
        Created if missing.

    Returns
    -------
    dict of str to Path
        ``{"stim": ..., "bold": ..., "truth": ...}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"stim": out / "stim.mat", "bold": out / "bold.mat", "truth": out / "truth.npz"}

    stim = _stim_uint8(sim.stim)
    save_mat(paths["stim"], {"stim": stim})
    save_mat(paths["bold"], {a: np.asarray(r, dtype=np.float32) for a, r in sim.responses.items()})

    arrays: dict[str, np.ndarray] = {}
    for a in sim.areas:
        for k, v in sim.truth[a].items():
            arrays[f"{a}_{k}"] = np.asarray(v)
        arrays[f"{a}_repeats"] = np.asarray(sim.repeats[a], dtype=np.float32)
        arrays[f"{a}_signal"] = np.asarray(sim.signal[a], dtype=np.float32)
    if sim.labels is not None:
        arrays["labels"] = np.asarray(sim.labels)
    arrays["areas"] = np.asarray(sim.areas, dtype=str)
    meta = sim.config.to_dict()
    meta["seed"] = sim.seed
    meta["n_voxels"] = {a: int(sim.responses[a].shape[1]) for a in sim.areas}
    arrays["config_json"] = np.asarray(json.dumps(meta, sort_keys=True))
    save_npz(paths["truth"], arrays)
    return paths


def _split_truth(z: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    areas = [str(a) for a in z["areas"]]
    out: dict[str, dict[str, np.ndarray]] = {a: {} for a in areas}
    # Longest names first so an area name that prefixes another cannot steal its keys.
    for key in z:
        for a in sorted(areas, key=len, reverse=True):
            if key.startswith(a + "_"):
                out[a][key[len(a) + 1 :]] = z[key]
                break
    return out


def load_truth(path: str | os.PathLike) -> dict[str, dict[str, np.ndarray]]:
    """Read ``truth.npz`` (or the directory containing it).

    Returns
    -------
    dict of str to dict of str to ndarray
        Per area everything stored under ``{area}_*``: ``prf_x``, ``prf_y``, ``prf_sigma``,
        ``eccentricity``, ``reliability`` (n_voxels,), ``feature_weights``
        (n_voxels, n_features), ``repeats`` (n_repeats, n_samples, n_voxels), ``signal``
        (n_samples, n_voxels), and for V2 ``feature_mixing`` / ``feature_threshold``.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "truth.npz"
    with np.load(p, allow_pickle=False) as z:
        return _split_truth({k: z[k] for k in z.files})


def load_simulation(out_dir: str | os.PathLike) -> Simulation:
    """Read back a directory written by :func:`write_simulation` into a :class:`Simulation`."""
    d = Path(out_dir)
    stim = scipy.io.loadmat(d / "stim.mat")["stim"]
    bold = scipy.io.loadmat(d / "bold.mat")
    with np.load(d / "truth.npz", allow_pickle=False) as z:
        flat = {k: z[k] for k in z.files}
    truth = _split_truth(flat)
    meta = json.loads(str(flat["config_json"]))
    repeats = {a: truth[a].pop("repeats") for a in truth}
    signal = {a: truth[a].pop("signal") for a in truth}
    return Simulation(
        stim=stim,
        labels=flat.get("labels"),
        responses={a: np.asarray(bold[a], dtype=np.float32) for a in truth},
        repeats=repeats,
        signal=signal,
        truth=truth,
        config=SimConfig.from_dict(meta),
        seed=int(meta.get("seed", 0)),
    )


def simulate(
    out_dir: str | os.PathLike | None = None,
    n_per_letter: int = 60,
    n_voxels: Mapping[str, int] | None = None,
    seed: int = 0,
    config: SimConfig | None = None,
    stim: ArrayLike | None = None,
) -> Simulation:
    """Glyphs (or the given stimuli) plus simulated responses, written if ``out_dir`` is set.

    Parameters
    ----------
    out_dir : str or path-like, optional
        If given, :func:`write_simulation` writes the result there.
    n_per_letter : int
        Glyphs per letter of ``"BRAINS"`` when ``stim`` is None (default 60: 360 images, rows
        288:360 are the test part).
    n_voxels : dict of str to int, optional
        See :func:`simulate_responses`.
    seed : int
        Seed for both the glyphs and the responses (independent streams).
    config : SimConfig, optional
    stim : array_like of shape (n_samples, height, width), optional
        Use these stimuli instead of generated glyphs (labels are then None).

    Returns
    -------
    Simulation
    """
    labels = None
    if stim is None:
        stim, labels = make_glyphs(n_per_letter=n_per_letter, seed=seed)
    sim = simulate_responses(stim, n_voxels=n_voxels, seed=seed, config=config, labels=labels)
    if out_dir is not None:
        write_simulation(sim, out_dir)
    return sim

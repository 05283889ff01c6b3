"""A run is a folder. This module writes and reads that contract.

``train_run`` fills a folder with::

    run.json          niflow version, seed, input files and their sha256, timings
    config.json       the resolved configuration
    split.json        train / validation / test row indices
    model.pt          weights + what is needed to rebuild the model and its input transform
    checkpoint.pt     last epoch's full training state (for --resume)
    log.jsonl         one JSON record per epoch
    metrics.json      per-area held-out summary (n_voxels, median_r, mean_r, frac_r_above_0.3)
    voxels.csv        per voxel: area, voxel, r_test, r2_test, prf_x, prf_y, prf_sigma,
                      prf_sigma_fit
    selection.json    candidates' validation scores, the chosen one, the ensemble members
    predictions.npz   test-row predictions per area (response units) and ``test_rows``
    modelparams.mat   learned parameters under basicNIF's names
    figures/*.png     receptive fields of the best voxels, V1 kernels, training curve

Every file is written atomically (temporary file, then rename). A new run folder appears
complete with ``config.json``, ``split.json`` and ``run.json`` or not at all (they are
written into a hidden staging folder next to it, which is then renamed), so a folder
without ``run.json`` is never a half-started run. Everything after that is either a
checkpoint to resume from or a finished output; ``--resume`` (``resume=True``) continues
after a kill at any moment and ends with the same files an uninterrupted run writes.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from niflow import __version__
from niflow import config as cfgmod
from niflow._atomic import atomic_write, atomic_write_text, umask
from niflow.config import RunConfig
from niflow.data.dataset import NIFData, Split, Standardizer, build_dataset, scale_stimuli
from niflow.data.io import DataError, load_responses, load_stimuli, save_mat, save_npz
from niflow.data.stream import (
    H5Array,
    StreamingData,
    default_workers,
    open_streaming,
    require_hdf5,
)
from niflow.data.validate import (
    STIM_LAYOUT,
    Inputs,
    RowSpec,
    check_areas,
    check_arrays,
    check_config,
    check_evaluation_arrays,
    check_row_indices,
)
from niflow.evaluate import pearson_r, r_squared, summarize
from niflow.interpret import (
    grid_sigma_to_pixels,
    readout_prf,
    spatial_maps,
    visual_field_coordinates,
)
from niflow.model import GaussianReadout, NIFModel
from niflow.model.gaussian import SIGMA_MIN
from niflow.parallel import Runtime, agree, broadcast_object, runtime_from_environment
from niflow.prf_sizes import log_sigma_standard_errors
from niflow.resources import check_memory, estimate_training_memory
from niflow.select import is_active, select_and_train
from niflow.train import CHECKPOINT, History, fit, predict, seed_everything, write_log


class RunError(RuntimeError):
    """The run folder cannot be used as asked (exists, missing, incomplete)."""


@dataclass
class Run:
    """A trained model with the data transform it was trained with."""

    path: Path | None
    config: RunConfig
    model: NIFModel
    scalers: dict[str, Standardizer]
    voxel_index: dict[str, np.ndarray]
    stim_peak: float | None
    # further ensemble members (niflow.select): same kind as ``model``, other validation
    # parts and seeds; predictions average all of them
    members: list[NIFModel] = field(default_factory=list)
    # standard error of each Gaussian-readout voxel's log σ (niflow.prf_sizes), by area
    size_se: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def ensemble(self) -> list[NIFModel]:
        return [self.model, *self.members]

    def predict(self, stim: np.ndarray) -> dict[str, np.ndarray]:
        """Predictions in the responses' original units (the ensemble's mean).

        Parameters
        ----------
        stim : ndarray of shape (n, height, width) or (n, channels, height, width), as read

        Returns
        -------
        dict of str to ndarray of shape (n, n_voxels)
        """
        x = scale_stimuli(stim, self.config.data.stim_scale, self.stim_peak)
        z = ensemble_predict(self.ensemble, x)
        return {a: self.scalers[a].inverse(p) for a, p in z.items()}

    def receptive_fields(self, area: str) -> dict[str, np.ndarray]:
        """Readout pRF centre and size (stimulus pixels), the median over the ensemble.

        With standard errors of the sizes (``size_se``, Gaussian readouts) ``prf_sigma`` is
        the posterior mean under the area's eccentricity prior
        (:func:`niflow.prf_sizes.shrink_log_sigma`) and ``prf_sigma_fit`` the fitted size.
        """
        fits = [readout_prf(m, area) for m in self.ensemble]
        out = {k: np.median([f[k] for f in fits], axis=0) for k in fits[0]}
        if area in self.size_se and "log_sigma" in out:
            from niflow.prf_sizes import shrink_log_sigma

            ecc = visual_field_coordinates(out["prf_x"], out["prf_y"],
                                           tuple(self.model.image_shape[1:]))["eccentricity"]
            post, _ = shrink_log_sigma(out["log_sigma"], self.size_se[area], ecc)
            out["prf_sigma_fit"] = out["prf_sigma"]
            out["prf_sigma"] = grid_sigma_to_pixels(SIGMA_MIN + np.exp(post),
                                                    self.model.geometry(area).scale)
        out.pop("log_sigma", None)
        return out


def ensemble_predict(models: list[NIFModel], x: np.ndarray) -> dict[str, np.ndarray]:
    """Mean of the models' predictions (z-scored units) for scaled stimuli ``x``."""
    parts = [predict(m, x) for m in models]
    if len(parts) == 1:
        return parts[0]
    return {a: np.mean([p[a] for p in parts], axis=0).astype(np.float32) for a in parts[0]}


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_run_dir(out: Path, force: bool, resume: bool) -> None:
    """Refuse an ``out`` that cannot be used as asked; nothing is created or changed.

    A new run needs ``out`` absent or empty (or ``force``); ``resume`` needs a run folder
    (one with ``run.json``).
    """
    if out.exists() and not out.is_dir():
        raise RunError(f"{out}: exists and is not a folder; choose another --out")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise RunError(f"{out}: cannot create the run folder ({parent} is a file)")
            break
    if resume:
        if not out.exists():
            raise RunError(f"{out}: nothing to resume (no such run folder); start the run "
                           f"without --resume")
        if not (out / "run.json").exists():
            raise RunError(f"{out}: nothing to resume (no run.json: not a niflow run folder)")
        return
    if out.exists() and any(out.iterdir()) and not force:
        raise RunError(f"{out}: run folder exists and is not empty; use --force to "
                       f"overwrite or --resume to continue it")


def _create_run_dir(out: Path, force: bool, write: Callable[[Path], None]) -> None:
    """Make ``out`` appear with the files ``write(folder)`` puts in it, all or nothing."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_staging(out)
        staging = Path(tempfile.mkdtemp(dir=out.parent,
                                        prefix=f".{out.name}.starting-{os.getpid()}-"))
        os.chmod(staging, 0o777 & ~umask())  # mkdtemp's folder is private (0700)
    except OSError as err:
        raise RunError(f"{out}: cannot create the run folder ({err.strerror})") from None
    try:
        write(staging)
        if out.exists():
            if any(out.iterdir()):
                if not force:  # appeared since check_run_dir: never overwrite without --force
                    raise RunError(f"{out}: run folder exists and is not empty; use --force "
                                   f"to overwrite or --resume to continue it")
                shutil.rmtree(out)
            else:
                out.rmdir()
        os.replace(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _remove_stale_staging(out: Path) -> None:
    """Remove staging folders of ``out`` left by processes that were killed while starting."""
    for folder in out.parent.glob(f".{out.name}.starting-*"):
        match = re.fullmatch(rf"\.{re.escape(out.name)}\.starting-(\d+)-.+", folder.name)
        if match is None or not folder.is_dir():
            continue
        try:
            os.kill(int(match.group(1)), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (PermissionError, OverflowError):  # alive (someone else's) or not a pid
            pass


# temporary files of niflow._atomic: ".<stem>.<8 random characters><suffix>"
_TEMPORARY = re.compile(r"\.[^.]+\.[a-z0-9_]{8}(\.[A-Za-z0-9]+)?")


def _remove_temporaries(out: Path) -> None:
    """Delete temporary files an interrupted atomic write left in ``out`` (or figures/)."""
    for folder in (out, out / "figures"):
        for path in folder.glob(".*"):
            if path.is_file() and _TEMPORARY.fullmatch(path.name):
                path.unlink(missing_ok=True)


def train_run(stim: np.ndarray, responses: dict[str, np.ndarray], out: str | Path | None,
              cfg: RunConfig, test_rows: np.ndarray | str, *, resume: bool = False,
              force: bool = False, progress: bool = True, inputs: dict[str, str] | None = None,
              train_rows: np.ndarray | str | None = None, memory_check: bool = True,
              runtime: Runtime | None = None) -> tuple[Run, History, NIFData]:
    """Train a NIF model on arrays and (if ``out``) write the full run folder.

    Every input is validated first (:func:`niflow.data.validate.check_arrays`); an error
    leaves nothing behind.

    Parameters
    ----------
    stim : ndarray of shape (n_samples, height, width) or (n_samples, channels, h, w)
    responses : dict of str to ndarray of shape (n_samples, n_voxels)
        Keys must be area names of ``cfg``.
    test_rows : ndarray of int or str
        Held-out rows, scored at the end and never used for fitting.
    inputs : dict, optional
        ``{"stim": path, "bold": path}``, recorded with checksums in ``run.json``.
    train_rows : ndarray of int or str, optional
        Rows to train on (default: all rows not in ``test_rows``).
    memory_check : bool
        Refuse (:class:`~niflow.resources.ResourceError`) when the estimated memory exceeds
        what is available.
    runtime : Runtime, optional
        Device, precision, compilation, data-parallel rank (:mod:`niflow.parallel`);
        default: the GPU if there is one, one process (or the ``torchrun`` process group).
        The precision is ``cfg.train.precision``.
    """
    checked = check_arrays(stim, responses, cfg, test_rows, train_rows=train_rows,
                           sources=inputs)
    return train_inputs(checked, out, resume=resume, force=force, progress=progress,
                        memory_check=memory_check, runtime=runtime)


def train_inputs(inputs: Inputs, out: str | Path | None, *, resume: bool = False,
                 force: bool = False, progress: bool = True, memory_check: bool = True,
                 on_start: Callable[[], None] | None = None, runtime: Runtime | None = None,
                 ) -> tuple[Run, History, NIFData]:
    """Train on validated inputs (:func:`niflow.data.validate.validate_inputs`).

    Before anything is written: the run folder is checked (``out`` must not hold a run
    unless ``force``; ``resume`` needs one whose inputs, configuration and split match, see
    :func:`check_resume`) and the memory the run needs is compared with what is available.
    ``on_start`` is called once all of that passed (the command line prints the input
    warnings there, so that a refused run prints its error alone).

    ``runtime`` (default: the GPU if there is one, and the ``torchrun`` process group if
    started by ``torchrun``) says where training runs; under data parallelism only rank 0
    writes the run folder. The precision is ``config.train.precision``.

    Returns
    -------
    run : Run
    history : History
    data : NIFData
    """
    cfg = inputs.config
    runtime = runtime or runtime_from_environment("auto")
    out_path = Path(out) if out is not None else None

    def checks() -> None:
        if out_path is not None and runtime.is_main:
            check_run_dir(out_path, force, resume)
            if resume:
                check_resume(out_path, inputs.config, inputs.split, inputs.sources)
        if memory_check:
            check_memory(estimate_training_memory(
                cfg, inputs.image_shape, inputs.n_voxels, inputs.n_samples,
                int(inputs.split.train.size),
                n_eval_rows=max(inputs.split.val.size, inputs.split.test.size)),
                runtime.device)

    agree(checks, runtime)
    if on_start is not None and runtime.is_main:
        on_start()
    stim = inputs.stim
    data = build_dataset(stim, inputs.responses, inputs.split.test, stim_scale=cfg.data.stim_scale,
                         split=inputs.split, voxel_index=inputs.voxel_index)
    fit_rows = np.concatenate([data.split.train, data.split.val])
    stim_peak = None
    if np.asarray(stim).dtype.kind == "f":
        stim_peak = float(np.abs(stim[fit_rows]).max())
    fit_px = data.stim[fit_rows]
    pixel_stats = (float(fit_px.mean()), float(fit_px.std()))

    def build(c: RunConfig, d: NIFData) -> NIFModel:
        return _initial_model(c, d.image_shape, d.n_voxels, pixel_stats,
                              lambda: (d.stim[d.split.train],
                                       {a: r[d.split.train] for a, r in d.responses.items()}))

    return _fit_and_write(cfg, build, data, lambda: data, inputs.sources, out_path,
                          resume=resume, force=force, progress=progress, runtime=runtime,
                          stim_peak=stim_peak)


def _initial_model(cfg: RunConfig, image_shape: tuple[int, int, int],
                   n_voxels: dict[str, int], pixel_stats: tuple[float, float],
                   init_rows: Callable[[], tuple[np.ndarray, dict[str, np.ndarray]]],
                   ) -> NIFModel:
    """The seeded model with its input standardisation and (``readout.init="contrast"``)
    readouts started from ``init_rows()`` = (stimuli, z-scored responses) of training rows."""
    seed_everything(cfg.train.seed)
    model = NIFModel(cfg, image_shape, n_voxels)
    if cfg.data.input_norm == "standardize":
        model.set_input_stats(*pixel_stats)
    if cfg.readout.init == "contrast":
        x, y = init_rows()
        model.initialize_readouts(torch.as_tensor(x),
                                  {a: torch.as_tensor(r) for a, r in y.items()})
    return model


def _fit_and_write(cfg: RunConfig, build: Callable[[RunConfig, NIFData], NIFModel],
                   data: NIFData | StreamingData,
                   eval_data: Callable[[], NIFData], sources: dict[str, str],
                   out_path: Path | None, *, resume: bool, force: bool, progress: bool,
                   runtime: Runtime, stim_peak: float | None,
                   ) -> tuple[Run, History, NIFData]:
    """Create the run folder, train, and write the outputs (rank 0) from ``eval_data()``.

    With ``config.select`` (:mod:`niflow.select`) every candidate and ensemble member is
    trained in memory (a resumed run repeats that deterministic selection) and the kept
    model's epochs are written to ``log.jsonl``; otherwise the one model trains with a
    checkpoint after every epoch.
    """
    started = time.time()
    if out_path is not None and not resume:
        def write_start(folder: Path) -> None:
            cfgmod.save(cfg, folder / "config.json")
            atomic_write_text(folder / "split.json", json.dumps(data.split.to_dict()) + "\n")
            _write_run_info(folder, cfg, sources, started, runtime)

        agree(lambda: runtime.is_main and _create_run_dir(out_path, force, write_start),
              runtime)
    elif out_path is not None and runtime.is_main:
        _remove_temporaries(out_path)
    selection = None
    if is_active(cfg) and isinstance(data, NIFData):
        chosen, models, hists, selection = select_and_train(
            cfg, data, build, lambda m, d, c: fit(m, d, c.train, None, progress=progress,
                                                  runtime=runtime))
        hist = hists[0]
        if out_path is not None and runtime.is_main:
            write_log(out_path, hist.epochs)
            atomic_write_text(out_path / "selection.json",
                              json.dumps(selection.to_dict(), indent=2) + "\n")
    else:
        chosen = cfg
        if is_active(cfg):  # streamed data: one model of the first candidate
            chosen = (cfgmod.candidate(cfg, cfg.select.candidates[0]) if cfg.select.candidates
                      else dataclasses.replace(cfg, select=cfgmod.SelectConfig()))
            warnings.warn("streamed training does not select among candidates or train an "
                          f"ensemble; training {cfg.select.candidates[:1] or 'the config'} "
                          "once", stacklevel=3)
        checkpoint = broadcast_object(out_path is not None and runtime.is_main
                                      and (out_path / CHECKPOINT).exists(), runtime)
        models = [build(chosen, data)]
        hist = fit(models[0], data, chosen.train, out_path,
                   resume=bool(resume and checkpoint), progress=progress, runtime=runtime)
    for m in models:
        m.to("cpu", torch.float32)  # outputs, figures and the returned Run: CPU, float32
    run = Run(out_path, chosen, models[0], data.scalers, data.voxel_index, stim_peak,
              members=models[1:])
    evaluated = eval_data() if runtime.is_main else None
    if evaluated is not None and evaluated.split.train.size >= 8:
        rows = evaluated.split.train
        run.size_se = log_sigma_standard_errors(
            run.model, torch.as_tensor(evaluated.stim[rows]),
            {a: torch.as_tensor(r[rows]) for a, r in evaluated.responses.items()})
    if out_path is not None and runtime.is_main:
        write_outputs(run, evaluated, hist)
        _finish_run_info(out_path, hist)
    return run, hist, evaluated


def train_stream(stim_path: str | Path, bold_path: str | Path, out: str | Path | None,
                 cfg: RunConfig, test_rows: RowSpec, *, train_rows: RowSpec = None,
                 num_workers: int | None = None, resume: bool = False, force: bool = False,
                 progress: bool = True, memory_check: bool = True,
                 runtime: Runtime | None = None, config_source: str = "config",
                 on_start: Callable[[], None] | None = None,
                 ) -> tuple[Run, History, NIFData]:
    """Train from HDF5 files (``.h5`` or MATLAB v7.3) without loading them into memory.

    Training batches are read by ``num_workers`` DataLoader processes (default:
    :func:`~niflow.data.stream.default_workers`, the cores training leaves free; 0 reads in
    the training process); per-voxel z-scoring
    and the pixel statistics come from one chunked pass over the training rows. What is
    held in memory: the model, ``readout.init="contrast"``'s sample of at most
    ``INIT_ROWS`` training rows, and, for the outputs after training, the test rows and at
    most ``REFERENCE_ROWS`` training rows (the mean stimulus of the flow ablation).

    Parameters are as for :func:`train_run`; the result's ``data`` holds only those
    in-memory rows (``data.rows`` maps them to rows of the files).
    """
    n = _checked_stream_inputs(cfg, stim_path, bold_path, config_source)
    test = check_row_indices(test_rows, n, "test rows")
    if test.size == 0:
        raise DataError(f"{stim_path}: test rows {test_rows!r} select no rows; at least one "
                        f"held-out row is needed to score the model")
    train = None if train_rows is None else check_row_indices(train_rows, n, "train rows")
    runtime = runtime or runtime_from_environment("auto")
    if num_workers is None:
        num_workers = default_workers(runtime.device)
    data = open_streaming(stim_path, bold_path, test, val_fraction=cfg.train.val_fraction,
                          seed=cfg.train.seed, stim_variable=cfg.data.stim_variable,
                          num_workers=num_workers, stim_scale=cfg.data.stim_scale,
                          train_rows=train)
    out_path = Path(out) if out is not None else None
    sources = {"stim": str(stim_path), "bold": str(bold_path)}
    reference = _sample_rows(data.split.train, REFERENCE_ROWS, cfg.train.seed)
    init = _sample_rows(data.split.train, INIT_ROWS, cfg.train.seed + 1)

    def checks() -> None:
        if out_path is not None and runtime.is_main:
            check_run_dir(out_path, force, resume)
            if resume:
                check_resume(out_path, cfg, data.split, sources)
        if memory_check:
            in_memory = reference.size + test.size
            check_memory(estimate_training_memory(
                cfg, data.image_shape, data.n_voxels, max(in_memory, init.size),
                init.size, n_eval_rows=max(data.split.val.size, test.size)), runtime.device)

    agree(checks, runtime)
    if on_start is not None and runtime.is_main:
        on_start()
    def build(c: RunConfig, d: StreamingData) -> NIFModel:
        return _initial_model(c, d.image_shape, d.n_voxels, (d.pixel_mean, d.pixel_std),
                              lambda: d.read(init))

    return _fit_and_write(cfg, build, data, lambda: _held_out_data(data, reference), sources,
                          out_path, resume=resume, force=force, progress=progress,
                          runtime=runtime, stim_peak=data.stim_peak)


INIT_ROWS = 4096  # training rows the contrast initialisation of a streamed run looks at
REFERENCE_ROWS = 512  # training rows kept for the outputs of a streamed run


def _sample_rows(rows: np.ndarray, limit: int, seed: int) -> np.ndarray:
    if rows.size <= limit:
        return np.asarray(rows)
    return np.sort(np.random.default_rng(seed).choice(rows, limit, replace=False))


def _checked_stream_inputs(cfg: RunConfig, stim_path: str | Path, bold_path: str | Path,
                           source: str) -> int:
    """Check the streamed files' kind, stimulus shape, config geometry and area names;
    return the number of samples."""
    import h5py

    stim = H5Array.open(stim_path, cfg.data.stim_variable)
    shape = stim.shape
    if len(shape) not in (3, 4):
        raise DataError(f"{stim_path}: variable {cfg.data.stim_variable!r} has shape {shape}; "
                        f"expected {STIM_LAYOUT}")
    check_config(cfg, (1, *shape[1:]) if len(shape) == 3 else tuple(shape[1:]), source)
    require_hdf5(bold_path)
    with h5py.File(bold_path, "r") as fh:
        names = {k: None for k, v in fh.items() if isinstance(v, h5py.Dataset)
                 and v.ndim == 2 and v.dtype.kind in "biuf"}
    if not names:
        raise DataError(f"{bold_path}: no 2-D numeric variable (one (n_samples, n_voxels) "
                        f"array per area is expected)")
    check_areas(names, cfg, str(bold_path))
    return int(shape[0])


def _held_out_data(data: StreamingData, reference: np.ndarray) -> NIFData:
    """The test rows and ``reference`` training rows of a streamed run, in memory."""
    rows = np.concatenate([reference, data.split.test])
    x, z = data.read(rows)
    raw = {a: data.scalers[a].inverse(v) for a, v in z.items()}
    k = reference.size
    split = Split(np.arange(k), np.zeros(0, np.int64), np.arange(k, rows.size))
    return NIFData(stim=x, responses=z, raw=raw, split=split, scalers=data.scalers,
                   voxel_index=data.voxel_index, rows=rows)


def _write_run_info(out: Path, cfg: RunConfig, inputs: dict[str, str] | None,
                    started: float, runtime: Runtime | None = None) -> None:
    info = {"niflow_version": __version__, "torch_version": torch.__version__,
            "seed": cfg.train.seed, "started": _timestamp(started),
            "runtime": {**(runtime or Runtime()).describe(),
                        "precision": cfg.train.precision},
            "inputs": {k: {"path": str(Path(p).resolve()), "sha256": sha256(p)}
                       for k, p in (inputs or {}).items()}}
    atomic_write_text(out / "run.json", json.dumps(info, indent=2) + "\n")


def _timestamp(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(seconds))


def _finish_run_info(out: Path, hist: History) -> None:
    # wall-clock figures live here, not in metrics.json, which stays a pure function of the
    # inputs, the configuration and the seed (bit-identical between identical runs)
    info = json.loads((out / "run.json").read_text())
    info["finished"] = _timestamp(time.time())
    info["training_seconds"] = float(sum(e.get("seconds", 0.0) for e in hist.epochs))
    atomic_write_text(out / "run.json", json.dumps(info, indent=2) + "\n")


def check_resume(out: Path, config: RunConfig, split: Split, sources: dict[str, str]) -> None:
    """Refuse to resume ``out`` with inputs other than the ones it started with.

    Compared with what the run folder recorded: the sha256 of each input file in
    ``sources`` (``{"stim": path, "bold": path}``, against ``run.json``), the resolved
    configuration (``config.json``) and the train, validation and test rows
    (``split.json``). A different niflow or torch version only warns: results are then no
    longer guaranteed to match an uninterrupted run bit for bit.
    """
    info = _read_json(out / "run.json", out)
    for key, path in sources.items():
        old = info.get("inputs", {}).get(key)
        if old is not None and old["sha256"] != sha256(path):
            raise RunError(f"{out}: input {key!r} ({path}) differs from the one the run "
                           f"started with; start a new run instead of --resume")
    if _read_json(out / "config.json", out) != config.to_dict():
        raise RunError(f"{out}: the configuration differs from the run's config.json; "
                       f"resume with the same config")
    if _read_json(out / "split.json", out) != split.to_dict():
        raise RunError(f"{out}: the train/validation/test rows differ from the run's "
                       f"split.json; resume with the same --test-rows (and --train-rows)")
    versions = {"niflow": (info.get("niflow_version"), __version__),
                "torch": (info.get("torch_version"), torch.__version__)}
    for name, (then, now) in versions.items():
        if then != now:
            warnings.warn(f"{out}: the run started with {name} {then}, this is {now}; the "
                          f"result may differ from an uninterrupted run", stacklevel=3)


def _read_json(path: Path, out: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RunError(f"{out}: no {path.name}; not a complete niflow run folder") from None
    except (OSError, ValueError) as err:
        raise RunError(f"{out}: {path.name} is unreadable ({err})") from None


def write_outputs(run: Run, data: NIFData, hist: History) -> None:
    """Write weights, metrics, per-voxel table, predictions, modelparams.mat and figures."""
    from niflow import plots

    out = run.path
    assert out is not None
    test = data.split.test
    _save_model(run, out / "model.pt")
    pred_z = ensemble_predict(run.ensemble, data.stim[test]) if test.size else {}
    rows, metrics = [], {}
    preds = {}
    prfs = {}
    for area in data.areas:
        maps = spatial_maps(run.model, area)
        geo = run.model.geometry(area)
        prf = run.receptive_fields(area)
        fitted = prf.get("prf_sigma_fit", prf["prf_sigma"])
        prfs[area] = (maps, prf)
        if test.size:
            preds[area] = run.scalers[area].inverse(pred_z[area])
            r = pearson_r(preds[area], data.raw[area][test])
            r2 = r_squared(preds[area], data.raw[area][test])
        else:
            r = r2 = np.full(maps.shape[0], np.nan)
        metrics[area] = summarize(r)
        for j in range(maps.shape[0]):
            rows.append([area, int(data.voxel_index[area][j]), r[j], r2[j], prf["prf_x"][j],
                         prf["prf_y"][j], prf["prf_sigma"][j], fitted[j]])
        order = np.argsort(-np.nan_to_num(r, nan=-2))[:8]
        plots.plot_receptive_fields(
            maps[order], geo, data.voxel_index[area][order], r[order],
            (prf["prf_x"][order], prf["prf_y"][order]), area,
            out / "figures" / f"rf_{area}.png", data.image_shape[1:])
    first = run.config.areas[0].name
    plots.plot_kernels(run.model.graph.areas[first].kernel_weights().detach().numpy(), first,
                       out / "figures" / f"kernels_{first}.png")
    plots.plot_training(hist.epochs, out / "figures" / "training.png")
    save_npz(out / "predictions.npz", {**preds, "test_rows": data.input_rows(test)})
    _write_csv(out / "voxels.csv", ["area", "voxel", "r_test", "r2_test", "prf_x", "prf_y",
                                    "prf_sigma", "prf_sigma_fit"], rows)
    summary = {"areas": metrics, "n_test_rows": int(test.size),
               "training": {"best_epoch": hist.best_epoch, "epochs_run": len(hist.epochs),
                            "stopped_early": hist.stopped_early,
                            "best_val_median_r": (hist.best_score
                                                  if np.isfinite(hist.best_score) else None)}}
    atomic_write_text(out / "metrics.json", json.dumps(summary, indent=2) + "\n")
    save_mat(out / "modelparams.mat", modelparams(run.model))
    # significance and retinotopy columns, information flow, coverage/size figures
    from niflow.outputs import extend_run_outputs

    extend_run_outputs(run, data)


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row in rows:
        w.writerow([f"{v:.6g}" if isinstance(v, float | np.floating) else v for v in row])
    atomic_write_text(path, buf.getvalue())


def modelparams(model: NIFModel) -> dict[str, np.ndarray]:
    """Learned parameters under the reference's names (arrays for ``modelparams.mat``).

    ``convW_A`` (out, in, k, k) and ``convb_A`` for every area; for areas with voxels
    ``Uc_A`` (C, V), ``Ux_A_ks`` (V, W, K) and ``Uy_A_ks`` (V, H, K) spatial logits (softmax
    over the grid axis), ``Am_A_ks`` (V, K) amplitude logits (softplus) and ``b_A`` (V,).
    """
    out: dict[str, np.ndarray] = {}
    for name, area in model.graph.areas.items():
        out[f"convW_{name}"] = area.kernel_weights().detach().cpu().numpy()
        if isinstance(area.conv, torch.nn.Conv2d):
            out[f"convb_{name}"] = area.conv.bias.detach().cpu().numpy()
    for name, r in model.readouts.items():
        out[f"Uc_{name}"] = r.weight.detach().cpu().numpy()
        out[f"b_{name}"] = r.bias.detach().cpu().numpy()
        if isinstance(r, GaussianReadout):
            out[f"prf_centre_{name}"] = r.centre.detach().cpu().numpy()  # (V, 2): y, x cells
            out[f"prf_sigma_{name}"] = r.sigma().detach().cpu().numpy()
            continue
        out[f"Ux_{name}_ks"] = r.ux.detach().cpu().numpy().transpose(0, 2, 1)
        out[f"Uy_{name}_ks"] = r.uy.detach().cpu().numpy().transpose(0, 2, 1)
        out[f"Am_{name}_ks"] = r.amp.detach().cpu().numpy()
    return out


def _save_model(run: Run, path: Path) -> None:
    state = {
        "niflow_version": __version__,
        "config": run.config.to_dict(),
        "image_shape": run.model.image_shape,
        "n_voxels": {a: r.n_voxels for a, r in run.model.readouts.items()},
        "state_dict": run.model.state_dict(),
        "members": [m.state_dict() for m in run.members],
        "size_se": run.size_se,
        "scalers": {a: {"mean": s.mean, "std": s.std} for a, s in run.scalers.items()},
        "voxel_index": run.voxel_index,
        "stim_peak": run.stim_peak,
    }
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write(path, lambda p: p.write_bytes(buf.getvalue()))


def load_run(path: str | Path) -> Run:
    """Rebuild a trained model from a run folder's ``model.pt``."""
    path = Path(path)
    if not (path / "model.pt").exists():
        raise RunError(f"{path}: not a finished run (no model.pt)")
    state = torch.load(path / "model.pt", map_location="cpu", weights_only=False)
    cfg = cfgmod.from_dict(state["config"])
    model = NIFModel(cfg, tuple(state["image_shape"]), state["n_voxels"])
    model.load_state_dict(state["state_dict"])
    model.eval()
    members = []
    for sd in state.get("members", []):
        member = NIFModel(cfg, tuple(state["image_shape"]), state["n_voxels"])
        member.load_state_dict(sd)
        members.append(member.eval())
    scalers = {a: Standardizer(np.asarray(s["mean"]), np.asarray(s["std"]))
               for a, s in state["scalers"].items()}
    return Run(path, cfg, model, scalers, state["voxel_index"], state["stim_peak"], members,
               state.get("size_se", {}))


def evaluate_files(run: Run, stim_path: str | Path, bold_path: str | Path,
                   rows: str | None = None) -> dict[str, dict]:
    """Score a trained run on data files (all rows, or ``rows`` like ``"288:360"``).

    The files are validated first (:func:`niflow.data.validate.check_evaluation_arrays`).

    Returns
    -------
    dict of area to summary (``summarize``) plus ``r`` (ndarray of shape (n_voxels,)).
    """
    stim = load_stimuli(stim_path, run.config.data.stim_variable)
    resp = load_responses(bold_path)
    idx = check_evaluation_arrays(stim, resp, run.config, run.model.image_shape,
                                  run.voxel_index, rows,
                                  {"stim": str(stim_path), "bold": str(bold_path)})
    pred = run.predict(stim[idx])
    out = {}
    for area, p in pred.items():
        if area not in resp:
            continue
        r = pearson_r(p, resp[area][idx][:, run.voxel_index[area]])
        out[area] = {**summarize(r), "r": r}
    return out

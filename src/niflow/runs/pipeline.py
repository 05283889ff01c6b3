"""The training pipeline: validated data, a model, training (or selection), the run folder's
outputs.
"""

from __future__ import annotations

import dataclasses
import json
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from niflow import config as cfgmod
from niflow._atomic import atomic_write_text
from niflow.config import RunConfig
from niflow.data.dataset import NIFData, Split, build_dataset
from niflow.data.errors import DataError
from niflow.data.io import load_responses, load_stimuli
from niflow.data.layout import image_shape as layout_image_shape
from niflow.data.stream import (
    H5Array,
    StreamingData,
    check_workers,
    default_workers,
    open_streaming,
    require_hdf5,
)
from niflow.data.validate import (
    RowSpec,
    check_areas,
    check_evaluation_arrays,
    check_row_indices,
)
from niflow.evaluate.statistics import pearson_r, summarize
from niflow.interpret.sizes import log_sigma_standard_errors
from niflow.model.nif import NIFModel
from niflow.runs.folder import (
    _create_run_dir,
    _finish_run_info,
    _remove_temporaries,
    _write_run_info,
    check_resume,
    check_run_dir,
)
from niflow.runs.inputs import (
    AddedAreasWarning,
    Inputs,
    PooledStimulusWarning,
    check_arrays,
    check_config,
    config_for_areas,
    pooled_stimulus_note,
)
from niflow.runs.outputs import write_outputs
from niflow.runs.run import Run
from niflow.runs.units import remove_units, train_units
from niflow.train.loop import CHECKPOINT, Batches, History, fit, seed_everything, write_log
from niflow.train.memory import check_memory, estimate_training_memory
from niflow.train.runtime import Runtime, agree, broadcast_object, runtime_from_environment
from niflow.train.select import is_active


def train_run(stim: np.ndarray, responses: dict[str, np.ndarray], out: str | Path | None,
              cfg: RunConfig, test_rows: np.ndarray | str, *, resume: bool = False,
              force: bool = False, progress: bool = True, inputs: dict[str, str] | None = None,
              train_rows: np.ndarray | str | None = None, memory_check: bool = True,
              runtime: Runtime | None = None, on_resume: Callable[[str], None] | None = None,
              ) -> tuple[Run, History, NIFData]:
    """Train a NIF model on arrays and (if ``out``) write the full run folder.

    Every input is validated first (:func:`niflow.runs.inputs.check_arrays`); an error
    leaves nothing behind.

    Parameters
    ----------
    stim : ndarray of shape (n_samples, height, width) or colour (n_samples, height, width, 3)
        or (n_samples, 3, height, width) (:mod:`niflow.data.layout`)
    responses : dict of str to ndarray of shape (n_samples, n_voxels)
        Keys must be area names of ``cfg``.
    test_rows : ndarray of int or str
        Held-out rows, scored at the end and never used for fitting.
    inputs : dict, optional
        ``{"stim": path, "bold": path}``, recorded with checksums in ``run.json``.
    train_rows : ndarray of int or str, optional
        Rows to train on (default: all rows not in ``test_rows``).
    memory_check : bool
        Refuse (:class:`~niflow.train.memory.ResourceError`) when the estimated memory exceeds
        what is available.
    runtime : Runtime, optional
        Device, precision, compilation, data-parallel rank (:mod:`niflow.train.runtime`);
        default: the GPU if there is one, one process (or the ``torchrun`` process group).
        The precision is ``cfg.train.precision``.
    on_resume : callable, optional
        With ``resume``: called with one line saying where training resumes.
    """
    checked = check_arrays(stim, responses, cfg, test_rows, train_rows=train_rows,
                           sources=inputs)
    return train_inputs(checked, out, resume=resume, force=force, progress=progress,
                        memory_check=memory_check, runtime=runtime, on_resume=on_resume)


def train_inputs(inputs: Inputs, out: str | Path | None, *, resume: bool = False,
                 force: bool = False, progress: bool = True, memory_check: bool = True,
                 on_start: Callable[[], None] | None = None, runtime: Runtime | None = None,
                 on_resume: Callable[[str], None] | None = None,
                 ) -> tuple[Run, History, NIFData]:
    """Train on validated inputs (:func:`niflow.runs.inputs.validate_inputs`).

    Before anything is written: the run folder is checked (``out`` must not hold a run
    unless ``force``; ``resume`` needs one whose inputs, configuration and split match, see
    :func:`check_resume`) and the memory the run needs is compared with what is available.
    ``on_start`` is called once all of that passed (the command line prints the input
    warnings there, so that a refused run prints its error alone), then ``on_resume`` with
    the line saying where a resumed run continues. A finished run is not resumed:
    :class:`~niflow.runs.folder.RunComplete`.

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

    note = []

    def checks() -> None:
        if out_path is not None and runtime.is_main:
            check_run_dir(out_path, force, resume)
            if resume:
                note.append(check_resume(out_path, inputs.config, inputs.split,
                                         inputs.sources, selection=is_active(cfg)))
        if memory_check:
            check_memory(estimate_training_memory(
                cfg, inputs.image_shape, inputs.n_voxels, inputs.n_samples,
                int(inputs.split.train.size),
                n_eval_rows=max(inputs.split.val.size, inputs.split.test.size)),
                runtime.device)

    agree(checks, runtime)
    _started(runtime, on_start, on_resume, note)
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


def _started(runtime: Runtime, on_start: Callable[[], None] | None,
             on_resume: Callable[[str], None] | None, note: list[str]) -> None:
    """Once every check passed (rank 0): ``on_start()``, then ``on_resume(note)``."""
    if not runtime.is_main:
        return
    if on_start is not None:
        on_start()
    if on_resume is not None and note:
        on_resume(note[0])


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

    With ``config.select`` (:mod:`niflow.train.select`) every candidate and ensemble member
    trains with checkpoints of its own (:mod:`niflow.runs.units`; in memory without a run
    folder) and the kept model's epochs are written to ``log.jsonl``; otherwise the one
    model trains with a checkpoint after every epoch. Then (``readout.refit``) every model's
    Gaussian readouts are refitted on the training and validation rows.
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
        def train(model, d, c, folder, again):
            return fit(model, d, c.train, folder, resume=again, progress=progress,
                       runtime=runtime)

        chosen, models, hists, selection = train_units(cfg, data, build, train, out_path,
                                                       resume=resume, runtime=runtime)
        hist = hists[0]
        if out_path is not None and runtime.is_main:
            write_log(out_path, hist.epochs)
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
    if chosen.readout.refit:
        t0 = time.perf_counter()
        refit = _refit_readouts(models, data)
        if selection is not None:
            selection.refit_alpha = refit
            selection.refit_seconds = round(time.perf_counter() - t0, 3)
    if selection is not None and out_path is not None and runtime.is_main:
        atomic_write_text(out_path / "selection.json",
                          json.dumps(selection.to_dict(), indent=2) + "\n")
    for m in models:
        m.to("cpu", torch.float32)  # outputs, figures and the returned Run: CPU, float32
    run = Run(chosen, models[0], data.scalers, data.voxel_index, stim_peak,
              members=models[1:], path=out_path)
    evaluated = eval_data() if runtime.is_main else None
    if evaluated is not None and evaluated.split.train.size >= 8:
        rows = evaluated.split.train
        run.size_se = log_sigma_standard_errors(
            run.model, torch.as_tensor(evaluated.stim[rows]),
            {a: torch.as_tensor(r[rows]) for a, r in evaluated.responses.items()})
    if out_path is not None and runtime.is_main:
        write_outputs(run, evaluated, hist)
        _finish_run_info(out_path, hist)
        remove_units(out_path)  # a finished run never resumes
    return run, hist, evaluated


REFIT_BATCH = 256  # rows per forward pass of the readout refit


def _refit_readouts(models: list[NIFModel], data: NIFData | StreamingData,
                    ) -> dict[str, list[float]]:
    """Refit every model's Gaussian readouts (:meth:`NIFModel.refit_readouts`) on the training
    and validation rows (every member's, which are the same rows split differently), read
    as training reads them (:class:`~niflow.train.loop.Batches`: from disk for streamed
    data); return each area's median chosen penalty per model."""
    rows = np.sort(np.concatenate([data.split.train, data.split.val]))
    plan = [rows[i:i + REFIT_BATCH] for i in range(0, rows.size, REFIT_BATCH)]
    out: dict[str, list[float]] = {}
    for model in models:
        param = next(model.parameters())
        source = Batches(data, param.device, param.dtype, model)
        for area, alpha in model.refit_readouts(source.batches(plan), rows.size).items():
            out.setdefault(area, []).append(float(alpha.median()))
    return out


def train_stream(stim_path: str | Path, bold_path: str | Path, out: str | Path | None,
                 cfg: RunConfig, test_rows: RowSpec, *, train_rows: RowSpec = None,
                 num_workers: int | None = None, resume: bool = False, force: bool = False,
                 progress: bool = True, memory_check: bool = True,
                 runtime: Runtime | None = None, config_source: str = "config",
                 on_start: Callable[[], None] | None = None,
                 on_resume: Callable[[str], None] | None = None,
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
    n, cfg = _checked_stream_inputs(cfg, stim_path, bold_path, config_source)
    test = check_row_indices(test_rows, n, "test rows")
    if test.size == 0:
        raise DataError(f"{stim_path}: test rows {test_rows!r} select no rows; at least one "
                        f"held-out row is needed to score the model")
    train = None if train_rows is None else check_row_indices(train_rows, n, "train rows")
    runtime = runtime or runtime_from_environment("auto")
    if num_workers is None:
        num_workers = default_workers(runtime.device)
    elif runtime.is_main:
        check_workers(num_workers)
    data = open_streaming(stim_path, bold_path, test, val_fraction=cfg.train.val_fraction,
                          seed=cfg.train.seed, stim_variable=cfg.data.stim_variable,
                          num_workers=num_workers, stim_scale=cfg.data.stim_scale,
                          train_rows=train)
    out_path = Path(out) if out is not None else None
    sources = {"stim": str(stim_path), "bold": str(bold_path)}
    reference = _sample_rows(data.split.train, REFERENCE_ROWS, cfg.train.seed)
    init = _sample_rows(data.split.train, INIT_ROWS, cfg.train.seed + 1)

    note = []

    def checks() -> None:
        if out_path is not None and runtime.is_main:
            check_run_dir(out_path, force, resume)
            if resume:
                note.append(check_resume(out_path, cfg, data.split, sources))
        if memory_check:
            in_memory = reference.size + test.size
            check_memory(estimate_training_memory(
                cfg, data.image_shape, data.n_voxels, max(in_memory, init.size),
                init.size, n_eval_rows=max(data.split.val.size, test.size)), runtime.device)

    agree(checks, runtime)
    _started(runtime, on_start, on_resume, note)

    def build(c: RunConfig, d: StreamingData) -> NIFModel:
        return _initial_model(c, d.image_shape, d.n_voxels, (d.pixel_mean, d.pixel_std),
                              lambda: d.read(init))

    return _fit_and_write(cfg, build, data, lambda: _held_out_data(data, reference), sources,
                          out_path, resume=resume, force=force, progress=progress,
                          runtime=runtime, stim_peak=data.stim_peak)


def _sample_rows(rows: np.ndarray, limit: int, seed: int) -> np.ndarray:
    if rows.size <= limit:
        return np.asarray(rows)
    return np.sort(np.random.default_rng(seed).choice(rows, limit, replace=False))


def _checked_stream_inputs(cfg: RunConfig, stim_path: str | Path, bold_path: str | Path,
                           source: str) -> tuple[int, RunConfig]:
    """Check the streamed files' kind, stimulus shape, config geometry and area names;
    return the number of samples and the configuration with the response file's areas
    (:func:`niflow.runs.inputs.config_for_areas`, said as a warning)."""
    import h5py

    stim = H5Array.open(stim_path, cfg.data.stim_variable)
    where = f"{stim_path}: variable {cfg.data.stim_variable!r}"
    shape = layout_image_shape(stim.shape, where)
    check_config(cfg, shape, source)
    require_hdf5(bold_path)
    with h5py.File(bold_path, "r") as fh:
        names = {k: None for k, v in fh.items() if isinstance(v, h5py.Dataset)
                 and v.ndim == 2 and v.dtype.kind in "biuf"}
    if not names:
        raise DataError(f"{bold_path}: no 2-D numeric variable (one (n_samples, n_voxels) "
                        f"array per area is expected)")
    cfg, note = config_for_areas(cfg, list(names), shape, str(bold_path))
    if note:
        warnings.warn(note, AddedAreasWarning, stacklevel=3)
        check_config(cfg, shape, source)
    check_areas(names, cfg, str(bold_path))
    pooled = pooled_stimulus_note(cfg, shape, str(stim_path))
    if pooled:
        warnings.warn(pooled, PooledStimulusWarning, stacklevel=3)
    return int(stim.shape[0]), cfg


def _held_out_data(data: StreamingData, reference: np.ndarray) -> NIFData:
    """The test rows and ``reference`` training rows of a streamed run, in memory."""
    rows = np.concatenate([reference, data.split.test])
    x, z = data.read(rows)
    raw = {a: data.scalers[a].inverse(v) for a, v in z.items()}
    k = reference.size
    split = Split(np.arange(k), np.zeros(0, np.int64), np.arange(k, rows.size))
    return NIFData(stim=x, responses=z, raw=raw, split=split, scalers=data.scalers,
                   voxel_index=data.voxel_index, rows=rows)


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


INIT_ROWS = 4096  # training rows the contrast initialisation of a streamed run looks at


REFERENCE_ROWS = 512  # training rows kept for the outputs of a streamed run

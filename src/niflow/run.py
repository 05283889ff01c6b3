"""A run is a folder. This module writes and reads that contract.

``train_run`` fills a folder with::

    run.json          niflow version, seed, input files and their sha256, timings
    config.json       the resolved configuration
    split.json        train / validation / test row indices
    model.pt          weights + what is needed to rebuild the model and its input transform
    checkpoint.pt     last epoch's full training state (for --resume)
    log.jsonl         one JSON record per epoch
    metrics.json      per-area held-out summary (n_voxels, median_r, mean_r, frac_r_above_0.3)
    voxels.csv        per voxel: area, voxel, r_test, r2_test, prf_x, prf_y, prf_sigma
    predictions.npz   test-row predictions per area (response units) and ``test_rows``
    modelparams.mat   learned parameters under basicNIF's names
    figures/*.png     receptive fields of the best voxels, V1 kernels, training curve
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from niflow import __version__
from niflow import config as cfgmod
from niflow._atomic import atomic_write, atomic_write_text
from niflow.config import RunConfig
from niflow.data.dataset import NIFData, Standardizer, build_dataset, parse_rows, scale_stimuli
from niflow.data.io import DataError, load_responses, load_stimuli, save_mat, save_npz
from niflow.evaluate import pearson_r, r_squared, summarize
from niflow.interpret import prf_from_maps, spatial_maps
from niflow.model import NIFModel
from niflow.train import History, fit, predict, seed_everything


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

    def predict(self, stim: np.ndarray) -> dict[str, np.ndarray]:
        """Predictions in the responses' original units.

        Parameters
        ----------
        stim : ndarray of shape (n, height, width) or (n, channels, height, width), as read

        Returns
        -------
        dict of str to ndarray of shape (n, n_voxels)
        """
        x = scale_stimuli(stim, self.config.data.stim_scale, self.stim_peak)
        z = predict(self.model, x)
        return {a: self.scalers[a].inverse(p) for a, p in z.items()}


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_areas(responses: dict[str, np.ndarray], cfg: RunConfig, source: str) -> None:
    unknown = [a for a in responses if a not in cfg.area_names()]
    if unknown:
        raise DataError(
            f"{source}: area variable(s) {unknown} do not match any area of the model config "
            f"{cfg.area_names()}; rename the variables or add areas to the config")


def prepare_run_dir(out: Path, force: bool, resume: bool) -> None:
    if out.exists() and not out.is_dir():
        raise RunError(f"{out}: exists and is not a folder; choose another --out")
    if resume:
        if not (out / "checkpoint.pt").exists():
            raise RunError(f"{out}: nothing to resume (no checkpoint.pt)")
        return
    if out.exists() and any(out.iterdir()):
        if not force:
            raise RunError(f"{out}: run folder exists and is not empty; use --force to "
                           f"overwrite or --resume to continue it")
        shutil.rmtree(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunError(f"{out}: cannot create the run folder ({err.strerror})") from None


def train_run(stim: np.ndarray, responses: dict[str, np.ndarray], out: str | Path | None,
              cfg: RunConfig, test_rows: np.ndarray, *, resume: bool = False,
              force: bool = False, progress: bool = True, inputs: dict[str, str] | None = None,
              ) -> tuple[Run, History, NIFData]:
    """Train a NIF model on arrays and (if ``out``) write the full run folder.

    Parameters
    ----------
    stim : ndarray of shape (n_samples, height, width) or (n_samples, channels, h, w)
    responses : dict of str to ndarray of shape (n_samples, n_voxels)
        Keys must be area names of ``cfg``.
    test_rows : ndarray of int
        Held-out rows, scored at the end and never used for fitting.
    inputs : dict, optional
        ``{"stim": path, "bold": path}``, recorded with checksums in ``run.json``.
    """
    check_areas(responses, cfg, (inputs or {}).get("bold", "responses"))
    data = build_dataset(stim, responses, test_rows, cfg.train.val_fraction, cfg.train.seed,
                         cfg.data.stim_scale)
    out_path = Path(out) if out is not None else None
    if out_path is not None:
        if resume:
            _check_resume_inputs(out_path, cfg, inputs)
        prepare_run_dir(out_path, force, resume)
    seed_everything(cfg.train.seed)
    model = NIFModel(cfg, data.image_shape, data.n_voxels)
    if cfg.data.input_norm == "standardize":
        fit_px = data.stim[np.concatenate([data.split.train, data.split.val])]
        model.set_input_stats(float(fit_px.mean()), float(fit_px.std()))
    fit_rows = np.concatenate([data.split.train, data.split.val])
    if cfg.readout.init == "contrast":
        model.initialize_readouts(
            torch.as_tensor(data.stim[data.split.train]),
            {a: torch.as_tensor(r[data.split.train]) for a, r in data.responses.items()})
    stim_peak = None
    if np.asarray(stim).dtype.kind == "f":
        stim_peak = float(np.abs(stim[fit_rows]).max())
    started = time.time()
    if out_path is not None and not resume:
        cfgmod.save(cfg, out_path / "config.json")
        atomic_write_text(out_path / "split.json", json.dumps(data.split.to_dict()) + "\n")
        _write_run_info(out_path, cfg, inputs, started)
    hist = fit(model, data, cfg.train, out_path, resume=resume, progress=progress)
    run = Run(out_path, cfg, model, data.scalers, data.voxel_index, stim_peak)
    if out_path is not None:
        write_outputs(run, data, hist, time.time() - started)
    return run, hist, data


def _write_run_info(out: Path, cfg: RunConfig, inputs: dict[str, str] | None,
                    started: float) -> None:
    info = {"niflow_version": __version__, "torch_version": torch.__version__,
            "seed": cfg.train.seed, "started": time.strftime("%Y-%m-%dT%H:%M:%S",
                                                             time.localtime(started)),
            "inputs": {k: {"path": str(Path(p).resolve()), "sha256": sha256(p)}
                       for k, p in (inputs or {}).items()}}
    atomic_write_text(out / "run.json", json.dumps(info, indent=2) + "\n")


def _check_resume_inputs(out: Path, cfg: RunConfig, inputs: dict[str, str] | None) -> None:
    info_path = out / "run.json"
    if not info_path.exists():
        raise RunError(f"{out}: no run.json; cannot check the inputs of the run to resume")
    info = json.loads(info_path.read_text())
    for key, path in (inputs or {}).items():
        old = info.get("inputs", {}).get(key)
        if old is not None and old["sha256"] != sha256(path):
            raise RunError(f"{out}: input {key!r} ({path}) differs from the one the run "
                           f"started with; start a new run instead of --resume")
    old_cfg = json.loads((out / "config.json").read_text())
    if old_cfg != cfg.to_dict():
        raise RunError(f"{out}: the configuration differs from the run's config.json; "
                       f"resume with the same config")


def write_outputs(run: Run, data: NIFData, hist: History, seconds: float) -> None:
    """Write weights, metrics, per-voxel table, predictions, modelparams.mat and figures."""
    from niflow import plots

    out = run.path
    assert out is not None
    test = data.split.test
    _save_model(run, out / "model.pt")
    pred_z = predict(run.model, data.stim[test]) if test.size else {}
    rows, metrics = [], {}
    preds = {}
    prfs = {}
    for area in data.areas:
        maps = spatial_maps(run.model, area)
        geo = run.model.geometry(area)
        prf = prf_from_maps(maps, geo.scale, geo.offset)
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
                         prf["prf_y"][j], prf["prf_sigma"][j]])
        order = np.argsort(-np.nan_to_num(r, nan=-2))[:8]
        plots.plot_receptive_fields(
            maps[order], geo, data.voxel_index[area][order], r[order],
            (prf["prf_x"][order], prf["prf_y"][order]), area,
            out / "figures" / f"rf_{area}.png", data.image_shape[1:])
    first = run.config.areas[0].name
    plots.plot_kernels(run.model.graph.areas[first].conv.weight.detach().numpy(), first,
                       out / "figures" / f"kernels_{first}.png")
    plots.plot_training(hist.epochs, out / "figures" / "training.png")
    save_npz(out / "predictions.npz", {**preds, "test_rows": test})
    _write_csv(out / "voxels.csv", ["area", "voxel", "r_test", "r2_test", "prf_x", "prf_y",
                                    "prf_sigma"], rows)
    summary = {"areas": metrics, "n_test_rows": int(test.size),
               "training": {"best_epoch": hist.best_epoch, "epochs_run": len(hist.epochs),
                            "stopped_early": hist.stopped_early,
                            "best_val_median_r": (hist.best_score
                                                  if np.isfinite(hist.best_score) else None),
                            "seconds": seconds}}
    atomic_write_text(out / "metrics.json", json.dumps(summary, indent=2) + "\n")
    save_mat(out / "modelparams.mat", modelparams(run.model))


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
        out[f"convW_{name}"] = area.conv.weight.detach().cpu().numpy()
        out[f"convb_{name}"] = area.conv.bias.detach().cpu().numpy()
    for name, r in model.readouts.items():
        out[f"Uc_{name}"] = r.weight.detach().cpu().numpy()
        out[f"Ux_{name}_ks"] = r.ux.detach().cpu().numpy().transpose(0, 2, 1)
        out[f"Uy_{name}_ks"] = r.uy.detach().cpu().numpy().transpose(0, 2, 1)
        out[f"Am_{name}_ks"] = r.amp.detach().cpu().numpy()
        out[f"b_{name}"] = r.bias.detach().cpu().numpy()
    return out


def _save_model(run: Run, path: Path) -> None:
    state = {
        "niflow_version": __version__,
        "config": run.config.to_dict(),
        "image_shape": run.model.image_shape,
        "n_voxels": {a: r.n_voxels for a, r in run.model.readouts.items()},
        "state_dict": run.model.state_dict(),
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
    scalers = {a: Standardizer(np.asarray(s["mean"]), np.asarray(s["std"]))
               for a, s in state["scalers"].items()}
    return Run(path, cfg, model, scalers, state["voxel_index"], state["stim_peak"])


def evaluate_files(run: Run, stim_path: str | Path, bold_path: str | Path,
                   rows: str | None = None) -> dict[str, dict]:
    """Score a trained run on data files (all rows, or ``rows`` like ``"288:360"``).

    Returns
    -------
    dict of area to summary (``summarize``) plus ``r`` (ndarray of shape (n_voxels,)).
    """
    stim = load_stimuli(stim_path, run.config.data.stim_variable)
    resp = load_responses(bold_path)
    check_areas(resp, run.config, str(bold_path))
    idx = parse_rows(rows, stim.shape[0]) if rows else np.arange(stim.shape[0])
    for area, r in resp.items():
        if r.shape[0] != stim.shape[0]:
            raise DataError(f"{bold_path}: area {area!r} has {r.shape[0]} rows but "
                            f"{stim_path} has {stim.shape[0]} stimuli")
        if area in run.voxel_index and r.shape[1] <= int(np.max(run.voxel_index[area])):
            raise DataError(f"{bold_path}: area {area!r} has {r.shape[1]} voxels; the model "
                            f"was trained on {len(run.voxel_index[area])}")
    if tuple(scale_stimuli(stim[:1]).shape[1:]) != run.model.image_shape:
        raise DataError(f"{stim_path}: stimuli of shape {stim.shape[1:]} do not match the "
                        f"model's {run.model.image_shape}")
    pred = run.predict(stim[idx])
    out = {}
    for area, p in pred.items():
        if area not in resp:
            continue
        r = pearson_r(p, resp[area][idx][:, run.voxel_index[area]])
        out[area] = {**summarize(r), "r": r}
    return out

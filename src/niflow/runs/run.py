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
    predictions.npz   test-row predictions per area (response units), the measured
                      responses ``measured_<area>`` and ``test_rows``
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

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from niflow import config as cfgmod
from niflow._atomic import atomic_write
from niflow._version import __version__
from niflow.data.dataset import Standardizer
from niflow.interpret.receptive_fields import ensemble_receptive_fields
from niflow.model.fitted import FittedModel
from niflow.model.gaussian import GaussianReadout
from niflow.model.nif import NIFModel
from niflow.model.video import VideoNIF


class RunError(RuntimeError):
    """The run folder cannot be used as asked (exists, missing, incomplete)."""


@dataclass
class Run(FittedModel):
    """A fitted model loaded from (or written to) a run folder ``path``."""

    path: Path | None = None

    def receptive_fields(self, area: str) -> dict[str, np.ndarray]:
        """Readout pRF centre and size (stimulus pixels), the median over the ensemble.

        See :func:`niflow.interpret.ensemble_receptive_fields`.
        """
        return ensemble_receptive_fields(self, area)


@dataclass
class MovieRun(Run):
    """A video model loaded from a movie run folder.

    ``model`` is the video model's spatial part (:attr:`VideoNIF.spatial`), so receptive
    fields, information flow and readout figures read it as for static runs; volumes are
    predicted from a movie with :meth:`predict_volumes`.

    Attributes
    ----------
    video : VideoNIF
    tr : float
        Seconds per volume of the training data.
    video_members : list of VideoNIF
        Further ensemble members; predictions are the ensemble's mean.
    """

    video: VideoNIF | None = None
    tr: float = 0.0
    video_members: list[VideoNIF] = field(default_factory=list)

    @property
    def videos(self) -> list[VideoNIF]:
        """The ensemble's video models: ``video`` and ``video_members`` (whose spatial parts
        are ``members``, so receptive fields are the ensemble's medians)."""
        assert self.video is not None
        return [self.video, *self.video_members]

    def predict(self, stim: np.ndarray) -> dict[str, np.ndarray]:
        raise TypeError("a movie run predicts volumes from a movie, not responses to images: "
                        "use run.predict_volumes(niflow.read_movie(stim, bold), volumes)")

    def check_movie(self, files) -> None:
        """Refuse a movie the model cannot predict: other frames (shape, grey or colour) or
        another frame rate (:class:`~niflow.data.errors.DataError`, a ValueError, one line
        with the fix)."""
        from niflow.data.errors import DataError

        video = self.video
        assert video is not None
        stim, origin = files.sources["stim"], self.path or "the run"
        if tuple(files.frame_shape) != tuple(video.frame_shape):
            raise DataError(f"{stim}: frames of shape {files.frame_shape} (channels, height, "
                            f"width) but {origin} was trained on {tuple(video.frame_shape)}: "
                            f"resize the frames (and match grey or colour) as for training")
        if abs(files.timing.fps - video.fps) > 1e-9:
            raise DataError(f"{stim}: variable 'fps' is {files.timing.fps:g} but {origin} was "
                            f"trained at {video.fps:g} fps: resample the movie to "
                            f"{video.fps:g} fps")

    def predict_volumes(self, files, volumes: np.ndarray | None = None,
                        ) -> dict[str, np.ndarray]:
        """Predicted volumes in the responses' units.

        Parameters
        ----------
        files : niflow.data.movie.MovieFiles
            A movie data set (its frames, fps and run timing are used).
        volumes : ndarray of shape (n,), int, optional
            Volume indices into the data set's concatenated responses; default all.

        Returns
        -------
        dict of str to ndarray of shape (n, n_voxels)
        """
        from niflow.train.video import predict_ensemble

        self.check_movie(files)
        vols = np.arange(files.timing.n_volumes) if volumes is None else np.asarray(volumes)
        z = predict_ensemble(self.videos, files, vols)
        return {a: self.scalers[a].inverse(p) for a, p in z.items()}


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


def save_movie_model(run: MovieRun, path: Path) -> None:
    """``model.pt`` of a movie run (``kind: "video"``)."""
    video = run.video
    assert video is not None
    state = {
        "niflow_version": __version__,
        "kind": "video",
        "config": run.config.to_dict(),
        "frame_shape": video.frame_shape,
        "n_voxels": {a: h.n_voxels for a, h in video.hrf.items()},
        "fps": video.fps,
        "tr": run.tr,
        "taps_s": video.taps_s,
        "hrf_span_s": video.hrf_span_s,
        "state_dict": video.state_dict(),
        "members": [m.state_dict() for m in run.video_members],
        "scalers": {a: {"mean": s.mean, "std": s.std} for a, s in run.scalers.items()},
        "voxel_index": run.voxel_index,
    }
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write(path, lambda p: p.write_bytes(buf.getvalue()))


def _load_movie_run(state: dict, path: Path) -> MovieRun:
    cfg = cfgmod.from_dict(state["config"])
    def built(weights: dict) -> VideoNIF:
        video = VideoNIF(cfg, tuple(state["frame_shape"]), state["n_voxels"], state["fps"],
                         taps_s=state["taps_s"], hrf_span_s=state["hrf_span_s"])
        video.load_state_dict(weights)
        return video.eval()

    video = built(state["state_dict"])
    members = [built(w) for w in state.get("members", [])]  # none in runs saved before
    scalers = {a: Standardizer(np.asarray(s["mean"]), np.asarray(s["std"]))
               for a, s in state["scalers"].items()}
    return MovieRun(cfg, video.spatial, scalers, state["voxel_index"], None,
                    [m.spatial for m in members], path=path, video=video,
                    tr=float(state["tr"]), video_members=members)


def load_run(path: str | Path) -> Run:
    """Rebuild a trained model from a run folder's ``model.pt`` (a :class:`MovieRun` for a
    movie run)."""
    path = Path(path)
    if not (path / "model.pt").exists():
        raise RunError(f"{path}: not a finished run (no model.pt)")
    state = torch.load(path / "model.pt", map_location="cpu", weights_only=False)
    if state.get("kind") == "video":
        return _load_movie_run(state, path)
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
    return Run(cfg, model, scalers, state["voxel_index"], state["stim_peak"], members,
               state.get("size_se", {}), path=path)



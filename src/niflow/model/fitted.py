"""A fitted model with the input transform it was trained with: what a run loads.

:class:`FittedModel` takes stimuli as the user loaded them, ``(n, height, width)`` or, in
colour, ``(n, height, width, 3)`` or ``(n, 3, height, width)``, uint8 or float, and applies
the model's own transform (:func:`niflow.data.dataset.scale_stimuli` with the training set's
peak) before the network;
predictions come back in the responses' original units. An ensemble (``members``) predicts
the mean of its models.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from niflow.config import RunConfig
from niflow.data.dataset import Standardizer, scale_stimuli
from niflow.data.errors import DataError
from niflow.data.layout import image_shape
from niflow.model.nif import NIFModel

__all__ = ["FittedModel", "ensemble_predict", "model_and_input", "predict"]


@dataclass
class FittedModel:
    """Trained model(s), the stimulus scaling and the response z-scoring they were fitted with.

    Attributes
    ----------
    config : RunConfig
    model : NIFModel
        The first (chosen) model.
    scalers : dict of str to Standardizer
        Per-area z-scoring of the responses, fitted on the training rows.
    voxel_index : dict of str to ndarray of shape (n_voxels,), int
        Input columns each area's readout predicts.
    stim_peak : float or None
        Peak of the training stimuli (the ``"auto"`` scaling divides by it).
    members : list of NIFModel
        Further ensemble members: same kind as ``model``, other validation parts and seeds.
    size_se : dict of str to ndarray of shape (n_voxels,)
        Standard error of each Gaussian-readout voxel's log σ, by area.
    """

    config: RunConfig
    model: NIFModel
    scalers: dict[str, Standardizer]
    voxel_index: dict[str, np.ndarray]
    stim_peak: float | None
    members: list[NIFModel] = field(default_factory=list)
    size_se: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def ensemble(self) -> list[NIFModel]:
        return [self.model, *self.members]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(channels, height, width)`` the model takes."""
        return tuple(int(s) for s in self.model.image_shape)  # type: ignore[return-value]

    def model_input(self, stim: np.ndarray) -> np.ndarray:
        """Stimuli as loaded, scaled as in training, in the network's layout.

        Parameters
        ----------
        stim : ndarray of shape (n, height, width) or (n, height, width, 3)
            uint8 or float, as read from the stimulus file: grey, or colour channel-last (or
            channel-first, (n, 3, height, width)) (:mod:`niflow.data.layout`).

        Returns
        -------
        ndarray of shape (n, channels, height, width), float32

        Raises
        ------
        ValueError
            If the images' shape differs from the model's.
        """
        stim = np.asarray(stim)
        if stim.ndim == 2:
            stim = stim[None]
        c, h, w = self.image_shape
        try:
            given = image_shape(stim.shape)
        except DataError:  # not an image stack at all: said below, with the model's shape
            given = None
        if given != (c, h, w):
            layouts = (f"(n, {h}, {w}) or (n, 1, {h}, {w})" if c == 1 else
                       f"(n, {h}, {w}, {c}) or (n, {c}, {h}, {w})")
            raise ValueError(f"stimuli of shape {tuple(stim.shape)} do not match the model's "
                             f"images: expected {layouts}")
        peak = self.stim_peak
        if peak is None and stim.dtype.kind == "f":
            # trained on integer images (divided by their dtype's maximum): floats above 1
            # are taken in 0-255 units, not divided by their own, batch-dependent maximum
            peak = 255.0 if float(np.abs(stim).max(initial=0.0)) > 1.0 else 1.0
        return scale_stimuli(stim, self.config.data.stim_scale, peak)

    def predict(self, stim: np.ndarray) -> dict[str, np.ndarray]:
        """Predictions in the responses' original units (the ensemble's mean).

        Parameters
        ----------
        stim : ndarray of shape (n, height, width) or colour (n, height, width, 3) or
            (n, 3, height, width), as read

        Returns
        -------
        dict of str to ndarray of shape (n, n_voxels)
        """
        z = ensemble_predict(self.ensemble, self.model_input(stim))
        return {a: self.scalers[a].inverse(p) for a, p in z.items()}


def model_and_input(model: NIFModel | FittedModel, stim: np.ndarray | torch.Tensor,
                    ) -> tuple[NIFModel, np.ndarray | torch.Tensor]:
    """The network and its input for stimuli given to a public function.

    Parameters
    ----------
    model : FittedModel (a :class:`niflow.Run` is one) or NIFModel
    stim : ndarray
        For a FittedModel: as loaded, (n, height, width) or colour (n, height, width, 3) or
        (n, 3, height, width), uint8 or float (:meth:`FittedModel.model_input` scales them
        as in training). For a bare NIFModel: already scaled, (n, channels, height, width).

    Returns
    -------
    (NIFModel, ndarray of shape (n, channels, height, width))
        The first (chosen) model of a FittedModel, and the scaled stimuli.

    Raises
    ------
    ValueError
        If the stimuli's shape does not fit the model.
    """
    if isinstance(model, FittedModel):
        return model.model, model.model_input(stim)
    expected = tuple(int(s) for s in model.image_shape)
    if np.ndim(stim) != 4 or tuple(np.shape(stim)[1:]) != expected:
        raise ValueError(f"stimuli of shape {tuple(np.shape(stim))} do not fit the model's "
                         f"input (n, {', '.join(map(str, expected))}); pass the Run or "
                         "FittedModel (not run.model) to give images as loaded, (n, height, "
                         "width) uint8 or float")
    return model, stim


def ensemble_predict(models: list[NIFModel], x: np.ndarray) -> dict[str, np.ndarray]:
    """Mean of the models' predictions (z-scored units) for scaled stimuli ``x``."""
    parts = [predict(m, x) for m in models]
    if len(parts) == 1:
        return parts[0]
    return {a: np.mean([p[a] for p in parts], axis=0).astype(np.float32) for a in parts[0]}


@torch.no_grad()
def predict(model: NIFModel | FittedModel, stim: np.ndarray | torch.Tensor,
            batch_size: int = 128) -> dict[str, np.ndarray]:
    """Model predictions in evaluation mode (float32, on the model's device).

    Parameters
    ----------
    model : FittedModel (a :class:`niflow.Run` is one) or NIFModel
    stim : array
        For a FittedModel: stimuli as loaded, (n_samples, height, width) or colour
        (n_samples, height, width, 3) or (n_samples, 3, height, width), uint8 or float. For
        a NIFModel: (n_samples, channels, height, width), float32, scaled as in training.

    Returns
    -------
    dict of str to ndarray of shape (n_samples, n_voxels), float32
        A FittedModel's predictions in the responses' original units, the mean of its
        ensemble (:meth:`FittedModel.predict`); a NIFModel's in z-scored units.

    Raises
    ------
    ValueError
        If the stimuli's shape does not fit the model.
    """
    if isinstance(model, FittedModel):
        return model.predict(stim)
    model, stim = model_and_input(model, stim)
    was_training = model.training
    model.eval()
    x = torch.as_tensor(stim)
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    x = x.to(dtype)
    parts: dict[str, list[np.ndarray]] = {a: [] for a in model.areas_with_voxels}
    for start in range(0, x.shape[0], batch_size):
        out = model(x[start:start + batch_size].to(device))
        for area, y in out.items():
            parts[area].append(y.cpu().numpy())
    model.train(was_training)
    return {a: np.concatenate(p) if p else np.zeros((0, model.readouts[a].n_voxels), np.float32)
            for a, p in parts.items()}

"""A fitted model with the input transform it was trained with: what a run loads.

:class:`FittedModel` takes stimuli as the user loaded them, ``(n, height, width)`` or
``(n, channels, height, width)``, uint8 or float, and applies the model's own transform
(:func:`niflow.data.dataset.scale_stimuli` with the training set's peak) before the network;
predictions come back in the responses' original units. An ensemble (``members``) predicts
the mean of its models.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from niflow.config import RunConfig
from niflow.data.dataset import Standardizer, scale_stimuli
from niflow.model.nif import NIFModel

__all__ = ["FittedModel", "ensemble_predict", "predict"]


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
        stim : ndarray of shape (n, height, width) or (n, channels, height, width)
            uint8 or float, as read from the stimulus file.

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
        x = scale_stimuli(stim, self.config.data.stim_scale, self.stim_peak)
        if tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"stimuli of shape {tuple(stim.shape)} do not match the model's "
                             f"images {self.image_shape} (channels, height, width)")
        return x

    def predict(self, stim: np.ndarray) -> dict[str, np.ndarray]:
        """Predictions in the responses' original units (the ensemble's mean).

        Parameters
        ----------
        stim : ndarray of shape (n, height, width) or (n, channels, height, width), as read

        Returns
        -------
        dict of str to ndarray of shape (n, n_voxels)
        """
        z = ensemble_predict(self.ensemble, self.model_input(stim))
        return {a: self.scalers[a].inverse(p) for a, p in z.items()}


def ensemble_predict(models: list[NIFModel], x: np.ndarray) -> dict[str, np.ndarray]:
    """Mean of the models' predictions (z-scored units) for scaled stimuli ``x``."""
    parts = [predict(m, x) for m in models]
    if len(parts) == 1:
        return parts[0]
    return {a: np.mean([p[a] for p in parts], axis=0).astype(np.float32) for a in parts[0]}


@torch.no_grad()
def predict(model: NIFModel, stim: np.ndarray | torch.Tensor, batch_size: int = 128,
            ) -> dict[str, np.ndarray]:
    """Model predictions in evaluation mode (float32, on the model's device).

    Parameters
    ----------
    stim : array of shape (n_samples, channels, height, width), float32, scaled as in training

    Returns
    -------
    dict of str to ndarray of shape (n_samples, n_voxels), float32 (z-scored units)
    """
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

"""Baselines on the same split: voxelwise ridge regression on pixels.

The regularisation strength is chosen per voxel by efficient leave-one-out cross-validation
on the training rows only (scikit-learn's ``RidgeCV`` with ``alpha_per_target``).
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import RidgeCV

DEFAULT_ALPHAS = np.logspace(-2, 6, 17)


def pixel_features(stim: np.ndarray) -> np.ndarray:
    """Flatten stimuli (n, [c,] h, w) to (n, c·h·w) float64."""
    return np.asarray(stim, dtype=np.float64).reshape(len(stim), -1)


def ridge_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                  alphas: np.ndarray = DEFAULT_ALPHAS) -> tuple[np.ndarray, np.ndarray]:
    """Fit ridge per voxel on training rows, predict test rows.

    Parameters
    ----------
    x_train : ndarray of shape (n_train, n_features)
    y_train : ndarray of shape (n_train, n_voxels)
    x_test : ndarray of shape (n_test, n_features)

    Returns
    -------
    pred : ndarray of shape (n_test, n_voxels)
    alpha : ndarray of shape (n_voxels,)
        The regularisation chosen for each voxel.
    """
    mu, sd = x_train.mean(0), x_train.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    model = RidgeCV(alphas=alphas, alpha_per_target=True)
    model.fit((x_train - mu) / sd, y_train)
    alpha = np.broadcast_to(np.asarray(model.alpha_, dtype=np.float64), (y_train.shape[1],))
    return model.predict((x_test - mu) / sd), alpha

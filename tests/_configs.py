"""Test helper: configurations for short training runs."""

from __future__ import annotations

from niflow import config as cfgmod


def default_config(epochs: int, **train) -> cfgmod.RunConfig:
    """The default preset with ``epochs`` and any other ``train`` settings replaced, as one
    model (no selection, no ensemble: the training engine itself; tests/test_select.py tests
    selection)."""
    cfg = cfgmod.preset("default")
    cfg.select = cfgmod.SelectConfig()
    cfg.train.epochs = epochs
    for key, value in train.items():
        setattr(cfg.train, key, value)
    return cfg.validate()


def movie_config(epochs: int = 4) -> cfgmod.RunConfig:
    """The default preset's ``gabor-gaussian`` candidate for short movie runs: ``epochs``,
    patience 4, a third of the training runs validating."""
    cfg = cfgmod.candidate(cfgmod.preset("default"), "gabor-gaussian")
    cfg.train.epochs, cfg.train.patience, cfg.train.val_fraction = epochs, 4, 0.34
    return cfg

"""Simulated BRAINS-like data sets with known ground truth.

* :mod:`~niflow.data.simulate.glyphs` — :func:`make_glyphs` draws handwritten-looking
  capital letters (``B R A I N S`` by default) as anti-aliased white strokes on black,
  ordered like the real BRAINS stimuli (training part letter by letter, then test part).
* :mod:`~niflow.data.simulate.stimuli` — other stimulus families (textures, natural-like
  patches, bars, dots) and mixtures of them (:func:`make_stimuli`).
* :mod:`~niflow.data.simulate.cortex` — :func:`simulate_responses` passes any stimuli
  through a two-stage model of visual cortex (:class:`SimConfig`) and returns noisy voxel
  responses together with the parameters that generated them; the feature stages live in
  :mod:`~niflow.data.simulate.features`.
* :mod:`~niflow.data.simulate.regimes` — named realistic-noise simulations
  (:func:`regimes`, :func:`make_regime`); :mod:`~niflow.data.simulate.scoring` scores
  fitted models against their truth (import submodules with ``from ... import``:
  ``niflow.data.simulate`` as an attribute of :mod:`niflow.data` is the function).
* :mod:`~niflow.data.simulate.files` — :func:`write_simulation` writes ``stim.mat``,
  ``bold.mat`` (the layout of the real data set) and ``truth.npz``; :func:`load_truth` and
  :func:`load_simulation` read them back; :func:`simulate` is glyphs plus responses.

All coordinates are in stimulus pixels: ``x`` is the column, ``y`` the row, and the centre of
the top-left pixel is ``(0, 0)``.
"""

from niflow.data.simulate.cortex import Simulation, simulate_responses
from niflow.data.simulate.files import load_simulation, load_truth, simulate, write_simulation
from niflow.data.simulate.glyphs import make_glyphs
from niflow.data.simulate.regimes import Regime, make_regime, regimes
from niflow.data.simulate.settings import AREAS, DEFAULT_N_VOXELS, SimConfig, harder_configs
from niflow.data.simulate.stimuli import (
    STIMULUS_FAMILIES,
    make_bars,
    make_dots,
    make_natural,
    make_stimuli,
    make_textures,
)

__all__ = [
    "AREAS",
    "DEFAULT_N_VOXELS",
    "STIMULUS_FAMILIES",
    "Regime",
    "SimConfig",
    "Simulation",
    "harder_configs",
    "load_simulation",
    "load_truth",
    "make_bars",
    "make_dots",
    "make_glyphs",
    "make_natural",
    "make_regime",
    "make_stimuli",
    "make_textures",
    "regimes",
    "simulate",
    "simulate_responses",
    "write_simulation",
]

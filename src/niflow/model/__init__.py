"""NIF model: area graph, observation models (low-rank, Gaussian pRF), and the whole network."""

from niflow.model.areas import Area, AreaGraph, DivisiveNorm, Geometry
from niflow.model.filters import GaborBank
from niflow.model.gaussian import GaussianReadout
from niflow.model.nif import NIFModel
from niflow.model.readout import LowRankReadout

__all__ = ["Area", "AreaGraph", "DivisiveNorm", "GaborBank", "Geometry", "GaussianReadout",
           "LowRankReadout", "NIFModel"]

"""NIF model: area graph, low-rank observation model, and the whole network."""

from niflow.model.areas import Area, AreaGraph, DivisiveNorm, Geometry
from niflow.model.nif import NIFModel
from niflow.model.readout import LowRankReadout

__all__ = ["Area", "AreaGraph", "DivisiveNorm", "Geometry", "LowRankReadout", "NIFModel"]

"""Data: file loaders, splits and z-scoring, and the ground-truth simulator."""

from niflow.data.dataset import (
    NIFData,
    Split,
    Standardizer,
    build_dataset,
    make_split,
    parse_rows,
    scale_stimuli,
)
from niflow.data.errors import DataError
from niflow.data.io import (
    load_arrays,
    load_response_repeats,
    load_responses,
    load_stimuli,
    save_mat,
    save_npz,
    stack_repeats,
)
from niflow.data.nifti import (
    load_mask,
    load_nifti_responses,
    nifti_from_voxels,
    voxel_maps_to_nifti,
)
from niflow.data.simulate.cortex import Simulation, simulate_responses
from niflow.data.simulate.files import load_simulation, load_truth, simulate, write_simulation
from niflow.data.simulate.glyphs import make_glyphs
from niflow.data.simulate.settings import SimConfig

__all__ = [
    "DataError", "NIFData", "SimConfig", "Simulation", "Split", "Standardizer",
    "build_dataset", "load_arrays", "load_responses", "load_simulation", "load_stimuli",
    "load_truth", "make_glyphs", "make_split", "parse_rows", "save_mat", "save_npz",
    "scale_stimuli", "simulate", "simulate_responses", "write_simulation",
    "load_mask", "load_nifti_responses", "load_response_repeats", "nifti_from_voxels",
    "stack_repeats", "voxel_maps_to_nifti",
]

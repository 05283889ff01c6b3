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
from niflow.data.io import (
    DataError,
    load_arrays,
    load_mask,
    load_nifti_responses,
    load_response_repeats,
    load_responses,
    load_stimuli,
    nifti_from_voxels,
    save_mat,
    save_npz,
    stack_repeats,
    voxel_maps_to_nifti,
)
from niflow.data.simulate import (
    SimConfig,
    Simulation,
    load_simulation,
    load_truth,
    make_glyphs,
    simulate,
    simulate_responses,
    write_simulation,
)

__all__ = [
    "DataError", "NIFData", "SimConfig", "Simulation", "Split", "Standardizer",
    "build_dataset", "load_arrays", "load_responses", "load_simulation", "load_stimuli",
    "load_truth", "make_glyphs", "make_split", "parse_rows", "save_mat", "save_npz",
    "scale_stimuli", "simulate", "simulate_responses", "write_simulation",
    "load_mask", "load_nifti_responses", "load_response_repeats", "nifti_from_voxels",
    "stack_repeats", "voxel_maps_to_nifti",
]

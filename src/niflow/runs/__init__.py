"""The run folder: inputs checked at the door, the folder's life cycle, the training pipeline, the
loaded run, its outputs, evaluation, probes, NIfTI maps and cross-validation.
"""

from niflow.runs.crossval import (
    CVResult,
    check_out,
    cross_validate,
    cv_summary,
    write_cv,
    write_folder,
)
from niflow.runs.evaluation import (
    baseline_folder,
    evaluate_folder,
    evaluate_run,
    write_statistics,
)
from niflow.runs.folder import (
    RunComplete,
    check_resume,
    check_run_dir,
    config_differences,
    sha256,
)
from niflow.runs.inputs import (
    AddedAreasWarning,
    Inputs,
    PooledStimulusWarning,
    check_arrays,
    check_config,
    config_for_areas,
    validate_inputs,
)
from niflow.runs.movie_baseline import (
    movie_baseline_folder,
)
from niflow.runs.movie_evaluation import (
    evaluate_movie_folder,
    evaluate_movie_run,
)
from niflow.runs.nifti import (
    export_nifti,
)
from niflow.runs.outputs import (
    chosen_voxel_figures,
    extend_run_outputs,
    readout_prfs,
    write_flow,
    write_outputs,
)
from niflow.runs.pipeline import (
    evaluate_files,
    train_inputs,
    train_run,
    train_stream,
)
from niflow.runs.probe import (
    probe_checks,
    probe_run,
)
from niflow.runs.run import (
    Run,
    RunError,
    load_run,
    modelparams,
)

__all__ = [
    "Inputs",
    "check_config",
    "config_for_areas",
    "AddedAreasWarning",
    "PooledStimulusWarning",
    "check_arrays",
    "validate_inputs",
    "sha256",
    "check_run_dir",
    "check_resume",
    "RunComplete",
    "config_differences",
    "RunError",
    "Run",
    "modelparams",
    "load_run",
    "train_run",
    "train_inputs",
    "train_stream",
    "evaluate_files",
    "readout_prfs",
    "extend_run_outputs",
    "write_flow",
    "chosen_voxel_figures",
    "write_outputs",
    "evaluate_run",
    "write_statistics",
    "evaluate_folder",
    "baseline_folder",
    "movie_baseline_folder",
    "evaluate_movie_run",
    "evaluate_movie_folder",
    "probe_checks",
    "probe_run",
    "export_nifti",
    "CVResult",
    "cross_validate",
    "check_out",
    "write_folder",
    "write_cv",
    "cv_summary",
]

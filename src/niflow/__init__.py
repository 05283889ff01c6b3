"""niflow: Neural Information Flow — end-to-end system identification of visual areas.

The public API, for notebooks and scripts (the ``niflow`` command is a thin layer over it)::

    import niflow
    sim = niflow.simulate("data/")                      # or your own stim.mat / bold.mat
    cfg = niflow.preset("default")
    run, history, data = niflow.train_run(sim.stim, sim.responses, "runs/r1", cfg,
                                          test_rows=niflow.parse_rows("288:360", 360))
    run.predict(sim.stim[:5])                           # dict area -> (5, n_voxels)
"""

from niflow._version import __version__
from niflow.config import ConfigError, RunConfig, preset  # noqa: E402
from niflow.data.dataset import parse_rows
from niflow.data.errors import DataError
from niflow.data.io import load_responses, load_stimuli
from niflow.data.movie import MovieFiles, read_movie  # noqa: E402
from niflow.data.nifti import load_nifti_responses, voxel_maps_to_nifti  # noqa: E402
from niflow.data.simulate.files import simulate
from niflow.evaluate.baselines import baseline_scores, gabor_features  # noqa: E402
from niflow.evaluate.folds import make_folds  # noqa: E402
from niflow.evaluate.statistics import (  # noqa: E402
    fdr_bh,
    ncsnr,
    noise_ceiling,
    pearson_r,
    permutation_pvalues,
    r_squared,
    spearman_brown,
    split_half_reliability,
    voxel_statistics,
)
from niflow.interpret.flow import information_flow
from niflow.interpret.probes import probe
from niflow.interpret.receptive_fields import (
    compare_sizes,
    prf_parameters,
    receptive_fields,
    visual_field_coordinates,
)
from niflow.model.fitted import FittedModel, predict  # noqa: E402
from niflow.model.nif import NIFModel  # noqa: E402
from niflow.report.compare import compare_runs
from niflow.report.html import write_report  # noqa: E402
from niflow.runs.crossval import CVResult, cross_validate  # noqa: E402
from niflow.runs.evaluation import evaluate_run  # noqa: E402
from niflow.runs.folder import RunComplete  # noqa: E402
from niflow.runs.movie import train_movie  # noqa: E402
from niflow.runs.movie_baseline import movie_baseline_folder  # noqa: E402
from niflow.runs.nifti import export_nifti  # noqa: E402
from niflow.runs.pipeline import evaluate_files, train_run, train_stream  # noqa: E402
from niflow.runs.probe import probe_run  # noqa: E402
from niflow.runs.run import MovieRun, Run, RunError, load_run  # noqa: E402
from niflow.train.loop import fit  # noqa: E402
from niflow.train.runtime import Runtime, runtime_from_environment  # noqa: E402
from niflow.train.safety import (  # noqa: E402
    CheckpointError,
    TrainingDiverged,
    TrainingError,
    TrainingInterrupted,
)
from niflow.train.video import MovieFit, fit_movie  # noqa: E402

__all__ = [
    "ConfigError", "DataError", "FittedModel", "NIFModel", "Run", "RunConfig", "RunError",
    "__version__",
    "evaluate_files", "fit", "load_responses", "load_run", "load_stimuli", "parse_rows",
    "pearson_r", "predict", "preset", "r_squared", "receptive_fields", "simulate",
    "train_run", "train_stream", "Runtime", "runtime_from_environment",
    # science outputs
    "baseline_scores", "compare_sizes", "evaluate_run", "export_nifti", "fdr_bh",
    "gabor_features", "information_flow", "load_nifti_responses", "ncsnr", "noise_ceiling",
    "permutation_pvalues", "prf_parameters", "probe", "probe_run", "spearman_brown",
    "split_half_reliability", "visual_field_coordinates", "voxel_maps_to_nifti",
    "voxel_statistics", "write_report",
    # cross-validation
    "CVResult", "cross_validate", "make_folds",
    # comparing runs
    "compare_runs",
    # movies
    "MovieFiles", "MovieFit", "MovieRun", "fit_movie", "movie_baseline_folder", "read_movie",
    "train_movie",
    # safe failures
    "CheckpointError", "RunComplete", "TrainingDiverged", "TrainingError",
    "TrainingInterrupted",
]

"""niflow: Neural Information Flow — end-to-end system identification of visual areas.

The public API, for notebooks and scripts (the ``niflow`` command is a thin layer over it)::

    import niflow
    sim = niflow.simulate("data/")                      # or your own stim.mat / bold.mat
    cfg = niflow.preset("default")
    run, history, data = niflow.train_run(sim.stim, sim.responses, "runs/r1", cfg,
                                          test_rows=niflow.parse_rows("288:360", 360))
    run.predict(sim.stim[:5])                           # dict area -> (5, n_voxels)
"""

__version__ = "0.1.0"

from niflow.baselines import baseline_scores, gabor_features  # noqa: E402
from niflow.config import ConfigError, RunConfig, preset  # noqa: E402
from niflow.crossval import CVResult, cross_validate, make_folds  # noqa: E402
from niflow.data import (  # noqa: E402
    DataError,
    load_responses,
    load_stimuli,
    parse_rows,
    simulate,
)
from niflow.data.io import load_nifti_responses, voxel_maps_to_nifti  # noqa: E402
from niflow.evaluate import (  # noqa: E402
    evaluate_run,
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
from niflow.interpret import (  # noqa: E402
    compare_sizes,
    information_flow,
    prf_parameters,
    probe,
    receptive_fields,
    visual_field_coordinates,
)
from niflow.model import NIFModel  # noqa: E402
from niflow.outputs import export_nifti, probe_run  # noqa: E402
from niflow.parallel import Runtime, runtime_from_environment  # noqa: E402
from niflow.report import write_report  # noqa: E402
from niflow.run import (  # noqa: E402
    Run,
    RunError,
    evaluate_files,
    load_run,
    train_run,
    train_stream,
)
from niflow.train import fit, predict  # noqa: E402

__all__ = [
    "ConfigError", "DataError", "NIFModel", "Run", "RunConfig", "RunError", "__version__",
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
]

"""The command line's parser: every command and option of niflow."""

from __future__ import annotations

import argparse
from pathlib import Path

from niflow import config as cfgmod
from niflow._version import __version__
from niflow.cli.compare import add_compare

EPILOG = "Run `niflow COMMAND --help` for the options of each command."


def _add_simulate(sub) -> None:
    p = sub.add_parser("simulate", help="write a simulated data set with known ground truth",
                       description="Simulate handwritten-letter stimuli (or use given ones) "
                       "and V1/V2 voxel responses from a ground-truth visual cortex; writes "
                       "OUT/stim.mat, OUT/bold.mat (basicNIF layout) and OUT/truth.npz.")
    p.add_argument("out", type=Path, help="output folder")
    p.add_argument("--n-per-letter", type=int, default=60,
                   help="glyphs per letter of BRAINS (default 60: 360 images, test rows "
                   "288:360)")
    p.add_argument("--stim", type=Path, help="use these stimuli (a file with variable "
                   "'stim', shape (n, height, width)) instead of generated glyphs")
    p.add_argument("--v1", type=int, default=800, help="V1 voxels (default 800)")
    p.add_argument("--v2", type=int, default=600, help="V2 voxels (default 600)")
    p.add_argument("--v3", type=int, default=0,
                   help="V3 voxels (default 0: none): a third stage, conjunctions of V2's "
                   "features, under pRFs 3.5 times V1's (not with --prf-mapping)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output-exponent", type=float, default=1.0,
                   help="static output nonlinearity drive**e (e < 1: compressive, harder)")
    p.add_argument("--reliability", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   default=(0.5, 0.9), help="per-voxel repeat reliability range")
    v = p.add_argument_group("movie fMRI (--video)")
    v.add_argument("--video", action="store_true",
                   help="write a movie data set instead: OUT/stim.h5 (stim, fps, run), "
                   "OUT/bold.h5 (V1, V2, tr, run, V1_repeats, V2_repeats), OUT/truth.npz; the "
                   "last run is the repeated test run")
    v.add_argument("--runs", type=int, default=4, help="training runs (default 4)")
    v.add_argument("--run-seconds", type=float, default=120.0, help="seconds per run")
    v.add_argument("--fps", type=float, default=8.0, help="frames per second (default 8)")
    v.add_argument("--tr", type=float, default=1.0, help="seconds per volume (default 1)")
    v.add_argument("--size", type=int, default=32, help="frame height and width (pixels)")
    v.add_argument("--repeats", type=int, default=6, help="repeats of the test run")
    v.add_argument("--nonlinear", action="store_true",
                   help="normalised, thresholded V1 and an end-stopping V2")
    v.add_argument("--motion", action="store_true",
                   help="every voxel also signals motion in a preferred direction (of 8), "
                   "with a weight of 0.3-0.7; truth.npz adds direction_deg, motion_weight")
    v.add_argument("--prf-mapping", action="store_true",
                   help="a pRF-mapping experiment instead of movie clips: checkerboard bars "
                   "sweeping in 8 directions, one step per TR, blanks after every second "
                   "sweep; stim.h5 also holds the binary 'aperture'; each run lasts as long "
                   "as its sweeps (--run-seconds is not used)")


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a NIF model and write a run folder",
                       description="Train on stimuli and voxel responses; write the run "
                       "folder (config.json, model.pt, metrics.json, voxels.csv, "
                       "predictions.npz, modelparams.mat, figures/).")
    p.add_argument("--stim", type=Path, required=True,
                   help="stimulus file (.mat v5/v7.3, .npz or .h5) with variable 'stim' "
                   "(n_samples, height, width)")
    p.add_argument("--bold", type=Path, required=True,
                   help="response file with one (n_samples, n_voxels) variable per area")
    p.add_argument("--out", type=Path, required=True, help="run folder to write")
    p.add_argument("--config", type=Path, help="JSON config (keys not given take the "
                   "preset's values; see configs/)")
    p.add_argument("--preset", choices=cfgmod.PRESETS,
                   help="start from this preset (default: the config's, else 'default')")
    p.add_argument("--test-rows", default="auto",
                   help="held-out rows: start:stop, a comma list, or a file of indices; "
                   "default auto: 288:360 for data of exactly 360 rows (the BRAINS layout, "
                   "said when used), otherwise an error asking for --test-rows (small data "
                   "sets: see `niflow cv`)")
    p.add_argument("--train-rows",
                   help="rows to train on, same forms (default: all rows not in "
                   "--test-rows); must not overlap --test-rows")
    p.add_argument("--test-runs",
                   help="movie data (fps in --stim, tr in --bold): held-out run labels, e.g. "
                   "8 or 7,8; a video model trains on the other runs (default: the runs that "
                   "<AREA>_repeats repeat, else the last run)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted (even killed) run in --out from its last "
                   "checkpoint; refused unless the input files (sha256), the config and the "
                   "rows are those the run started with")
    p.add_argument("--force", action="store_true", help="overwrite an existing run folder")
    p.add_argument("--no-memory-check", action="store_true",
                   help="train even if the estimated memory exceeds what is available")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--device", default="auto",
                   help="auto (the GPU if there is one), cpu, cuda or cuda:N (default auto)")
    p.add_argument("--precision", choices=cfgmod.PRECISIONS,
                   help="bfloat16: forward/backward under bf16 autocast; float64: double "
                   "precision throughout, for numerical checks (sets config.train.precision; "
                   "default: the config's, float32)")
    p.add_argument("--compile", action="store_true",
                   help="train through torch.compile (falls back to eager with a warning)")
    p.add_argument("--stream", action="store_true",
                   help="read training batches from the HDF5 / v7.3 files on demand instead "
                   "of loading them (memory flat in the number of samples)")
    p.add_argument("--workers", type=int,
                   help="with --stream: DataLoader worker processes reading batches (default: "
                   "the cores training leaves free, at most 4; 0 reads in the training "
                   "process)")


def _add_cv(sub) -> None:
    p = sub.add_parser("cv", help="k-fold cross-validation for small data sets",
                       description="Train one NIF model per fold on the other rows and predict "
                       "the fold, so that every row is predicted once by a model that never "
                       "saw it; voxelwise ridge baselines are fitted on the same folds. r is "
                       "Pearson r over all rows with predictions and responses centred within "
                       "each test fold (pooling without centring biases r downwards). On "
                       "movie data (fps / tr) the folds are blocks of whole runs (default: "
                       "leave one run out), each trained as niflow train --test-runs would, "
                       "and the baseline is FIR motion-energy ridge. Writes OUT/cv.json, "
                       "cv_voxels.csv, cv_predictions.npz and config.json.")
    p.add_argument("--stim", type=Path, required=True,
                   help="stimulus file (as for train)")
    p.add_argument("--bold", type=Path, required=True, help="response file (as for train)")
    p.add_argument("--out", type=Path, required=True, help="folder to write")
    p.add_argument("--k", type=int, help="number of folds (default 10; movies: one per run)")
    p.add_argument("--groups", metavar="FILE_OR_VARIABLE",
                   help="keep rows of one group in one fold: a .txt/.csv/.npy file with one "
                   "label per row, FILE:VARIABLE (e.g. truth.npz:labels), or the name of a "
                   "variable of the stimulus file (e.g. labels); images only")
    p.add_argument("--config", type=Path, help="JSON config (as for train)")
    p.add_argument("--preset", choices=cfgmod.PRESETS,
                   help="start from this preset (default: the config's, else 'default')")
    p.add_argument("--seed", type=int, dest="fold_seed",
                   help="seed of the fold assignment (default 0; training uses the config's "
                   "train.seed); images only")
    p.add_argument("--baselines",
                   help="ridge baselines on the same folds: a comma list of pixels, gabor, "
                   "or none (default pixels,gabor; movies: motion-energy or none)")
    p.add_argument("--epochs", type=int, help="training epochs of each fold's model")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out folder")
    p.add_argument("--quiet", action="store_true", help="no line per fold")


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="score a trained run on data",
                       description="Predict responses with a trained run and report per voxel "
                       "and area: Pearson r, R², a one-sided permutation p-value of r with "
                       "Benjamini-Hochberg FDR per area and, given repeated measurements, the "
                       "noise ceiling (split-half reliability, Spearman-Brown corrected) and "
                       "r normalised by it. Writes stats_voxels.csv and stats.json into the "
                       "run folder (or --out). A movie run is scored on the volumes of a "
                       "movie data set (all runs, or --runs), without p-values.")
    p.add_argument("run", type=Path, help="run folder written by `niflow train`")
    p.add_argument("--stim", type=Path, required=True)
    p.add_argument("--bold", type=Path,
                   help="responses (n_samples, n_voxels) per area, or (n_repeats, n_samples, "
                   "n_voxels) to give repeats on a leading axis; default: the mean of --repeats")
    p.add_argument("--repeats", type=Path, nargs="+", metavar="FILE",
                   help="one response file per repeated measurement (e.g. bold_rep1.mat "
                   "bold_rep2.mat); gives the noise ceiling of their mean")
    p.add_argument("--rows", help="rows to score (default: all), e.g. 288:360")
    p.add_argument("--runs", help="movie runs: run labels to score (default: all), e.g. 5 "
                   "or 4,5; <AREA>_repeats in --bold must repeat these runs")
    p.add_argument("--permutations", type=int, default=1000,
                   help="permutations for the p-values (default 1000; 0 = none)")
    p.add_argument("--alpha", type=float, default=0.05, help="FDR level (default 0.05)")
    p.add_argument("--out", type=Path, help="folder for stats_voxels.csv and stats.json "
                   "(default: the run folder)")
    p.add_argument("--json", type=Path, help="also write per-voxel r and summaries here")


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="simulate, train, evaluate and check pRF recovery",
                       description="The embedded default: simulate BRAINS-like data with a "
                       "known cortex, train the default model, print held-out r (with a "
                       "ridge-regression baseline and noise ceilings) and how well receptive "
                       "fields were recovered.")
    p.add_argument("--out", type=Path, default=Path("runs/demo"),
                   help="folder for data and run (replaced; default runs/demo)")
    p.add_argument("--preset", choices=cfgmod.PRESETS, default="default")
    p.add_argument("--n-per-letter", type=int, default=60)
    p.add_argument("--epochs", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_config(sub) -> None:
    p = sub.add_parser("config", help="print a preset or check a config file",
                       description="Print the resolved configuration as JSON.")
    p.add_argument("file", type=Path, nargs="?", help="config file to resolve and check")
    p.add_argument("--preset", choices=cfgmod.PRESETS, default="default")


def _add_science(sub) -> None:
    p = sub.add_parser("probe", help="in-silico bar sweep and gratings on a trained run",
                       description="Show the trained model a pRF bar sweep (textured bars at "
                       "several orientations) and oriented gratings; per voxel fit a 2-D "
                       "Gaussian pRF to the bar responses and measure orientation and spatial-"
                       "frequency tuning. Writes probe_voxels.csv, probe.json and figures "
                       "into the run folder (or --out).")
    p.add_argument("run", type=Path, help="run folder written by `niflow train`")
    p.add_argument("--out", type=Path, help="folder for the outputs (default: the run folder)")
    p.add_argument("--visual-field-deg", type=float,
                   help="visual angle of the stimulus width in degrees (default: the run's "
                   "config data.visual_field_deg); adds degree columns")
    p.add_argument("--bar-step", type=float,
                   help="bar step in px (default: the image width / 28, 2 px for 56 px)")
    p.add_argument("--bar-width", type=float, help="bar width in px (default: a tenth of the "
                   "image width, at least 3)")

    p = sub.add_parser("baseline", help="voxelwise ridge baselines on the same split",
                       description="Voxelwise ridge regression (scikit-learn RidgeCV, per-voxel "
                       "alpha by leave-one-out CV on the training rows) on pixels and/or a "
                       "fixed Gabor-energy feature bank. Movie data (a stimulus file with "
                       "'fps' or a response file with 'tr'): ridge on FIR-delayed motion "
                       "energy, per-voxel alpha by leave-one-run-out on the training runs, "
                       "scored on --test-runs (with the noise ceiling when the response file "
                       "has <AREA>_repeats). When --out is a run folder its test rows (runs) "
                       "and voxels are used and the scores join its report.")
    p.add_argument("--stim", type=Path, required=True, help="stimulus file (as for train)")
    p.add_argument("--bold", type=Path, required=True, help="response file (as for train)")
    p.add_argument("--out", type=Path, required=True, help="run folder or a new folder")
    p.add_argument("--features", nargs="+", choices=("pixels", "gabor", "motion-energy"),
                   help="feature sets (default: pixels and gabor for images, motion-energy "
                   "for movies, the only one for movies)")
    p.add_argument("--test-rows", default="auto",
                   help="held-out rows when --out is not a run folder (default auto: "
                   "288:360 for the 360 rows of the BRAINS layout, otherwise required)")
    p.add_argument("--test-runs", metavar="RUNS",
                   help="movie data: held-out runs, a comma list of run labels (e.g. 5 or "
                   "4,5), when --out is not a movie run folder (default: the runs that "
                   "<AREA>_repeats repeat, else the last run)")
    p.add_argument("--permutations", type=int, default=1000,
                   help="permutations for the p-values of r (default 1000)")

    p = sub.add_parser("report", help="write a self-contained HTML report of a run",
                       description="Write RUN/report.html, one self-contained page (opens "
                       "offline): contents, summary, training curve with the best epoch, a "
                       "section per area (histograms of held-out r beside ridge and the noise "
                       "ceiling, predicted vs measured test responses, niflow vs ridge, visual-"
                       "field maps by polar angle and eccentricity with coverage, size vs "
                       "eccentricity, readout maps), in-silico, flow, a sortable and searchable "
                       "per-voxel table and the configuration; in degrees once the visual field "
                       "is known. RUN may be a `niflow demo` folder. Runs the in-silico "
                       "experiments first if the folder has none.")
    p.add_argument("run", type=Path, help="run folder written by `niflow train`")
    p.add_argument("--out", type=Path, help="HTML file (default RUN/report.html)")
    p.add_argument("--voxels", action="append", default=[], metavar="AREA:V1,V2,...",
                   help="also show the readout maps of these voxels (input columns), e.g. "
                   "V1:3,17,40; repeatable")
    p.add_argument("--visual-field-deg", type=float,
                   help="visual angle of the stimulus width (re-runs the in-silico "
                   "experiments with degree units)")
    p.add_argument("--no-probe", action="store_true",
                   help="do not run the in-silico experiments when they are missing")

    p = sub.add_parser("nifti", help="NIfTI responses in, per-voxel result maps out",
                       description="`niflow nifti import` turns NIfTI responses plus one ROI "
                       "mask per area into a response file for `niflow train`; `niflow nifti "
                       "export` writes a run's per-voxel results back as 3-D images in each "
                       "mask's space. Voxel order: C order of the mask's (i, j, k) indices.")
    nsub = p.add_subparsers(dest="nifti_command", required=True, metavar="import|export")
    q = nsub.add_parser("import", help="NIfTI responses + masks → .mat/.npz response file")
    q.add_argument("--nifti", type=Path, nargs="+", required=True,
                   help="one 4-D image (x, y, z, samples) or one 3-D image per sample; "
                        "movies: one 4-D image per run, in order (labelled 1, 2, ...)")
    q.add_argument("--mask", action="append", required=True, metavar="AREA=FILE",
                   help="ROI mask of an area, e.g. V1=v1.nii.gz; repeat per area")
    q.add_argument("--repeats", type=Path, nargs="+", default=[],
                   help="movies: one 4-D image per repeat of the test run; their mean is "
                        "written as the last run and the repeats as <AREA>_repeats (the "
                        "noise ceiling)")
    q.add_argument("--tr", type=float, default=None,
                   help="movies: seconds per volume (default: the images' headers)")
    q.add_argument("--out", type=Path, required=True,
                   help="response file to write (.mat or .npz); with several 4-D images, "
                        "--repeats or --tr a movie response file (areas, run, tr)")
    q = nsub.add_parser("export", help="a run's per-voxel results → 3-D NIfTI maps")
    q.add_argument("run", type=Path, help="run folder (trained on `nifti import` output)")
    q.add_argument("--mask", action="append", required=True, metavar="AREA=FILE",
                   help="the masks the responses were imported with")
    q.add_argument("--out", type=Path, help="folder for the maps (default RUN/nifti)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="niflow", description="Neural Information Flow: train CNN models of visual "
        "areas end to end on fMRI voxel responses.", epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"niflow {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_simulate, _add_train, _add_cv, _add_evaluate, _add_demo, _add_config,
                _add_science, add_compare):
        add(sub)
    return parser

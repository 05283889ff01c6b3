"""``niflow`` command line: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

from niflow import __version__
from niflow import config as cfgmod
from niflow.config import ConfigError
from niflow.data.io import DataError
from niflow.run import RunError

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
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output-exponent", type=float, default=1.0,
                   help="static output nonlinearity drive**e (e < 1: compressive, harder)")
    p.add_argument("--reliability", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   default=(0.5, 0.9), help="per-voxel repeat reliability range")


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
    p.add_argument("--test-rows", default="288:360",
                   help="held-out rows: start:stop, a comma list, or a file of indices "
                   "(default 288:360, the BRAINS convention)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in --out from its last checkpoint")
    p.add_argument("--force", action="store_true", help="overwrite an existing run folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="score a trained run on data",
                       description="Predict responses with a trained run and report per-area "
                       "Pearson r against the given responses.")
    p.add_argument("run", type=Path, help="run folder written by `niflow train`")
    p.add_argument("--stim", type=Path, required=True)
    p.add_argument("--bold", type=Path, required=True)
    p.add_argument("--rows", help="rows to score (default: all), e.g. 288:360")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="niflow", description="Neural Information Flow: train CNN models of visual "
        "areas end to end on fMRI voxel responses.", epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"niflow {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_simulate, _add_train, _add_evaluate, _add_demo, _add_config):
        add(sub)
    return parser


def _resolve_config(args) -> cfgmod.RunConfig:
    """Config file (if any) over the preset (``--preset``, else the file's, else default),
    then command-line overrides."""
    data: dict = {}
    if args.config is not None:
        data = cfgmod.read_json(args.config)
    if args.preset:
        data["preset"] = args.preset
    try:
        cfg = cfgmod.from_dict(data)
        for key in ("epochs", "batch_size", "lr", "seed"):
            if getattr(args, key) is not None:
                setattr(cfg.train, key, getattr(args, key))
        return cfg.validate()
    except ConfigError as err:
        raise ConfigError(f"{args.config or 'command line'}: {err}") from None


def cmd_simulate(args) -> int:
    from niflow.data.io import load_stimuli
    from niflow.data.simulate import SimConfig, simulate

    stim = load_stimuli(args.stim) if args.stim is not None else None
    if stim is not None and stim.ndim != 3:
        raise DataError(f"{args.stim}: variable 'stim' must be (n, height, width) to simulate")
    cfg = SimConfig(output_exponent=args.output_exponent,
                    reliability_range=tuple(args.reliability))
    sim = simulate(args.out, n_per_letter=args.n_per_letter,
                   n_voxels={"V1": args.v1, "V2": args.v2}, seed=args.seed, config=cfg,
                   stim=stim)
    print(f"wrote {args.out}/stim.mat {sim.stim.shape}, {args.out}/bold.mat "
          f"({', '.join(f'{a}: {r.shape[1]} voxels' for a, r in sim.responses.items())}), "
          f"{args.out}/truth.npz")
    return 0


def cmd_train(args) -> int:
    from niflow.data.dataset import parse_rows
    from niflow.data.io import load_responses, load_stimuli
    from niflow.run import train_run

    if args.resume and args.force:
        raise RunError("--resume and --force contradict each other; choose one")
    if args.resume and args.config is None and (args.out / "config.json").exists():
        args.config = args.out / "config.json"
    cfg = _resolve_config(args)
    stim = load_stimuli(args.stim, cfg.data.stim_variable)
    resp = load_responses(args.bold)
    test = parse_rows(args.test_rows, stim.shape[0])
    if test.size == 0:
        raise DataError(f"--test-rows {args.test_rows!r} selects no rows of {args.stim} "
                        f"({stim.shape[0]} samples); held-out rows are required")
    run, hist, data = train_run(stim, resp, args.out, cfg, test, resume=args.resume,
                                force=args.force, progress=not args.quiet,
                                inputs={"stim": str(args.stim), "bold": str(args.bold)})
    metrics = json.loads((args.out / "metrics.json").read_text())
    print(f"trained {len(hist.epochs)} epochs (best {hist.best_epoch}); held-out rows: "
          f"{data.split.test.size}")
    _print_area_table(metrics["areas"])
    print(f"run folder: {args.out}")
    return 0


def _print_area_table(areas: dict[str, dict]) -> None:
    print(f"{'area':<6} {'voxels':>6} {'median r':>9} {'mean r':>7} {'r>0.3':>6}")
    def fmt(value, width, digits):
        return f"{'n/a':>{width}}" if value is None else f"{value:>{width}.{digits}f}"

    for area, m in areas.items():
        print(f"{area:<6} {m['n_voxels']:>6} {fmt(m['median_r'], 9, 3)} "
              f"{fmt(m['mean_r'], 7, 3)} {fmt(m['frac_r_above_0.3'], 6, 2)}")


def cmd_evaluate(args) -> int:
    from niflow._atomic import atomic_write_text
    from niflow.run import evaluate_files, load_run

    run = load_run(args.run)
    scores = evaluate_files(run, args.stim, args.bold, args.rows)
    _print_area_table(scores)
    if args.json:
        payload = {a: {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in s.items()}
                   for a, s in scores.items()}
        atomic_write_text(args.json, json.dumps(payload) + "\n")
    return 0


def cmd_demo(args) -> int:
    from niflow.demo import format_summary, run_demo

    summary = run_demo(args.out, preset=args.preset, n_per_letter=args.n_per_letter,
                       seed=args.seed, epochs=args.epochs, progress=not args.quiet)
    print(format_summary(summary))
    return 0


def cmd_config(args) -> int:
    cfg = cfgmod.load(args.file) if args.file else cfgmod.preset(args.preset)
    print(json.dumps(cfg.to_dict(), indent=2))
    return 0


COMMANDS = {"simulate": cmd_simulate, "train": cmd_train, "evaluate": cmd_evaluate,
            "demo": cmd_demo, "config": cmd_config}


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"niflow: warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.formatwarning = _one_line_warning
    try:
        return COMMANDS[args.command](args)
    except (DataError, ConfigError, RunError) as err:
        print(f"niflow {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"niflow {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""``niflow`` commands on movie data sets (:mod:`niflow.data.movie`)."""

from __future__ import annotations

import json
import sys

from niflow.config import ConfigError


def parse_runs(spec: str, option: str = "--test-runs") -> list[int]:
    """Run labels from a comma list, e.g. ``"4,5"`` → ``[4, 5]`` (order kept, no repeats)."""
    try:
        runs = [int(v) for v in spec.split(",") if v.strip()]
    except ValueError:
        runs = []
    if not runs:
        raise ConfigError(f"{option} {spec!r}: expected a comma list of run labels, e.g. 5 "
                          f"or 4,5")
    return list(dict.fromkeys(runs))


def movie_baseline(args) -> int:
    """``niflow baseline`` on movie data: FIR motion-energy ridge, scored on test runs."""
    from niflow.data.dataset import is_auto
    from niflow.data.movie import read_movie
    from niflow.runs.movie_baseline import movie_baseline_folder

    other = [f for f in (args.features or []) if f != "motion-energy"]
    if other:
        raise ConfigError(f"--features {' '.join(other)}: {args.stim} and {args.bold} are a "
                          f"movie data set, whose baseline is motion-energy (give --features "
                          f"motion-energy or leave it out)")
    if not is_auto(args.test_rows):
        raise ConfigError(f"--test-rows is for image data; {args.stim} and {args.bold} are a "
                          f"movie data set: give the held-out runs with --test-runs")
    test_runs = None if args.test_runs is None else parse_runs(args.test_runs)
    files = read_movie(args.stim, args.bold)
    results = movie_baseline_folder(files, args.out, test_runs, args.permutations)
    info = json.loads((args.out / "baseline_motion_energy.json").read_text())
    print(f"ridge on FIR motion energy ({info['cv']}; delays "
          f"{info['delays_s'][0]:g}-{info['delays_s'][-1]:g} s); test runs "
          f"{info['test_runs']} ({info['n_test_volumes']} volumes)")
    print(f"{'area':<6} {'voxels':>6} {'median r':>9} {'r>0.3':>6} {'ceiling':>8} "
          f"{'r/ceiling':>9}")

    def fmt(value, width, digits):
        return f"{'n/a':>{width}}" if value is None else f"{value:>{width}.{digits}f}"

    for area, res in results.items():
        s = res["summary"]
        print(f"{area:<6} {len(res['voxel']):>6} {fmt(s['median_r'], 9, 3)} "
              f"{fmt(s['frac_r_above_0.3'], 6, 2)} "
              f"{fmt(s['median_noise_ceiling'], 8, 3)} {fmt(s['median_r_normalised'], 9, 3)}")
    for note in info["notes"]:
        print(f"niflow baseline: note: {note}", file=sys.stderr)
    print(f"wrote baseline_motion_energy.csv, baseline_motion_energy.json to {args.out}")
    return 0


def movie_evaluate(args, run) -> int:
    """``niflow evaluate`` of a movie run on a movie data set (all runs, or ``--runs``)."""
    from niflow._atomic import atomic_write_text
    from niflow.cli.tables import print_stats_table
    from niflow.data.errors import DataError
    from niflow.data.movie import is_movie_data, read_movie
    from niflow.evaluate.statistics import TIME_SERIES_P_NOTE
    from niflow.runs.movie_evaluation import evaluate_movie_folder

    for flag, given in (("--rows", args.rows), ("--repeats", args.repeats)):
        if given:
            raise ConfigError(f"{flag} is for image runs; {args.run} is a movie run: choose "
                              f"runs with --runs, and put the repeats in <AREA>_repeats of "
                              f"--bold")
    if not is_movie_data(args.stim, args.bold):
        raise DataError(f"{args.run} is a movie run, but {args.stim} has no 'fps' and "
                        f"{args.bold} no 'tr': give a movie data set (the movie contract)")
    files = read_movie(args.stim, args.bold)
    runs = None if args.runs is None else parse_runs(args.runs, "--runs")
    out = args.out if args.out is not None else args.run
    results = evaluate_movie_folder(run, files, runs, out)
    scored = json.loads((out / "stats.json").read_text())
    print(f"runs {scored['runs']} of {args.bold} ({scored['n_volumes']} volumes); p-values "
          f"{TIME_SERIES_P_NOTE}")
    print_stats_table(results)
    if args.json:
        payload = {a: {**res["summary"], "r": res["stats"]["r"].tolist()}
                   for a, res in results.items()}
        atomic_write_text(args.json, json.dumps(payload) + "\n")
    print(f"wrote stats_voxels.csv, stats.json to {out}")
    return 0


def movie_cv(args, cfg) -> int:
    """``niflow cv`` on movie data: folds of whole runs, FIR motion-energy ridge beside."""
    from niflow.cli.tables import print_cv_table
    from niflow.runs.movie_crossval import cross_validate_movie

    for flag, given in (("--groups", args.groups is not None),
                        ("--seed", args.fold_seed is not None)):
        if given:
            raise ConfigError(f"{flag} is for images; {args.stim} and {args.bold} are a movie "
                              f"data set, whose folds are blocks of whole runs (--k of them)")
    kinds = [k.strip() for k in (args.baselines or "motion-energy").split(",") if k.strip()]
    if kinds not in (["motion-energy"], ["none"]):
        raise ConfigError(f"--baselines {args.baselines}: movie data is compared with "
                          f"motion-energy ridge (give --baselines motion-energy or none)")
    res = cross_validate_movie(args.stim, args.bold, cfg, k=args.k, out=args.out,
                               baseline=kinds == ["motion-energy"], progress=not args.quiet,
                               force=args.force,
                               config_source=str(args.config or "command line"))
    runs = sum(len(f["test_runs"]) for f in res.fold_info)
    print(f"cross-validation over runs: {res.k} folds of runs ({runs} runs, {res.folds.size} "
          f"volumes; {res.seconds:.0f} s); median over voxels of the fold-centred out-of-fold "
          f"r, and the fraction of voxels with r > 0.3")
    print_cv_table(res, args.out)
    return 0

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

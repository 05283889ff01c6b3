"""``niflow probe`` on a movie run: the bar-sweep pRF-mapping probe and its summary table."""

from __future__ import annotations

import numpy as np

from niflow.config import ConfigError


def probe_movie(args, run) -> int:
    """Probe a :class:`~niflow.runs.run.MovieRun` and print one line per area."""
    from niflow.runs.probe import probe_run

    if args.bar_step is not None or args.bar_width is not None:
        raise ConfigError("--bar-step and --bar-width are for image runs; a movie run's "
                          "probe shows the standard sweep (one bar step per TR)")
    res = probe_run(run, args.out)
    print(f"{'area':<6} {'voxels':>6} {'σ readout':>9} {'σ in-silico':>11} "
          f"{'centre dist':>11} {'HRF peak':>8} {'in-silico':>9}")
    for area, fit in res["fits"].items():
        d = res["checks"][area]["all_voxels"]["median_distance_px"]
        print(f"{area:<6} {fit.x.size:>6} {np.nanmedian(res['readout'][area]['prf_sigma']):>9.2f} "
              f"{np.nanmedian(fit.sigma):>11.2f} {'n/a' if d is None else f'{d:.2f}':>11} "
              f"{np.median(res['readout'][area]['hrf_peak_s']):>7.2f}s "
              f"{np.nanmedian(fit.hrf_peak_s):>8.2f}s")
    def fmt(v) -> str:
        return "n/a" if v is None else f"{v:.2f}"

    print("drifting gratings (medians): " + "; ".join(
        f"{a} orientation selectivity {fmt(m['orientation_selectivity'])}, direction "
        f"selectivity {fmt(m['direction_selectivity'])}, transient index "
        f"{fmt(m['transient_index'])}" for a, m in res["medians"].items()))
    print(f"wrote {(args.out or args.run) / 'probe_voxels.csv'} and probe.json")
    return 0

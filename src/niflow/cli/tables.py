"""Tables that ``niflow`` commands print."""

from __future__ import annotations

__all__ = ["print_cv_table", "print_stats_table"]


def print_stats_table(results: dict[str, dict]) -> None:
    """Per area: voxels, median r and R², fraction significant, ceiling, r / ceiling."""
    def fmt(value, width, digits=3):
        return f"{'n/a':>{width}}" if value is None else f"{value:>{width}.{digits}f}"

    print(f"{'area':<6} {'voxels':>6} {'median r':>9} {'median R2':>9} {'signif.':>7} "
          f"{'ceiling':>8} {'r/ceil':>7}")
    for area, res in results.items():
        s = res["summary"]
        print(f"{area:<6} {s['n_voxels']:>6} {fmt(s['median_r'], 9)} {fmt(s['median_r2'], 9)} "
              f"{fmt(s['frac_significant'], 7, 2)} {fmt(s['median_noise_ceiling'], 8)} "
              f"{fmt(s['median_r_normalised'], 7)}")
    notes = {s["summary"].get("note") for s in results.values()} - {None}
    for note in sorted(notes):
        print(f"note: {note}")


def print_cv_table(res, out) -> None:
    """Per area: voxels, and the median cross-validated r and fraction above 0.3 of niflow
    and each baseline side by side."""
    models = {"niflow": res.summaries, **res.baseline_summaries}
    print(f"{'area':<6} {'voxels':>6} " + " ".join(f"{name + ' r':>9} {'r>0.3':>6}"
                                                  for name in models))

    def fmt(value, width, digits):
        return f"{'n/a':>{width}}" if value is None else f"{value:>{width}.{digits}f}"

    for area in res.areas:
        print(f"{area:<6} {res.voxel[area].size:>6} " + " ".join(
            f"{fmt(m[area]['median_r'], 9, 3)} {fmt(m[area]['frac_r_above_0.3'], 6, 2)}"
            for m in models.values()))
    print(f"wrote {out}/cv.json, cv_voxels.csv, cv_predictions.npz, config.json")

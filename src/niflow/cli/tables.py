"""Tables that ``niflow`` commands print."""

from __future__ import annotations

__all__ = ["print_stats_table"]


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

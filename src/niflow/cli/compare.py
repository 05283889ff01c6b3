"""`niflow compare RUN RUN …`: runs side by side, one HTML page (:mod:`niflow.report.compare`)."""

from __future__ import annotations

from pathlib import Path

COMPARE_HTML = "compare.html"  # as niflow.report.compare's default (not imported: the parser
# stays free of torch, which the report room pulls in)


def add_compare(sub) -> None:
    """Add the ``compare`` command to the parser's subcommands ``sub``."""
    p = sub.add_parser("compare", help="compare run folders side by side (HTML page)",
                       description="Compare finished run folders (presets, seeds, configs) on "
                       "the areas and voxels they share: per area median r, fraction r > 0.3 "
                       "and r / noise ceiling (where `niflow evaluate` left one) of each run; "
                       "per pair of runs the correlation of per-voxel r and the agreement of "
                       "pRF centres and sizes over voxels with r > 0.3 in both; per-voxel "
                       "scatter of r against the first run. Writes one self-contained page.")
    p.add_argument("runs", type=Path, nargs="+", metavar="RUN",
                   help="run folders written by `niflow train` (two or more)")
    p.add_argument("--out", type=Path, default=Path(COMPARE_HTML),
                   help=f"HTML file to write (default {COMPARE_HTML} in the current folder; "
                   f"an existing folder gets {COMPARE_HTML} inside it)")


def cmd_compare(args) -> int:
    from niflow.report.compare import compare_summary, write_compare_page

    summary = compare_summary(args.runs)
    path = write_compare_page(summary, args.out)
    labels = summary["labels"]
    print(f"{'area':6}{'run':>24}{'voxels':>8}{'median r':>10}{'r>0.3':>8}{'r/ceil':>8}")
    for area in summary["areas"]:
        for label, s in zip(labels, summary["per_run"][area], strict=True):
            print(f"{area:6}{label[-24:]:>24}{s['n_voxels']:>8}{_fmt(s['median_r']):>10}"
                  f"{_fmt(s['frac_r_above_0.3']):>8}{_fmt(s['median_r_ceiling']):>8}")
    print(f"wrote {path}")
    return 0


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"

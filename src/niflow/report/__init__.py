"""Reports: the self-contained HTML page of a run; a page comparing runs."""

from niflow.report.compare import (
    compare_runs,
)
from niflow.report.html import (
    write_report,
)

__all__ = [
    "compare_runs",
    "write_report",
]

"""Reports: the self-contained HTML page of a run."""

from niflow.report.html import (
    write_report,
)

__all__ = [
    "write_report",
]

"""The ``niflow`` command line: a thin layer over the Python API."""

from niflow.cli.main import main

__all__ = ["main"]

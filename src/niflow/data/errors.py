"""The error every data problem raises: a one-line message naming the file, the variable and the
fix.
"""

from __future__ import annotations


class DataError(ValueError):
    """Input data cannot be used as given; the message says which file and variable."""

"""Test helper: train with one torch thread."""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def one_thread():
    """Train with one thread: two threads spin against each other and against any other
    process on a busy 2-core machine (5-10× slower), for little gain on a quiet one."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)

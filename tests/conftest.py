"""Shared test fixtures: where the real data lives, small simulations."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# shared/ lies beside the repository (in CI too: a copy beside the clone); read it in place
BRAINS_STIM = REPO.parent / "shared" / "data" / "brains" / "stim.mat"


@pytest.fixture(scope="session")
def brains_stim_path() -> Path:
    if not BRAINS_STIM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"real BRAINS stimuli missing in CI: {BRAINS_STIM}")
        pytest.skip(f"real BRAINS stimuli not available at {BRAINS_STIM}")
    return BRAINS_STIM

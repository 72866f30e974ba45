"""Per-test torch seed: networks built in a test draw their initial weights from torch's global generator, so without
a seed a test's weights depend on which tests ran before it and how much randomness they used. CI once drew a
network that saturated to black where local runs never did; seeded, every test sees the same weights in any order."""
from __future__ import annotations

import sys

import pytest


@pytest.fixture(autouse=True)
def seeded_torch() -> None:
    """Seed torch only where a test module already imported it: the runtime tests must run without torch."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(0)

import os
from pathlib import Path

import pytest


@pytest.fixture
def data_root() -> Path:
    """The benchmark data root from TRANSFERKIT_DATA; skips the test where it is unset or absent."""
    root = os.environ.get("TRANSFERKIT_DATA")
    if root and Path(root).is_dir():
        return Path(root)
    pytest.skip("TRANSFERKIT_DATA not set: benchmark data absent")

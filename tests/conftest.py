import os
import socket
from pathlib import Path

import pytest

# The suite runs offline: the hub libraries are told so, and any attempt to open an internet socket fails
# the test that made it (proof that nothing reaches the network without --online).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


class NetworkBlockedError(RuntimeError):
    pass


_real_connect = socket.socket.connect


def _guarded_connect(self: socket.socket, address: object) -> None:
    if self.family in (socket.AF_INET, socket.AF_INET6):
        raise NetworkBlockedError(f"test tried to open a network connection to {address!r}")
    _real_connect(self, address)


@pytest.fixture(autouse=True, scope="session")
def _no_network() -> None:
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    yield
    socket.socket.connect = _real_connect  # type: ignore[method-assign]


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> None:
    """The unit tests use tiny tensors: one intra-op thread is fastest, and on a busy 2-core machine OpenMP's
    spinning threads made a 2x3x64x64 mobilenet forward take 2 s instead of 7 ms."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True, scope="session")
def _feature_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Feature caches go to a temporary folder, never the user's ~/.cache."""
    os.environ["TRANSFERKIT_CACHE"] = str(tmp_path_factory.mktemp("transferkit-cache"))


@pytest.fixture
def data_root() -> Path:
    """The benchmark data root from TRANSFERKIT_DATA; skips the test where it is unset or absent."""
    root = os.environ.get("TRANSFERKIT_DATA")
    if root and Path(root).is_dir():
        return Path(root)
    pytest.skip("TRANSFERKIT_DATA not set: benchmark data absent")

"""No network by default: the suite's socket guard (tests/conftest.py) really blocks, the hub libraries run
offline, and every entry point that could download refuses without ``--online`` before touching a socket."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from transferkit.cli import app
from transferkit.errors import ModelError
from transferkit.models.backbones import create_backbone


def test_the_guard_blocks_outgoing_connections_and_name_lookups() -> None:
    with pytest.raises(RuntimeError, match="network connection"):
        socket.socket(socket.AF_INET, socket.SOCK_STREAM).connect(("93.184.216.34", 443))
    with pytest.raises(RuntimeError, match="network connection"):
        socket.socket(socket.AF_INET, socket.SOCK_STREAM).connect_ex(("1.1.1.1", 53))
    with pytest.raises(RuntimeError, match=r"resolve the host name 'huggingface\.co'"):
        socket.create_connection(("huggingface.co", 443), timeout=1)


def test_loopback_stays_open_for_multi_process_tests() -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.connect(server.getsockname())
    client.close()
    server.close()


def test_hub_libraries_are_offline() -> None:
    from huggingface_hub import constants

    assert os.environ["HF_HUB_OFFLINE"] == "1" and constants.HF_HUB_OFFLINE


@pytest.mark.parametrize(
    ("spec", "kwargs"),
    [("timm:resnet18", {"pretrained": True}), ("torchvision:resnet18", {"pretrained": True}),
     ("hf:bert-base-uncased", {}), ("st:sentence-transformers/all-mpnet-base-v2", {})],
)
def test_no_download_without_online(spec: str, kwargs: dict[str, bool]) -> None:
    # ModelError, not NetworkBlockedError: refused before any socket is opened
    with pytest.raises(ModelError, match="--online"):
        create_backbone(spec, **kwargs)


def test_cli_refuses_a_hub_model_without_online(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["extract", "--data", "digits-uci", "--backbone", "hf:bert-base-uncased",
                                      "--out", str(tmp_path / "f.npz")])
    assert result.exit_code == 2 and "--online" in result.output
    assert not (tmp_path / "f.npz").exists()


def test_cli_sets_the_hub_libraries_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a user's shell without HF_HUB_OFFLINE: the command itself sets it before any hub library is used
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(key, raising=False)
    missing = str(tmp_path / "missing.npz")  # fails fast, after the command went offline
    CliRunner().invoke(app, ["extract", "--data", missing, "--backbone", "lenet", "--out", str(tmp_path / "f.npz")])
    assert os.environ.get("HF_HUB_OFFLINE") == "1" and os.environ.get("TRANSFORMERS_OFFLINE") == "1"

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


_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "", None}
_real_connect, _real_connect_ex, _real_getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo


def _is_loopback(address: object) -> bool:
    """Loopback stays open: torch.distributed's gloo (multi-process tests) talks to 127.0.0.1."""
    host = address[0] if isinstance(address, tuple) and address else address
    return host in _LOOPBACK_NAMES or (isinstance(host, str) and host.startswith("127."))


def _guard(self: socket.socket, address: object) -> None:
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
        raise NetworkBlockedError(f"test tried to open a network connection to {address!r}")


def _guarded_connect(self: socket.socket, address: object) -> None:
    _guard(self, address)
    _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: object) -> int:
    _guard(self, address)
    return _real_connect_ex(self, address)


def _guarded_getaddrinfo(host: object, *args: object, **kwargs: object) -> list:
    if not _is_loopback(host):
        raise NetworkBlockedError(f"test tried to resolve the host name {host!r}")
    return _real_getaddrinfo(host, *args, **kwargs)


@pytest.fixture(autouse=True, scope="session")
def _no_network() -> None:
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = _guarded_getaddrinfo  # type: ignore[assignment]
    yield
    socket.socket.connect = _real_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _real_connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = _real_getaddrinfo  # type: ignore[assignment]


@pytest.fixture(autouse=True)
def _offline_switch_per_test() -> None:
    """Every CLI command turns transferkit's process-wide offline mode on (:mod:`transferkit.network`); in one test
    process that would carry over into the next test. Each test starts with it off (the socket guard above still
    blocks) and with the hub variables set."""
    yield
    import sys

    network = sys.modules.get("transferkit.network")
    if network is not None:
        network.set_offline(False)
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ[key] = "1"


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


TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "great", "awful", "book", "blender",
              "novel", "kitchen", "this", "is", "the", "a", "it", "was", "very", "not", "love", "broke"]


@pytest.fixture(scope="session")
def tiny_text_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer BERT (16-d) with its tokenizer, saved like a hub folder: no download."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(TINY_VOCAB), encoding="utf-8")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(TINY_VOCAB), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    BertModel(config).save_pretrained(folder)
    BertTokenizer(vocab_file=str(vocab)).save_pretrained(folder)
    return folder


@pytest.fixture
def reviews_jsonl(tmp_path: Path) -> Path:
    """A tiny two-domain review file (JSON lines) whose words say the label: books and kitchen."""
    import json

    path, per_domain = tmp_path / "reviews.jsonl", 24
    rows = []
    for domain, noun in (("books", "book"), ("kitchen", "blender")):
        for i in range(per_domain):
            positive = i % 2 == 1
            words = ["great", "good", "love"] if positive else ["awful", "bad", "broke"]
            rows.append({"domain": domain, "label": "positive" if positive else "negative", "rating": 5 if positive
                         else 1, "text": f"this {noun} is {words[i % 3]} very {words[(i + 1) % 3]}"})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture(autouse=True, scope="session")
def _library_loggers_on_the_session_stream() -> None:
    """transformers attaches its log handler to whatever ``sys.stderr`` is when it first logs. Inside a CliRunner
    invocation that is a buffer closed afterwards, and every later warning then prints "--- Logging error ---" with
    a traceback. Configuring it once here binds it to the session's stream (torchmetrics, which imports
    transformers, used to do this at collection; it is now imported only when something is scored)."""
    from transformers.utils import logging as hf_logging

    hf_logging.get_verbosity()

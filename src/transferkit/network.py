"""Offline means offline: one switch that keeps every library in this process off the network.

The Hugging Face libraries read ``HF_HUB_OFFLINE``; torch.hub, torchvision, timm, MLflow clients and whatever
library is added next do not. So transferkit enforces offline mode below all of them, on the socket: while it is
on, connecting to a host other than loopback, or looking up a host name, raises :class:`NetworkDisabledError`
before a packet leaves. Loopback stays open (``accelerate launch`` and ``torch.distributed`` rendezvous on it).

Two ways in, one mechanism:

- :func:`set_offline` -- for the whole process: every CLI command starts offline, and only ``--online`` lifts it.
- :func:`offline` -- for a block: the library's entry points that may load a model (``create_backbone``, ``fit``)
  run inside it unless their caller passed ``online=True``. It blocks every thread of the process while it lasts.

Example:
    >>> import urllib.request
    >>> with offline():
    ...     urllib.request.urlopen("http://example.com", timeout=1)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    transferkit.errors.NetworkDisabledError: transferkit runs offline: something tried to look up the host ...
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator
from typing import Any

from transferkit.errors import NetworkDisabledError

HUB_OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")

_lock = threading.Lock()
_process_offline = False
_scoped = 0
_originals: dict[str, Any] = {}


def is_offline() -> bool:
    """Whether outgoing connections are refused right now."""
    return _process_offline or _scoped > 0


def set_offline(enabled: bool) -> None:
    """Turn offline mode on or off for the whole process (the CLI: on unless ``--online``)."""
    global _process_offline
    with _lock:
        _install()
        _process_offline = enabled
    for key in HUB_OFFLINE_VARIABLES:
        if enabled:
            os.environ[key] = "1"
        else:
            os.environ.pop(key, None)


@contextlib.contextmanager
def offline(enabled: bool = True) -> Iterator[None]:
    """Refuse network access inside the block (``enabled=False``: change nothing, so callers can pass
    ``not online``). Nested blocks and a process-wide :func:`set_offline` combine: any of them keeps it offline."""
    global _scoped
    if not enabled:
        yield
        return
    with _lock:
        _install()
        _scoped += 1
    try:
        yield
    finally:
        with _lock:
            _scoped -= 1


def _is_loopback(host: Any) -> bool:
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if host is None or host in ("", "localhost", "::1", "ip6-localhost", "ip6-loopback"):
        return True
    return isinstance(host, str) and (host.startswith("127.") or host.startswith("::ffff:127."))


def _refuse(what: str) -> NetworkDisabledError:
    return NetworkDisabledError(
        f"transferkit runs offline: something tried to {what}; nothing is downloaded unless you pass --online "
        "(or set online: true in the run config)"
    )


def _check_address(sock: socket.socket, address: Any) -> None:
    if is_offline() and sock.family in (socket.AF_INET, socket.AF_INET6):
        host = address[0] if isinstance(address, tuple) and address else address
        if not _is_loopback(host):
            raise _refuse(f"connect to {address!r}")


def _connect(self: socket.socket, address: Any) -> None:
    _check_address(self, address)
    return _originals["connect"](self, address)


def _connect_ex(self: socket.socket, address: Any) -> int:
    _check_address(self, address)
    return _originals["connect_ex"](self, address)


def _lookup(name: str) -> Any:
    def lookup(host: Any, *args: Any, **kwargs: Any) -> Any:
        if is_offline() and not _is_loopback(host):
            raise _refuse(f"look up the host {host!r}")
        return _originals[name](host, *args, **kwargs)

    lookup.__name__ = name
    return lookup


_WRAPPERS: dict[str, tuple[Any, str, Any]] = {
    "connect": (socket.socket, "connect", _connect),
    "connect_ex": (socket.socket, "connect_ex", _connect_ex),
    "getaddrinfo": (socket, "getaddrinfo", _lookup("getaddrinfo")),
    "gethostbyname": (socket, "gethostbyname", _lookup("gethostbyname")),
    "gethostbyname_ex": (socket, "gethostbyname_ex", _lookup("gethostbyname_ex")),
}


def _install() -> None:
    """Put the wrappers in place (again, if something replaced them since); they pass straight through whenever
    offline mode is off, to whatever was there before."""
    for key, (owner, attr, wrapper) in _WRAPPERS.items():
        current = getattr(owner, attr)
        if current is not wrapper:
            _originals[key] = current
            setattr(owner, attr, wrapper)

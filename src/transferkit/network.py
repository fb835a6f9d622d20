"""Offline means offline: one switch that keeps every library in this process off the network.

The Hugging Face libraries read ``HF_HUB_OFFLINE``; torch.hub, torchvision, timm, MLflow clients and whatever
library is added next do not. So transferkit enforces offline mode below all of them, on the socket: while it is
on, connecting to a host other than loopback, or looking up a host name, raises :class:`NetworkDisabledError`
before a packet leaves. Loopback stays open (``accelerate launch`` and ``torch.distributed`` rendezvous on it), so
a proxy listening there could carry a request out: offline mode also removes the proxy variables (``HTTPS_PROXY``
and every other ``*_proxy``) and sets ``no_proxy=*`` while it lasts, and puts them back when it ends.

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
NO_PROXY_VARIABLES = ("no_proxy", "NO_PROXY")

_lock = threading.Lock()
_process_offline = False
_scoped = 0
_saved_proxies: dict[str, str | None] | None = None  # the proxy variables as they were before offline mode began


def is_offline() -> bool:
    """Whether outgoing connections are refused right now."""
    return _process_offline or _scoped > 0


def set_offline(enabled: bool) -> None:
    """Turn offline mode on or off for the whole process (the CLI: on unless ``--online``)."""
    global _process_offline
    with _lock:
        _install()
        _process_offline = enabled
        _sync_proxies()
    if enabled:
        _quiet_native_telemetry()
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
        _sync_proxies()
    try:
        yield
    finally:
        with _lock:
            _scoped -= 1
            _sync_proxies()


def _is_proxy_variable(name: str) -> bool:
    """``HTTPS_PROXY``, ``all_proxy``, ...: urllib reads every ``*_proxy`` variable, in either case."""
    return name.lower().endswith("_proxy") and name.lower() != "no_proxy"


def _sync_proxies() -> None:
    """Offline, no proxy: a proxy listens on loopback, which stays open, and would carry the request out
    (``HTTPS_PROXY=http://127.0.0.1:PORT`` took a torch.hub download out through ``CONNECT``). On entering offline
    mode the proxy variables are removed and ``no_proxy=*`` is set (urllib and requests then bypass even a proxy
    given in code); on leaving it they are put back as they were. Called with the lock held."""
    global _saved_proxies
    if is_offline() and _saved_proxies is None:
        names = [k for k in os.environ if _is_proxy_variable(k)] + list(NO_PROXY_VARIABLES)
        _saved_proxies = {k: os.environ.get(k) for k in names}
        for key in names:
            os.environ.pop(key, None)
        for key in NO_PROXY_VARIABLES:
            os.environ[key] = "*"
    elif not is_offline() and _saved_proxies is not None:
        for key in [k for k in os.environ if _is_proxy_variable(k)] + list(NO_PROXY_VARIABLES):
            os.environ.pop(key, None)  # set while offline (by whatever ran then): not the user's
        for key, value in _saved_proxies.items():
            if value is not None:
                os.environ[key] = value
        _saved_proxies = None


def _quiet_native_telemetry() -> None:
    """Libraries whose native threads talk to the network, where no Python socket wrapper reaches: switched off by
    their own controls (onnxruntime reads ORT_DISABLE_TELEMETRY at import; once imported, its API)."""
    import sys

    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    ort = sys.modules.get("onnxruntime")
    if ort is not None and hasattr(ort, "disable_telemetry_events"):
        ort.disable_telemetry_events()


def _is_loopback(host: Any) -> bool:
    """Loopback by name (``localhost``) or as an IP literal; a host *name* that merely starts with ``127.`` is not."""
    import ipaddress

    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if host is None or host in ("", "localhost", "ip6-localhost", "ip6-loopback"):
        return True
    if not isinstance(host, str):
        return False
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def _refuse(what: str) -> NetworkDisabledError:
    return NetworkDisabledError(
        f"transferkit runs offline: something tried to {what}; nothing is downloaded unless you pass --online "
        "(or set online: true in the run config)"
    )


def _check_address(sock: socket.socket, address: Any, what: str = "connect to") -> None:
    if is_offline() and sock.family in (socket.AF_INET, socket.AF_INET6):
        host = address[0] if isinstance(address, tuple) and address else address
        if not _is_loopback(host):
            raise _refuse(f"{what} {address!r}")


def _wrap_connect(inner: Any) -> Any:
    def connect(self: socket.socket, address: Any) -> Any:
        _check_address(self, address)
        return inner(self, address)

    return connect


def _wrap_sendto(inner: Any) -> Any:
    def sendto(self: socket.socket, data: Any, *args: Any) -> Any:
        if args:  # sendto(data, address) or sendto(data, flags, address): a datagram to a host
            _check_address(self, args[-1], "send a datagram to")
        return inner(self, data, *args)

    return sendto


def _wrap_sendmsg(inner: Any) -> Any:
    def sendmsg(self: socket.socket, buffers: Any, ancdata: Any = (), flags: int = 0, address: Any = None) -> Any:
        if address is not None:
            _check_address(self, address, "send a datagram to")
            return inner(self, buffers, ancdata, flags, address)
        return inner(self, buffers, ancdata, flags)

    return sendmsg


def _wrap_lookup(inner: Any) -> Any:
    def lookup(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, tuple):  # getnameinfo((address, port), flags)
            host = host[0] if host else None
        if is_offline() and not _is_loopback(host):
            raise _refuse(f"look up the host {host!r}")
        return inner(host, *args, **kwargs)

    return lookup


_TARGETS = (
    (socket.socket, "connect", _wrap_connect), (socket.socket, "connect_ex", _wrap_connect),
    (socket.socket, "sendto", _wrap_sendto), (socket.socket, "sendmsg", _wrap_sendmsg),
    (socket, "getaddrinfo", _wrap_lookup), (socket, "gethostbyname", _wrap_lookup),
    (socket, "gethostbyname_ex", _wrap_lookup), (socket, "gethostbyaddr", _wrap_lookup),
    (socket, "getnameinfo", _wrap_lookup),
)


def _install() -> None:
    """Wrap each socket function unless it is already one of these wrappers. Each wrapper closes over the function
    it replaced, so a later patch on top (and its removal) keeps the chain intact; the wrappers pass straight
    through whenever offline mode is off."""
    for owner, attr, wrap in _TARGETS:
        current = getattr(owner, attr)
        if getattr(current, "_transferkit_offline_guard", False):
            continue
        wrapper = wrap(current)
        wrapper._transferkit_offline_guard = True
        wrapper.__name__ = attr
        setattr(owner, attr, wrapper)

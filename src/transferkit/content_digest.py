"""Content digests of files and folders: what a cache key holds for every file a result depends on.

A cache keyed by a path (or by path, size and modification time) hands back a stale result once the file behind
the path is rewritten: retrain the model that ``--init-from`` names and the twin cache would still serve the twin of
the old one. So every key that stands for a file holds the SHA-256 of its bytes instead. Reading a file again costs
what reading it the first time did, so within one process a digest is remembered by the file's identity
``(device, inode, size, mtime_ns)``, and only while that identity held across the read and the file was not
modified in the last two seconds (a write within the same clock tick would keep the identity but not the bytes).

Nothing here follows a path it was not given: a folder is walked entry by entry, each link's target hashed in place
of the link (what a reader of the folder would see), every folder once, and a FIFO, socket or device never opened
(reading one may never end); such an entry enters the digest by its kind alone.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> (d / "a.txt").write_text("x")
    1
    >>> file_digest(d / "a.txt") == file_digest(d / "a.txt") != path_digest(d)
    True
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["DigestError", "backbone_source_digest", "dataset_digest", "file_digest", "path_digest"]

MAX_FOLDER_ENTRIES = 200_000  # a model folder holds dozens of files; a walk beyond this is not a model folder
_RECENT_NS = 2_000_000_000  # a file written this recently may change again within its mtime's clock tick
_MAX_REMEMBERED = 1_000_000  # digests kept per process (about 150 MB at the cap); cleared, not evicted, past it

_remembered: dict[tuple[int, int, int, int, int], str] = {}
_lock = threading.Lock()


class DigestError(OSError):
    """A path that cannot be digested (missing, unreadable, a folder too large): the caller keys nothing by it."""


def file_digest(path: str | os.PathLike[str]) -> str:
    """The SHA-256 (hex) of a regular file's bytes, links followed; remembered per file identity in this process.

    Raises :class:`DigestError` for a path that is missing, unreadable or not a regular file (never opened then)."""
    try:
        before = os.stat(path)
    except OSError as exc:
        raise DigestError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(before.st_mode):
        raise DigestError(f"{path} is not a regular file")
    identity = _identity(before)
    with _lock:
        known = _remembered.get(identity)
    if known is not None:
        return known
    try:
        with open(path, "rb") as fh:
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
            after = os.fstat(fh.fileno())
    except OSError as exc:
        raise DigestError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if _identity(after) == identity and time.time_ns() - after.st_mtime_ns > _RECENT_NS:
        with _lock:
            if len(_remembered) >= _MAX_REMEMBERED:
                _remembered.clear()
            _remembered[identity] = digest
    return digest


def path_digest(path: str | os.PathLike[str], *, most: int = MAX_FOLDER_ENTRIES) -> str:
    """The SHA-256 (hex) of a file's bytes, or of a folder's tree: every entry's relative name, kind and content
    (files by :func:`file_digest`), in sorted order, so a renamed, added, removed or rewritten file changes it.

    Raises :class:`DigestError` for a missing or unreadable path, or a folder of more than ``most`` entries."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise DigestError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if stat.S_ISREG(info.st_mode):
        return hashlib.sha256(b"file\0" + file_digest(path).encode()).hexdigest()
    h = hashlib.sha256(b"tree\0")
    if stat.S_ISDIR(info.st_mode):
        _hash_tree(h, Path(path), most)
    else:
        h.update(_kind(info.st_mode).encode())
    return h.hexdigest()


def _hash_tree(h: hashlib._Hash, root: Path, most: int) -> None:
    """Walk ``root`` depth first in sorted order, each folder once (a link back up adds its name, not a loop)."""
    seen_dirs: set[tuple[int, int]] = set()
    todo: list[tuple[str, Path]] = [("", root)]
    count = 0
    while todo:
        rel, folder = todo.pop()
        try:
            info = os.stat(folder)
            names = sorted(os.listdir(folder), reverse=True)  # popped from the end: visited in sorted order
        except OSError as exc:
            raise DigestError(f"cannot read {folder}: {exc.strerror or exc}") from exc
        if (info.st_dev, info.st_ino) in seen_dirs:
            h.update(f"{rel}\0loop\0".encode("utf-8", "surrogateescape"))
            continue
        seen_dirs.add((info.st_dev, info.st_ino))
        h.update(f"{rel}\0dir\0".encode("utf-8", "surrogateescape"))
        for name in names:
            count += 1
            if count > most:
                raise DigestError(f"{root} holds more than {most:,} entries")
            child, child_rel = folder / name, f"{rel}/{name}"
            try:
                mode = os.stat(child).st_mode
            except OSError:
                h.update(f"{child_rel}\0dangling\0".encode("utf-8", "surrogateescape"))
                continue
            if stat.S_ISDIR(mode):
                todo.append((child_rel, child))
            elif stat.S_ISREG(mode):
                h.update(f"{child_rel}\0file\0{file_digest(child)}\0".encode("utf-8", "surrogateescape"))
            else:
                h.update(f"{child_rel}\0{_kind(mode)}\0".encode("utf-8", "surrogateescape"))


def backbone_source_digest(spec: str) -> str | None:
    """The content of the files a backbone spec names (``hf:``/``st:``/``onnx:``/``file:`` PATH, ``~`` expanded as
    the loaders expand it; a ``file:`` model's ``<stem>.backbone/`` folder of tokenizer and config files beside it),
    or None for a spec that names no existing path (a built-in, a packaged or hub model). Weights alone do not make
    a backbone: a folder's tokenizer and config change its features with the same weights.

    Raises :class:`DigestError` for a path that exists but cannot be read."""
    prefix, _, name = spec.partition(":")
    if not name:
        return None
    path = Path(name).expanduser()
    if not path.exists():
        return None
    parts = [path_digest(path)]
    beside = path.parent / f"{path.stem}.backbone"
    if prefix == "file" and path.is_file() and beside.exists():
        parts.append(path_digest(beside))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def dataset_digest(dataset: Any) -> str:
    """The content of a :class:`~transferkit.data.domain.DomainDataset` as a result trained on it sees it: its
    ``fingerprint()`` (inputs, files by content, labels), its class names and the per-item fields its items carry
    (extra heads' targets, a source's index), which the fingerprint leaves out."""
    import numpy as np

    h = hashlib.sha256(dataset.fingerprint().encode())
    h.update(json.dumps([str(c) for c in dataset.classes]).encode("utf-8", "surrogatepass"))
    for key in dataset.emit:
        values = np.ascontiguousarray(dataset.meta[key])
        h.update(f"\0{key}\0{values.dtype.str}\0{values.shape}\0".encode("utf-8", "surrogatepass"))
        h.update(values.tobytes() if values.dtype != object else json.dumps(values.tolist(), default=str).encode())
    return h.hexdigest()


def _identity(info: os.stat_result) -> tuple[int, int, int, int, int]:
    # ctime too: a rewrite to the same size with its mtime put back (os.utime, cp -p, rsync -t) keeps the first four,
    # but any write or utime moves the ctime, which no user-space call can set back
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "fifo"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "char-device"),
                       (stat.S_ISBLK, "block-device")):
        if test(mode):
            return name
    return "other"

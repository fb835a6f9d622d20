"""Benchmark datasets read from a local data root and verified by SHA-256.

The root is ``root=`` or ``$TRANSFERKIT_DATA`` and is laid out like this::

    <root>/SHA256SUMS                    checksums ("<sha256>  ./<relative path>" per line)
    <root>/mnist/mnist_near_exact.npz    uint8 x_train (60000, 28, 28), y_train, x_test, y_test
    <root>/usps/zip.train.gz             7,291 lines "label v1 .. v256", v in [-1, 1]
    <root>/usps/zip.test.gz              2,007 lines

Every file is checked against the root's ``SHA256SUMS`` (or, where that lacks it, the checksums copied into
this module) before it is parsed. Hashes and parsed arrays are cached per process, keyed on the file's path,
size and modification time, so a second load costs a copy of the arrays.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import re
import threading
import zlib
from pathlib import Path

import numpy as np

from transferkit.data.builtin import DIGIT_CLASSES
from transferkit.data.domain import DomainDataset
from transferkit.data.registry import DATA_ROOT_ENV, register_dataset
from transferkit.errors import DataError

SHA256SUMS = "SHA256SUMS"
MNIST_FILE = "mnist/mnist_near_exact.npz"
USPS_FILES = {"train": "usps/zip.train.gz", "test": "usps/zip.test.gz"}
SPLITS = ("train", "test")

# Copied from the data root's SHA256SUMS; used where a root has no SHA256SUMS or it lacks the file.
KNOWN_SHA256 = {
    "mnist/mnist_near_exact.npz": "da231c08013e217002c4f393e0f38583bf5a62a5ead805d541bdacd45803e00f",
    "usps/zip.train.gz": "66ebf231ab51f2cf6ac1a892d0f98ccffee1079d7a5db638c1f11f366046ca16",
    "usps/zip.test.gz": "8dacc3c6e136af6c3488de9e5113a7daf140c8c2f1f0b61c54ee02f03f1a962f",
}

_HEX64 = re.compile(r"[0-9a-f]{64}")
_hash_cache: dict[tuple[str, int, int], str] = {}
_hash_lock = threading.Lock()


# -- checksums ---------------------------------------------------------------------------------
def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file, computed once per process for a given path, size and modification time."""
    key = _file_key(Path(path))
    with _hash_lock:
        cached = _hash_cache.get(key)
    if cached is not None:
        return cached
    h = hashlib.sha256()
    with open(key[0], "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    with _hash_lock:
        _hash_cache[key] = digest
    return digest


def read_sha256sums(path: str | Path) -> dict[str, str]:
    """``relative path -> sha256`` from a ``sha256sum``-style file (``./`` prefixes dropped); {} if absent."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    sums: dict[str, str] = {}
    for line in text.splitlines():
        digest, _, name = line.strip().partition(" ")
        name = name.strip().lstrip("*")
        if not _HEX64.fullmatch(digest.lower()) or not name:
            continue
        while name.startswith("./"):
            name = name[2:]
        sums[name] = digest.lower()
    return sums


def expected_sha256(root: Path, relative: str) -> str:
    """The checksum ``relative`` must have: the root's ``SHA256SUMS`` entry, else :data:`KNOWN_SHA256`."""
    listed = read_sha256sums(root / SHA256SUMS).get(relative)
    if listed is not None:
        return listed
    if relative in KNOWN_SHA256:
        return KNOWN_SHA256[relative]
    raise DataError(f"no checksum known for {root / relative}: add a line for {relative} to {root / SHA256SUMS}")


def verified_file(root: Path | None, relative: str, dataset: str, needs: list[str]) -> Path:
    """``root / relative`` after checking the root, the file and its SHA-256; raise DataError otherwise."""
    files = ", ".join(needs)
    if root is None:
        raise DataError(
            f"dataset {dataset!r} reads benchmark files from a data root: set {DATA_ROOT_ENV}=/path/to/data "
            f"or pass root=...; the root must hold {files}"
        )
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(
            f"benchmark data root {root} (from root= or {DATA_ROOT_ENV}) is not a folder; "
            f"point it at the folder that holds {files}"
        )
    path = root / relative
    if not path.is_file():
        raise DataError(f"dataset {dataset!r}: expected the file {path}, which is missing; the root must hold {files}")
    expected = expected_sha256(root, relative)
    actual = file_sha256(path)
    if actual != expected:
        raise DataError(
            f"checksum mismatch for {path}: expected sha256 {expected}, got {actual}; the file is corrupt or a "
            "different version: restore it from the original download"
        )
    return path


def _file_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns


def _check_split(dataset: str, split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"dataset {dataset!r} has splits {', '.join(SPLITS)}; got {split!r}")


# -- parsing (cached per process; callers get copies) ------------------------------------------
@functools.lru_cache(maxsize=4)
def _read_mnist(path: str, size: int, mtime_ns: int) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except (KeyError, OSError, ValueError, EOFError) as exc:
        raise DataError(f"cannot read MNIST arrays from {path}: {exc}") from exc
    for s in SPLITS:
        x, y = arrays[f"x_{s}"], arrays[f"y_{s}"]
        if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (28, 28) or y.shape != (len(x),):
            raise DataError(f"{path}: x_{s} {x.shape} {x.dtype} / y_{s} {y.shape} are not 28x28 uint8 MNIST")
    for a in arrays.values():
        a.flags.writeable = False
    return arrays


@functools.lru_cache(maxsize=4)
def _read_usps(path: str, size: int, mtime_ns: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        with gzip.open(path, "rt", encoding="ascii") as f:
            table = np.loadtxt(f, dtype=np.float64, ndmin=2)
    except (OSError, EOFError, ValueError, zlib.error) as exc:
        raise DataError(f"cannot read USPS digits from {path}: {exc}") from exc
    if table.shape[1] != 257:
        raise DataError(f"{path}: expected a label and 256 values per line, got {table.shape[1]} numbers")
    labels = table[:, 0]
    if not np.all(labels == np.round(labels)) or labels.min() < 0 or labels.max() > 9:
        raise DataError(f"{path}: labels must be the digits 0-9")
    # [-1, 1] with -1 the background -> 0..255 with 0 the background (MNIST's polarity).
    images = np.clip(np.rint((table[:, 1:] + 1.0) * 127.5), 0, 255).astype(np.uint8).reshape(-1, 16, 16)
    labels = labels.astype(np.int64)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


# -- registered datasets -----------------------------------------------------------------------
@register_dataset("mnist", "MNIST digits, 70,000 28x28 grey (benchmark root: mnist/); splits train 60k / test 10k")
def load_mnist(split: str = "train", root: Path | None = None) -> DomainDataset:
    _check_split("mnist", split)
    path = verified_file(root, MNIST_FILE, "mnist", [MNIST_FILE])
    arrays = _read_mnist(*_file_key(path))
    x, y = arrays[f"x_{split}"].copy(), arrays[f"y_{split}"].astype(np.int64)
    return DomainDataset(x, y, "mnist", list(DIGIT_CLASSES), "image", meta={"path": str(path), "split": split})


@register_dataset(
    "usps", "USPS zip-code digits, 9,298 16x16 grey (benchmark root: usps/); splits train 7,291 / test 2,007"
)
def load_usps(split: str = "train", root: Path | None = None) -> DomainDataset:
    _check_split("usps", split)
    relative = USPS_FILES[split]
    path = verified_file(root, relative, "usps", [USPS_FILES[s] for s in SPLITS])
    images, labels = _read_usps(*_file_key(path))
    return DomainDataset(
        images.copy(), labels.copy(), "usps", list(DIGIT_CLASSES), "image", meta={"path": str(path), "split": split}
    )

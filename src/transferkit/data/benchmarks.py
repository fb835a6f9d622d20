"""Benchmark datasets read from a local data root and verified by SHA-256.

The root is ``root=`` or ``$TRANSFERKIT_DATA`` and is laid out like this::

    <root>/SHA256SUMS                    checksums ("<sha256>  ./<relative path>" per line)
    <root>/mnist/mnist_near_exact.npz    uint8 x_train (60000, 28, 28), y_train, x_test, y_test
    <root>/usps/zip.train.gz             7,291 lines "label v1 .. v256", v in [-1, 1]
    <root>/usps/zip.test.gz              2,007 lines
    <root>/amazon_svmlight/<domain>_<split>.svmlight
                                         Amazon reviews (books, dvd, electronics, kitchen): labels -1/+1,
                                         5,000 unigram/bigram counts (the DANN paper's features)

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
import scipy.sparse

from transferkit.data.builtin import DIGIT_CLASSES
from transferkit.data.domain import DomainDataset
from transferkit.data.registry import DATA_ROOT_ENV, DatasetLoader, register_dataset
from transferkit.data.text import load_text_table
from transferkit.errors import DataError

SHA256SUMS = "SHA256SUMS"
MNIST_FILE = "mnist/mnist_near_exact.npz"
USPS_FILES = {"train": "usps/zip.train.gz", "test": "usps/zip.test.gz"}
SPLITS = ("train", "test")
AMAZON_DOMAINS = ("books", "dvd", "electronics", "kitchen")
AMAZON_FEATURES = 5000
AMAZON_CLASSES = ["negative", "positive"]  # svmlight labels -1 / +1
AMAZON_TEST_SIZES = {"books": 4465, "dvd": 3586, "electronics": 5681, "kitchen": 5945}


def amazon_file(domain: str, split: str) -> str:
    """The path of one Amazon domain's split, relative to the data root."""
    return f"amazon_svmlight/{domain}_{split}.svmlight"


# Copied from the data root's SHA256SUMS; used where a root has no SHA256SUMS or it lacks the file.
KNOWN_SHA256 = {
    "mnist/mnist_near_exact.npz": "da231c08013e217002c4f393e0f38583bf5a62a5ead805d541bdacd45803e00f",
    "usps/zip.train.gz": "66ebf231ab51f2cf6ac1a892d0f98ccffee1079d7a5db638c1f11f366046ca16",
    "usps/zip.test.gz": "8dacc3c6e136af6c3488de9e5113a7daf140c8c2f1f0b61c54ee02f03f1a962f",
    "amazon_svmlight/books_train.svmlight": "317f9a2ec34b81de770b63a84d8c5cc2dc16bd0be6e079d2ff5b5bad5213ea19",
    "amazon_svmlight/books_test.svmlight": "fe4605c7dcf0e0a9410fd2a32f247caaf9abb352cc6e4c3e0f400853163ad9c4",
    "amazon_svmlight/dvd_train.svmlight": "95f602aa08bf6b55758f7b0b18df3882fe30acb11987ee60b6b4bb3c44cba733",
    "amazon_svmlight/dvd_test.svmlight": "4fe1b1a15010f78d8d0c49fe362d35fd4677463a45f1ac02a9f410ae1e638060",
    "amazon_svmlight/electronics_train.svmlight": "7d0061f03ff3827e4f8036b051b5e5828fddc0cd115aa5b212cd28d624dc14e4",
    "amazon_svmlight/electronics_test.svmlight": "641783bc941839c3a111d3488a1b7e3bd820a61ec14a129e7429b47703aa961d",
    "amazon_svmlight/kitchen_train.svmlight": "a70b5ebfe1413e0e16280360905f5c3b64389c435cd20c0165dc9d7f293b31b5",
    "amazon_svmlight/kitchen_test.svmlight": "e1502b97a824eb12314be4447394fa736fecb781c0724e6529cd6733ac7ff6d8",
    "amazon_text/amazon_multidomain_raw_text.jsonl.gz":
        "fe392cc6b71b7ff6bf8a3e271c63acc6f7f2e2aaca385d5ade83028108f3e02e",
    "20newsgroups/20newsgroups_bydate.jsonl.gz": "54e92d0836d5a61a5d12b0ca226d00174ea46a9b235c5f516b2d15d86434fba9",
}
AMAZON_TEXT_FILE = "amazon_text/amazon_multidomain_raw_text.jsonl.gz"
AMAZON_TEXT_TEST_FRACTION = 0.2  # fixed stratified split of each domain's 2,000 reviews; the seed never changes
_AMAZON_TEXT_SPLIT_SEED = 20240

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


@functools.lru_cache(maxsize=8)
def _read_amazon(path: str, size: int, mtime_ns: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_svmlight_file

    try:
        # zero_based=True: the files index features 0..4999; "auto" would shift a file that lacks feature 0.
        x, y = load_svmlight_file(path, n_features=AMAZON_FEATURES, dtype=np.float32, zero_based=True)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise DataError(
            f"cannot read Amazon reviews from {path} as svmlight with {AMAZON_FEATURES} features: {exc}"
        ) from exc
    if x.shape[0] == 0:
        raise DataError(f"{path} holds no reviews")
    bad = ~np.isin(y, (-1.0, 1.0))
    if bad.any():
        raise DataError(
            f"{path}: labels must be -1 (negative) or +1 (positive); found {sorted(set(y[bad].tolist()))[:5]}"
        )
    if not np.isfinite(x.data).all() or (x.data < 0).any():
        raise DataError(f"{path}: features must be finite non-negative counts")
    # Dense float32: 2,000-6,000 reviews x 5,000 features is at most 120 MB, and DomainDataset indexes rows.
    inputs = scipy.sparse.csr_matrix(x).toarray()
    labels = (y > 0).astype(np.int64)
    inputs.flags.writeable = False
    labels.flags.writeable = False
    return inputs, labels


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


def _amazon_loader(domain: str) -> DatasetLoader:
    name = f"amazon-{domain}"
    needs = [amazon_file(domain, s) for s in SPLITS]

    def load(split: str = "train", root: Path | None = None) -> DomainDataset:
        _check_split(name, split)
        path = verified_file(root, amazon_file(domain, split), name, needs)
        inputs, labels = _read_amazon(*_file_key(path))
        return DomainDataset(
            inputs.copy(), labels.copy(), name, list(AMAZON_CLASSES), "vector", meta={"path": str(path), "split": split}
        )

    load.__name__ = load.__qualname__ = f"load_amazon_{domain}"
    load.__doc__ = f"Amazon {domain} reviews as 5,000-d float32 count vectors, classes negative/positive."
    return load


def _amazon_text_loader(domain: str) -> DatasetLoader:
    name = f"amazon-text-{domain}"

    def load(split: str = "train", root: Path | None = None) -> DomainDataset:
        from dataclasses import replace

        if split not in (*SPLITS, "all"):
            raise DataError(f"dataset {name!r} has splits train, test, all; got {split!r}")
        path = verified_file(root, AMAZON_TEXT_FILE, name, [AMAZON_TEXT_FILE])
        ds = load_text_table(path, "all", domain=domain)
        # The file's labels are 0/1 (negative/positive): the same class names as the 5,000-d features.
        ds = replace(ds, domain=name, classes=list(AMAZON_CLASSES), meta={**ds.meta, "split": split})
        if split == "all":
            return ds
        train, test = ds.split(AMAZON_TEXT_TEST_FRACTION, seed=_AMAZON_TEXT_SPLIT_SEED)
        return train if split == "train" else test

    load.__name__ = load.__qualname__ = f"load_amazon_text_{domain}"
    load.__doc__ = f"Amazon {domain} reviews as raw text (title is not included), classes negative/positive."
    return load


for _domain in AMAZON_DOMAINS:
    register_dataset(
        f"amazon-text-{_domain}",
        f"Amazon {_domain} reviews as raw text, negative/positive (benchmark root: amazon_text/); "
        "splits all 2,000 / train 1,600 / test 400",
    )(_amazon_text_loader(_domain))


for _domain in AMAZON_DOMAINS:
    register_dataset(
        f"amazon-{_domain}",
        f"Amazon {_domain} reviews, 5,000-d word/bigram counts, negative/positive "
        f"(benchmark root: amazon_svmlight/); splits train 2,000 / test {AMAZON_TEST_SIZES[_domain]:,}",
    )(_amazon_loader(_domain))


# -- FSDD: spoken digits, one domain per speaker ------------------------------------------------
# <root>/fsdd/recordings/{digit}_{speaker}_{index}.wav: 8 kHz mono 16-bit WAVs, 6 speakers x 10 digits x 50
# recordings. The root's SHA256SUMS holds one checksum for the folder: every file, sorted by name, concatenated.
FSDD_DIR = "fsdd/recordings"
FSDD_SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
FSDD_PER_DIGIT = 50
FSDD_RECORDINGS_SHA256 = "ddb17656a0bca4c5ddace082be188ca630516dc2ef1110afe3c4e9cc71173de4"
# The conventional test split is index 0-4 of every digit and speaker; "val"/"fit" divide the rest so a
# checkpoint can be chosen on a fixed source split (the same files for every seed, so features cache once).
FSDD_SPLITS = {"train": range(5, 50), "test": range(0, 5), "val": range(5, 10), "fit": range(10, 50),
               "all": range(0, 50)}
_fsdd_hash_cache: dict[tuple[str, str], str] = {}


def fsdd_recordings(root: Path | None, dataset: str) -> Path:
    """``<root>/fsdd/recordings`` after checking that every file is there and the folder's SHA-256."""
    needs = f"{FSDD_DIR}/<digit>_<speaker>_<index>.wav (3,000 files)"
    if root is None:
        raise DataError(f"dataset {dataset!r} reads benchmark files from a data root: set {DATA_ROOT_ENV}=/path/to/"
                        f"data or pass root=...; the root must hold {needs}")
    root = Path(root).expanduser()
    folder = root / FSDD_DIR
    if not root.is_dir():
        raise DataError(f"benchmark data root {root} (from root= or {DATA_ROOT_ENV}) is not a folder; point it at "
                        f"the folder that holds {needs}")
    if not folder.is_dir():
        raise DataError(f"dataset {dataset!r}: expected the folder {folder}, which is missing; the root must hold "
                        f"{needs}")
    expected = {f"{d}_{s}_{i}.wav" for d in range(10) for s in FSDD_SPEAKERS for i in range(FSDD_PER_DIGIT)}
    names = sorted(p.name for p in folder.iterdir() if p.is_file())
    missing = sorted(expected - set(names))
    if missing:
        raise DataError(f"dataset {dataset!r}: {len(missing)} of the 3,000 recordings are missing from {folder} "
                        f"({', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}); restore the folder")
    listed = {k: v for k, v in read_sha256sums(root / SHA256SUMS).items() if k.split(" (")[0] == FSDD_DIR}
    want = next(iter(listed.values()), FSDD_RECORDINGS_SHA256)
    got = _fsdd_sha256(folder, names)
    if got != want:
        raise DataError(f"checksum mismatch for {folder} (every file, sorted by name, concatenated): expected sha256 "
                        f"{want}, got {got}; a recording is corrupt, extra or a different version: restore the "
                        "folder from the original download")
    return folder


def _fsdd_sha256(folder: Path, names: list[str]) -> str:
    stats = hashlib.sha256()
    for n in names:
        st = (folder / n).stat()
        stats.update(f"{n}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    key = (str(folder.resolve()), stats.hexdigest())
    with _hash_lock:
        cached = _fsdd_hash_cache.get(key)
    if cached is not None:
        return cached
    h = hashlib.sha256()
    for n in names:
        h.update((folder / n).read_bytes())
    digest = h.hexdigest()
    with _hash_lock:
        _fsdd_hash_cache[key] = digest
    return digest


def _fsdd_loader(name: str, speakers: tuple[str, ...]) -> DatasetLoader:
    def load(split: str = "train", root: Path | None = None) -> DomainDataset:
        if split not in FSDD_SPLITS:
            raise DataError(f"dataset {name!r} has splits {', '.join(FSDD_SPLITS)}; got {split!r}")
        folder = fsdd_recordings(root, name)
        indices = FSDD_SPLITS[split]
        rows = [(s, d, i) for s in speakers for d in range(10) for i in indices]
        return DomainDataset(
            [str(folder / f"{d}_{s}_{i}.wav") for s, d, i in rows],
            np.asarray([d for _, d, _ in rows], dtype=np.int64), name, list(DIGIT_CLASSES), "audio",
            meta={"root": str(folder), "split": split, "speakers": list(speakers),
                  "item_domains": np.asarray([s for s, _, _ in rows], dtype=str),
                  "speaker": np.asarray([s for s, _, _ in rows], dtype=str),  # a second task: who speaks
                  "item_indices": np.asarray([i for _, _, i in rows], dtype=np.int64)},
        )

    load.__name__ = load.__qualname__ = f"load_{name.replace('-', '_')}"
    load.__doc__ = f"FSDD spoken digits 0-9 of {', '.join(speakers)} (8 kHz WAV paths, kind 'audio')."
    return load


def _fsdd_splits_text(n_speakers: int) -> str:
    per = 10 * n_speakers
    return (f"splits train {45 * per:,} (index 5-49) / test {5 * per} (index 0-4) / all; val (5-9) and fit (10-49) "
            "divide train")


register_dataset("fsdd", f"FSDD spoken digits, all 6 speakers (benchmark root: fsdd/); {_fsdd_splits_text(6)}")(
    _fsdd_loader("fsdd", FSDD_SPEAKERS))
for _speaker in FSDD_SPEAKERS:
    _others = tuple(s for s in FSDD_SPEAKERS if s != _speaker)
    register_dataset(f"fsdd-{_speaker}", f"FSDD spoken digits of speaker {_speaker} (benchmark root: fsdd/); "
                     f"{_fsdd_splits_text(1)}")(_fsdd_loader(f"fsdd-{_speaker}", (_speaker,)))
    register_dataset(f"fsdd-not-{_speaker}", f"FSDD spoken digits of the 5 speakers other than {_speaker} "
                     f"(leave-one-speaker-out source); {_fsdd_splits_text(5)}")(
        _fsdd_loader(f"fsdd-not-{_speaker}", _others))

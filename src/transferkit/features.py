"""Feature extraction with a frozen backbone: fast, streamed to disk, cached and reusable.

Fast because it runs an inference copy of the backbone (BatchNorm folded into the convolutions, channels-last
memory, ``torch.inference_mode``), with batches sized for the device (16 on CPU, where larger ones spill out
of cache), and keeps glibc from unmapping and re-faulting big activation buffers between batches
(``benchmarks/extract_throughput.py`` measures each of these); streamed because features go to the ``.npz``
batch by batch (one batch in memory whatever the dataset size); cached because the file name is a hash of the
backbone's weights, its preprocessing and the dataset's content, so a second linear probe or a later ranking
reuses the features. A cache entry is verified before it is used (its declared shape against the dataset before
anything is read, a digest of its features and labels stored inside it, finite values); one that fails is deleted
with a warning and extracted again, and a cache that cannot be written (a full disk, a read-only folder, an entry
that is a folder or a link) is a warning: the features are then computed in memory.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import json
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from transferkit.content_digest import backbone_source_digest
from transferkit.data.domain import DomainDataset, collate
from transferkit.data.modality import modality
from transferkit.errors import ConfigError, DataError, RunDirError
from transferkit.models.backbones import Backbone, check_input_kind
from transferkit.models.inference import inference_copy
from transferkit.runs import atomic_path
from transferkit.ui import make_progress, warn_once

CACHE_ENV = "TRANSFERKIT_CACHE"
CPU_BATCH_SIZE = 16
GPU_BATCH_SIZE = 128


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "transferkit")) / "features"


def pick_device(device: str = "auto") -> torch.device:
    """``auto``: a GPU when there is one. Asking for ``cuda`` on a machine without one is an error, not a fallback."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("train.device is 'cuda' but no CUDA GPU is available here; use 'auto' or 'cpu'")
    return torch.device(device)


def iter_features(
    backbone: Backbone,
    dataset: DomainDataset,
    *,
    batch_size: int | None = None,
    num_workers: int = 0,
    device: str = "auto",
    progress: bool = True,
    description: str = "extract",
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(features float32 (B, D), labels int64 (B,))`` batch by batch, in dataset order.

    ``batch_size`` None picks 16 on CPU and 128 on a GPU. The caller's backbone is left untouched.
    """
    dev = pick_device(device)
    if batch_size is None:
        batch_size = CPU_BATCH_SIZE if dev.type == "cpu" else GPU_BATCH_SIZE
    ds = dataset.with_transform(backbone.transform) if backbone.transform is not None else dataset
    loader = torch.utils.data.DataLoader(
        ds, batch_size=batch_size, shuffle=False, num_workers=num_workers, persistent_workers=False, collate_fn=collate
    )
    record = modality(dataset.kind)
    channels_last = record.channels_last
    model = inference_copy(backbone, dev, channels_last=channels_last)
    heap = heap_allocations() if dev.type == "cpu" else contextlib.nullcontext()
    with heap, make_progress(progress) as bar:
        task = bar.add_task(description, total=len(ds), stats=dataset.domain)
        if getattr(ds.transform, "batch", None) is not None and record.batched:
            yield from _length_sorted_features(model, ds, batch_size, dev, lambda k: bar.update(task, advance=k))
            return
        for batch in loader:
            with torch.inference_mode():
                x = batch["x"].to(dev, non_blocking=True)
                if channels_last and x.dim() == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                feats = model(x).float().cpu().numpy()
            bar.update(task, advance=len(x))
            yield feats, batch["y"].numpy().astype(np.int64)


def _length_sorted_features(
    model: torch.nn.Module, ds: DomainDataset, batch_size: int, dev: torch.device, advance: Any, chunk: int = 4096,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Features of a text dataset from batches of texts of like length, yielded in dataset order per chunk.

    A text encoder trims each batch to its longest text, so batching texts of similar length wastes little
    compute on padding. Sorting happens within chunks of ``chunk`` texts (tokenised together, which is also the
    fast way to tokenise), and each chunk leaves in dataset order, so memory stays bounded.
    """
    for start in range(0, len(ds), chunk):
        stop = min(start + chunk, len(ds))
        tokens = ds.transform.batch([ds.decode(i) for i in range(start, stop)])  # type: ignore[union-attr]
        order = torch.argsort(tokens[:, 1].sum(1), descending=True, stable=True)
        out: np.ndarray | None = None
        for b in range(0, len(order), batch_size):
            idx = order[b : b + batch_size]
            with torch.inference_mode():
                feats = model(tokens[idx].to(dev, non_blocking=True)).float().cpu().numpy()
            if out is None:
                out = np.empty((stop - start, feats.shape[1]), np.float32)
            out[idx.numpy()] = feats
            advance(len(idx))
        labels = ds.labels[start:stop] if ds.labels is not None else np.full(stop - start, -1)
        assert out is not None
        yield out, np.asarray(labels, dtype=np.int64)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4


@contextlib.contextmanager
def heap_allocations() -> Iterator[None]:
    """Serve large CPU tensors from the heap while extracting (glibc only; a no-op elsewhere).

    glibc maps every block above its mmap threshold (at most 32 MiB) afresh and unmaps it on free, so each
    forward pass page-faults and zeroes all of its big activations again: on a 2-core VM that was two thirds
    of the extraction time. Turning mmap off for the duration keeps the pages between batches; the settings
    are restored and the memory trimmed afterwards.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt, malloc_trim = libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError):
        yield
        return
    changed = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))
    try:
        yield
    finally:
        if changed:
            mallopt(_M_MMAP_MAX, 65536)
            mallopt(_M_MMAP_THRESHOLD, 32 << 20)
            mallopt(_M_TRIM_THRESHOLD, 64 << 20)
            malloc_trim(0)


def extract_to_npz(
    backbone: Backbone,
    dataset: DomainDataset,
    path: str | Path,
    *,
    batch_size: int | None = None,
    num_workers: int = 0,
    device: str = "auto",
    progress: bool = True,
) -> Path:
    """Write ``features (N, D)``, ``labels (N,)`` (-1 when unlabelled), ``classes`` and ``domain`` to ``path``.

    The features array is streamed into the zip entry batch by batch; the file appears atomically when done.
    """
    path = Path(path)
    n = len(dataset)
    batches = iter_features(
        backbone, dataset, batch_size=batch_size, num_workers=num_workers, device=device, progress=progress
    )
    labels = np.empty(n, dtype=np.int64)
    digest = hashlib.sha256()
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        first = next(batches)
        dim = first[0].shape[1]
        with zf.open("features.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_2_0(f, {"descr": "<f4", "fortran_order": False, "shape": (n, dim)})
            offset = 0
            for feats, ys in _chain_first(first, batches):
                if not np.isfinite(feats).all():
                    raise DataError(f"backbone {backbone.spec!r} produced NaN/Inf features on {dataset.domain!r}")
                chunk = np.ascontiguousarray(feats, dtype="<f4").tobytes()
                f.write(chunk)
                digest.update(chunk)
                labels[offset : offset + len(ys)] = ys
                offset += len(ys)
        digest.update(labels.astype("<i8").tobytes())
        _write_member(zf, "labels", labels)
        _write_member(zf, "digest", np.asarray(digest.hexdigest()))
        _write_member(zf, "classes", np.asarray(dataset.classes, dtype=str))
        _write_member(zf, "domain", np.asarray(dataset.domain))
        _write_member(zf, "backbone", np.asarray(backbone.spec))
    return path


def load_features(path: str | Path) -> DomainDataset:
    """Read an ``.npz`` written by :func:`extract_to_npz` as a vector dataset."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"feature file {p} does not exist")
    try:
        with np.load(p, allow_pickle=False) as z:
            feats, labels = z["features"], z["labels"]
            classes = [str(c) for c in z["classes"]]
            domain = str(z["domain"])
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"{p} is not a transferkit feature file: {exc}") from exc
    lab = None if (labels < 0).all() else labels
    return DomainDataset(feats, lab, domain, classes, "vector")


def cached_features(
    backbone: Backbone,
    dataset: DomainDataset,
    *,
    cache_dir: str | Path | None = None,
    batch_size: int | None = None,
    num_workers: int = 0,
    device: str = "auto",
    progress: bool = True,
) -> DomainDataset:
    """Features of ``dataset`` under ``backbone``, extracted once and then read from the cache.

    A subset (a split, a seed's training share, K items per class) is served from its whole dataset's features,
    so every split and seed of a run shares one extraction.
    """
    if dataset.origin is not None:
        root, idx = dataset.origin
        whole = cached_features(backbone, root, cache_dir=cache_dir, batch_size=batch_size, num_workers=num_workers,
                                device=device, progress=progress)
        feats = whole.subset(idx)
        feats.labels, feats.classes = dataset.labels, dataset.classes  # a subset may name its classes anew
        feats.meta = {**dataset.meta, "features_from": whole.meta["features_from"]}
        feats.domain = dataset.domain
        feats.origin = None
        feats.emit = dataset.emit  # extra heads' targets and source indices travel with their items
        return feats
    key = cache_key(backbone, dataset)
    file = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / f"{key}.npz"
    kw = {"batch_size": batch_size, "num_workers": num_workers, "device": device, "progress": progress}
    feats = _cached_entry(file, len(dataset))
    if feats is None:
        feats = _extract_into_cache(backbone, dataset, file, kw)
    # the cache stores labels and class names too; keep the caller's (None for unlabelled, names given anew)
    feats.labels, feats.classes, feats.domain = dataset.labels, list(dataset.classes), dataset.domain
    feats.meta = {**dataset.meta, "features_from": str(file)}
    feats.emit = dataset.emit
    return feats


class _BadEntry(Exception):
    """Why a feature cache entry is not used."""


def _cached_entry(file: Path, n: int) -> DomainDataset | None:
    """The features cached in ``file`` for a dataset of ``n`` items, or None: none there, or the entry failed its
    checks (a regular file is then deleted, with a warning naming it; a link or folder is left alone)."""
    import stat

    try:
        info = file.lstat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        warn_once(f"cannot read the feature cache entry {file} ({exc.strerror or exc}); extracting again")
        return None
    if not stat.S_ISREG(info.st_mode):
        warn_once(f"the feature cache entry {file} is not a regular file (a link, folder or device); it is not used "
              "(remove it)")
        return None
    try:
        return _verified_entry(file, n, info.st_size)
    except Exception as exc:  # any damage at all means "extract again", never a failed run
        why = str(exc) if isinstance(exc, _BadEntry) else f"cannot be read ({type(exc).__name__}: {exc})"
        try:
            file.unlink()
            done = "deleted it"
        except OSError as err:
            done = f"could not delete it ({err.strerror or err})"
        warn_once(f"the feature cache entry {file} {why}; {done} and extracting the features again")
        return None


def _verified_entry(file: Path, n: int, size: int) -> DomainDataset:
    """Read a cache entry once its declared features shape fits the dataset and the file (nothing is allocated for
    a shape the file cannot hold), then check the digest stored in it and that every value is finite."""
    with zipfile.ZipFile(file) as zf:
        info = zf.getinfo("features.npy")
        with zf.open(info) as f:
            fmt = np.lib.format
            read_header = fmt.read_array_header_1_0 if fmt.read_magic(f) == (1, 0) else fmt.read_array_header_2_0
            shape, _, dtype = read_header(f)
    if (len(shape) != 2 or shape[0] != n or dtype != np.dtype("<f4") or info.compress_type != zipfile.ZIP_STORED
            or shape[1] * n * 4 > min(info.file_size, size)):
        raise _BadEntry(f"holds features of shape {shape} and type {dtype}, not the {n} rows of float32 it must")
    with np.load(file, allow_pickle=False) as z:
        if "digest" not in z.files:
            raise _BadEntry("has no stored digest (an older transferkit wrote it, or not transferkit)")
        feats, labels, stored = z["features"], z["labels"], str(z["digest"])
        classes, domain = [str(c) for c in z["classes"]], str(z["domain"])
    if labels.shape != (n,) or labels.dtype != np.int64:
        raise _BadEntry(f"holds labels of shape {labels.shape}, not {n}")
    digest = hashlib.sha256(np.ascontiguousarray(feats, "<f4").tobytes())
    digest.update(labels.astype("<i8").tobytes())
    if digest.hexdigest() != stored:
        raise _BadEntry("does not match the digest stored in it (damaged, or not written by transferkit)")
    if not np.isfinite(feats).all():
        raise _BadEntry("holds NaN or infinite features")
    return DomainDataset(feats, None, domain, classes, "vector")


def _extract_into_cache(backbone: Backbone, dataset: DomainDataset, file: Path, kw: dict[str, Any]) -> DomainDataset:
    """Extract into the cache; where it cannot be written (a full disk, a read-only folder, an entry that is a
    folder or a link), extract in memory with a warning: a cache failure never fails the caller."""
    if not os.path.lexists(file):
        try:
            extract_to_npz(backbone, dataset, file, **kw)
            return load_features(file)
        except RunDirError as exc:
            warn_once(f"the features are not cached: {exc}")
    batches = list(iter_features(backbone, dataset, **kw))
    feats = np.concatenate([b[0] for b in batches]).astype(np.float32, copy=False)
    if not np.isfinite(feats).all():
        raise DataError(f"backbone {backbone.spec!r} produced NaN/Inf features on {dataset.domain!r}")
    return DomainDataset(feats, None, dataset.domain, list(dataset.classes), "vector")




def cache_key(backbone: Backbone, dataset: DomainDataset) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"spec": backbone.spec, "kwargs": backbone.kwargs}, sort_keys=True, default=str).encode())
    h.update(repr(backbone.transform).encode())
    # a folder's tokenizer and config shape the features beside its weights: their bytes enter the key
    h.update(str(backbone_source_digest(backbone.spec)).encode())
    for k, v in sorted(backbone.state_dict().items()):
        h.update(k.encode())
        h.update(_bytes_of(v.detach().cpu().contiguous()))
    h.update(dataset.fingerprint().encode())
    return h.hexdigest()[:24]


def _bytes_of(t: torch.Tensor) -> memoryview:
    """A tensor's bytes without a copy (``.tobytes()`` copied every weight of the backbone each time)."""
    return memoryview(t.reshape(-1).view(torch.uint8).numpy()) if t.numel() else memoryview(b"")


def _chain_first(first: tuple[np.ndarray, np.ndarray], rest: Iterator[tuple[np.ndarray, np.ndarray]]):
    yield first
    yield from rest


def _write_member(zf: zipfile.ZipFile, name: str, arr: np.ndarray) -> None:
    with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
        np.lib.format.write_array(f, np.asarray(arr), allow_pickle=False)


def feature_matrix(
    dataset: DomainDataset, backbone: Backbone | None = None, *, device: str = "auto", progress: bool = True
) -> np.ndarray:
    """``(N, D)`` float features to measure on: the backbone's (cached), or the raw inputs without one.

    Raw images are flattened pixels in [0, 1], which only compares domains of one image size; a backbone
    (with its own resizing) is needed otherwise.
    """
    if backbone is not None:
        check_input_kind(backbone, dataset)
        return np.asarray(cached_features(backbone, dataset, device=device, progress=progress).inputs, np.float32)
    raw_features = modality(dataset.kind).raw_features
    if raw_features is None:
        raise ConfigError(f"{dataset.domain!r} holds {dataset.kind}: give a backbone to measure on its features "
                          "(its raw inputs are not feature vectors)")
    try:
        return raw_features(dataset)
    except DataError as exc:
        raise ConfigError(str(exc)) from None

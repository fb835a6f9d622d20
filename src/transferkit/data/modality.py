"""One record per input kind: what the rest of transferkit needs to know about a modality.

A :class:`~transferkit.data.domain.DomainDataset` asks its kind's record how to decode one raw input (an image file
or array, a feature vector, a string, a recording), how to check its inputs when it is built, how to hash a list
of them (the feature-cache key), whether its preprocessing runs on whole batches (a tokenizer), whether its
batches go channels-last, and how to read its raw inputs as vectors to measure on without a backbone. Loaders that
produce a kind live in their own modules (``images.py``, ``text.py``, ``audio.py``, ``tabular.py``), reached from
:func:`transferkit.data.load_data` through the format records of :mod:`transferkit.data.formats`; the backbone
families that read it declare it as their ``input_kind``.

    >>> modality("text").decode(42), modality("text").batched
    ('42', True)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from transferkit.content_digest import DigestError, file_digest
from transferkit.data.pixels import array_to_pil, open_image
from transferkit.data.waveform import read_audio
from transferkit.errors import DataError


@dataclass(frozen=True)
class Modality:
    kind: str
    decode: Callable[[Any], Any]  # one raw input -> what the backbone's transform reads
    hash_items: Callable[[Any, Iterable[Any]], None]  # a list of raw inputs -> into a hashlib object
    check: Callable[[str, Any], None] = lambda domain, inputs: None  # refuse unusable inputs, naming the dataset
    batched: bool = False  # its transform runs on whole batches (a tokenizer): precompute in batches
    channels_last: bool = False  # (N, C, H, W) batches: channels-last memory is faster for CPU convolutions
    # the (N, D) matrix to measure a domain gap on without a backbone; None: the raw inputs are not vectors
    raw_features: Callable[[Any], np.ndarray] | None = None


_MODALITIES: dict[str, Modality] = {}


def register_modality(record: Modality) -> None:
    if record.kind in _MODALITIES:
        raise ValueError(f"modality {record.kind!r} is registered already")
    _MODALITIES[record.kind] = record


def modality(kind: str) -> Modality:
    try:
        return _MODALITIES[kind]
    except KeyError:
        raise DataError(f"unknown input kind {kind!r}; known: {', '.join(sorted(_MODALITIES))}") from None


def _hash_files(h: Any, paths: Iterable[Any]) -> None:
    """Files by the SHA-256 of their bytes (:mod:`transferkit.content_digest`), never by path, size or time: this is
    the key of the feature and twin caches, and a file rewritten in place (same name, size and second) must not
    serve the old file's features. Each file is read once per process (then remembered by its identity); a few
    thousand small images cost about what decoding them once costs."""
    for p in paths:
        try:
            digest = file_digest(p)
        except DigestError as exc:
            raise DataError(f"cannot hash the dataset's files: {exc}; was it changed while transferkit ran?") from None
        h.update(digest.encode())
        h.update(b"\0")


def _hash_strings(h: Any, texts: Iterable[Any]) -> None:
    for text in texts:
        h.update(str(text).encode("utf-8", "surrogatepass"))
        h.update(b"\0")


def _check_vectors(domain: str, inputs: Any) -> None:
    if not isinstance(inputs, np.ndarray):
        return
    if inputs.ndim != 2:
        raise DataError(f"dataset {domain!r}: feature vectors must be 2-D (N, D), got {inputs.shape}")
    if not np.isfinite(inputs).all():
        raise DataError(f"dataset {domain!r}: feature vectors contain NaN or Inf")


def _vector_matrix(dataset: Any) -> np.ndarray:
    return np.asarray(dataset.inputs, np.float32)


def _pixel_matrix(dataset: Any) -> np.ndarray:
    """Flattened pixels in [0, 1]: comparable only between domains of one image size (a backbone resizes)."""
    first = dataset[0]["x"]
    out = np.empty((len(dataset), first.numel()), np.float32)
    for i in range(len(dataset)):
        x = dataset[i]["x"]
        if x.shape != first.shape:
            raise DataError(
                f"{dataset.domain!r} holds images of different sizes ({tuple(first.shape)} and {tuple(x.shape)}): "
                "give a backbone to measure on its features"
            )
        out[i] = x.reshape(-1).numpy()
    return out


def _decode_image(raw: Any) -> Any:
    return open_image(Path(raw)) if isinstance(raw, (str, Path)) else array_to_pil(np.asarray(raw))


def _decode_audio(raw: Any) -> Any:
    return read_audio(Path(raw))


register_modality(Modality("image", _decode_image, _hash_files, channels_last=True, raw_features=_pixel_matrix))
register_modality(Modality("vector", lambda raw: torch.as_tensor(np.asarray(raw, dtype=np.float32)), _hash_files,
                           check=_check_vectors, raw_features=_vector_matrix))
register_modality(Modality("text", str, _hash_strings, batched=True))
register_modality(Modality("audio", _decode_audio, _hash_files))

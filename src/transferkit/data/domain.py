"""The one dataset type every stage sees, and paired source/target iteration.

A :class:`DomainDataset` is a labelled or unlabelled sample of one domain. Its modality (its ``kind``, a record
in :mod:`transferkit.data.modality`) only decides how an item is decoded, checked and hashed; after the
backbone's transform every item is a tensor, so the engine and all methods stay modality-free.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import torch

from transferkit.data.modality import modality
from transferkit.data.pixels import image_as_rgb as image_as_rgb  # re-exported (image loaders, tests)
from transferkit.data.pixels import to_uint8 as to_uint8
from transferkit.errors import DataError
from transferkit.ui import console

Kind = Literal["image", "vector", "text", "audio"]
UNLABELLED = -1


class Batch(dict):
    """A batch that :meth:`DomainDataset.__getitems__` assembled already (``x``, ``y``, ``index``):
    :func:`collate` passes it through."""


def collate(items: list[dict[str, Any]] | Batch) -> dict[str, Any]:
    """torch's default collation, except for a :class:`Batch`, which is one already."""
    if isinstance(items, Batch):
        return dict(items)
    return torch.utils.data.default_collate(items)


@dataclass(eq=False)
class DomainDataset(torch.utils.data.Dataset):
    """Inputs, labels (or None) and the name of the domain they come from.

    Args:
        inputs: an array of images ``(N, H, W)`` / ``(N, H, W, C)`` (uint8 or float in [0, 1]), an array
            of feature vectors ``(N, D)``, a sequence of image or audio file paths, or a sequence of texts.
        labels: integer class indices ``(N,)`` or None for an unlabelled domain.
        domain: a name for reports ("mnist", "amazon/books").
        classes: class names; index ``i`` of ``classes`` is label ``i``.
        kind: ``"image"``, ``"vector"``, ``"text"`` or ``"audio"``.
        transform: turns one decoded item (a PIL image, or a float tensor for vectors) into a tensor;
            usually the backbone's preprocessing.

    Items are dicts ``{"x": tensor, "y": int, "index": int}`` (plus ``"t"``, the ``emit`` fields) with ``y = -1``
    when unlabelled, so the default collate function batches them and unlabelled data needs no special case.

    Example:
        >>> import numpy as np
        >>> ds = DomainDataset(np.zeros((4, 3), np.float32), np.array([0, 1, 0, 1]), "toy", ["a", "b"], "vector")
        >>> ds[1]["y"], len(ds.per_class(1, seed=0))
        (1, 2)
    """

    inputs: Any
    labels: np.ndarray | None
    domain: str
    classes: list[str]
    kind: Kind = "image"
    transform: Callable[[Any], torch.Tensor] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    cache: torch.Tensor | None = field(default=None, repr=False)
    # (the dataset this one was cut from, the indices into it): lets a feature cache extract the whole dataset
    # once and serve every split and seed's subset of it from that one file
    origin: tuple[DomainDataset, np.ndarray] | None = field(default=None, repr=False)
    # per-item arrays of ``meta`` that items carry in ``item["t"]`` (extra heads' targets, a source's index)
    emit: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        n = len(self.inputs)
        if n == 0:
            raise DataError(f"dataset {self.domain!r} is empty")
        if self.labels is not None:
            labels = np.asarray(self.labels)
            if labels.shape != (n,):
                raise DataError(
                    f"dataset {self.domain!r}: {labels.shape[0] if labels.ndim else 0} labels for {n} inputs"
                )
            if not np.issubdtype(labels.dtype, np.integer):
                raise DataError(f"dataset {self.domain!r}: labels must be integers, got {labels.dtype}")
            if labels.min() < 0 or labels.max() >= len(self.classes):
                raise DataError(
                    f"dataset {self.domain!r}: labels must lie in [0, {len(self.classes) - 1}] "
                    f"({len(self.classes)} classes), found {labels.min()}..{labels.max()}"
                )
            self.labels = labels.astype(np.int64)
        modality(self.kind).check(self.domain, self.inputs)

    # -- torch Dataset -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.inputs)

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]] | Batch:
        """A whole batch at once (torch's DataLoader calls this when it exists): from the preprocessed cache, one
        indexing of a tensor instead of a dict per item and a stack (measured: about 1 ms of a 12 ms LeNet step
        of 64 digits on 2 cores); any other dataset item by item, as ``__getitem__``."""
        if self.cache is None or self.emit:
            return [self[i] for i in indices]
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        y = (torch.as_tensor(self.labels[idx.numpy()], dtype=torch.long) if self.labels is not None
             else torch.full((len(idx),), UNLABELLED, dtype=torch.long))
        return Batch(x=self.cache[idx], y=y, index=idx)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self.cache is not None:
            x = self.cache[index]
        else:
            item = self.decode(index)
            x = self.transform(item) if self.transform is not None else _default_to_tensor(item)
        y = int(self.labels[index]) if self.labels is not None else UNLABELLED
        if self.emit:
            return {"x": x, "y": y, "index": index, "t": {k: torch.as_tensor(self.meta[k][index]) for k in self.emit}}
        return {"x": x, "y": y, "index": index}

    def decode(self, index: int) -> Any:
        """The raw item: a PIL image, a float tensor (vectors), a string (text), a ``Waveform`` (audio)."""
        return modality(self.kind).decode(self.inputs[index])

    # -- views ---------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def is_labelled(self) -> bool:
        return self.labels is not None

    def with_transform(self, transform: Callable[[Any], torch.Tensor] | None) -> DomainDataset:
        return replace(self, transform=transform, cache=None)

    def precomputed(self, max_bytes: int = 2**30, progress: bool = False) -> DomainDataset:
        """The same dataset with every transformed input computed once and kept in memory.

        Training applies the same deterministic preprocessing (decode, resize, normalise) every epoch; on
        small data sets (digits, feature vectors) that costs more than the model's step, above all on a
        GPU. Use it only when the transform is deterministic. Returns ``self`` when the inputs would need
        more than ``max_bytes`` or differ in shape (nothing to stack). ``progress`` shows a bar while it works,
        so that a large dataset's first pass does not look stalled.

        Example:
            >>> import numpy as np
            >>> ds = DomainDataset(np.zeros((3, 2), np.float32), None, "toy", ["a"], "vector").precomputed()
            >>> tuple(ds.cache.shape), tuple(ds[2]["x"].shape)
            ((3, 2), (2,))
        """
        if self.cache is not None or max_bytes <= 0:
            return self
        batch = getattr(self.transform, "batch", None)
        if batch is not None and modality(self.kind).batched:  # a tokenizer: whole batches at once are far faster
            return self._precomputed_in_batches(batch, max_bytes)
        first = self[0]["x"]
        if not isinstance(first, torch.Tensor) or first.element_size() * first.numel() * len(self) > max_bytes:
            return self
        cache = torch.empty((len(self), *first.shape), dtype=first.dtype)
        cache[0] = first
        items: Any = range(1, len(self))
        if progress:
            from rich.progress import track

            items = track(items, description=f"preprocess {self.domain}", transient=True, console=console)
        for i in items:
            x = self[i]["x"]
            if x.shape != first.shape:
                return self
            cache[i] = x
        return replace(self, cache=cache)

    def _precomputed_in_batches(self, batch: Callable[[list[Any]], torch.Tensor], max_bytes: int,
                                chunk: int = 1024) -> DomainDataset:
        parts = [batch([self.decode(i) for i in range(s, min(s + chunk, len(self)))])
                 for s in range(0, len(self), chunk)]
        cache = torch.cat(parts)
        if cache.element_size() * cache.numel() > max_bytes:
            return self
        return replace(self, cache=cache)

    def unlabelled(self) -> DomainDataset:
        """The same inputs without labels, any head's targets or any other per-item field (a star rating, a speaker):
        what an adaptation method may see of a target."""
        n = len(self)
        meta = {k: v for k, v in self.meta.items()
                if not k.startswith("task:") and not (isinstance(v, np.ndarray) and v.shape[:1] == (n,))}
        return replace(self, labels=None, meta=meta, emit=())

    def subset(self, indices: Sequence[int] | np.ndarray) -> DomainDataset:
        idx = np.asarray(indices, dtype=np.int64)
        inputs = self.inputs[idx] if isinstance(self.inputs, np.ndarray) else [self.inputs[i] for i in idx]
        labels = None if self.labels is None else self.labels[idx]
        cache = None if self.cache is None else self.cache[torch.from_numpy(idx)]
        n = len(self)
        # per-item side arrays (a text table's star ratings) follow their items
        meta = {k: v[idx] if isinstance(v, np.ndarray) and v.shape[:1] == (n,) else v for k, v in self.meta.items()}
        root, base = self.origin if self.origin is not None else (self, np.arange(n))
        return replace(self, inputs=inputs, labels=labels, cache=cache, meta=meta, origin=(root, base[idx]))

    def split(self, fraction: float, seed: int = 0) -> tuple[DomainDataset, DomainDataset]:
        """Split into (rest, held-out) with ``fraction`` held out, stratified by label when labelled."""
        if not 0.0 < fraction < 1.0:
            raise DataError(f"split fraction must be in (0, 1), got {fraction}")
        n = len(self)
        rng = np.random.default_rng(seed)
        if self.labels is None:
            perm = rng.permutation(n)
            k = max(1, round(n * fraction))
            held, rest = perm[:k], perm[k:]
        else:
            held_parts, rest_parts = [], []
            for c in np.unique(self.labels):
                members = rng.permutation(np.flatnonzero(self.labels == c))
                k = round(len(members) * fraction)
                if len(members) > 1:
                    k = min(max(k, 1), len(members) - 1)
                held_parts.append(members[:k])
                rest_parts.append(members[k:])
            held, rest = np.concatenate(held_parts), np.concatenate(rest_parts)
        if len(rest) == 0 or len(held) == 0:
            raise DataError(f"dataset {self.domain!r} ({n} items) is too small to split off {fraction:.0%}")
        return self.subset(np.sort(rest)), self.subset(np.sort(held))

    def per_class(self, k: int, seed: int = 0) -> DomainDataset:
        """``k`` labelled items of every class, chosen reproducibly by ``seed`` (few-shot training sets)."""
        return self.subset(self.per_class_indices(k, seed))

    def per_class_indices(self, k: int, seed: int = 0) -> np.ndarray:
        """The sorted indices :meth:`per_class` picks (the rest of the set is what they were not)."""
        if self.labels is None:
            raise DataError(f"dataset {self.domain!r} is unlabelled; cannot pick {k} items per class")
        if k < 1:
            raise DataError(f"items per class must be >= 1, got {k}")
        rng = np.random.default_rng(seed)
        chosen = []
        for c in range(self.num_classes):
            members = np.flatnonzero(self.labels == c)
            if len(members) < k:
                raise DataError(
                    f"dataset {self.domain!r}: class {self.classes[c]!r} has {len(members)} items, fewer than {k}"
                )
            chosen.append(rng.choice(members, size=k, replace=False))
        return np.sort(np.concatenate(chosen))

    def class_counts(self) -> dict[str, int]:
        if self.labels is None:
            return {}
        counts = np.bincount(self.labels, minlength=self.num_classes)
        return {name: int(c) for name, c in zip(self.classes, counts, strict=True)}

    def fingerprint(self) -> str:
        """A content hash of the inputs and labels: the key of feature caches."""
        import hashlib

        h = hashlib.sha256()
        h.update(self.domain.encode())
        h.update(self.kind.encode())
        if isinstance(self.inputs, np.ndarray):
            h.update(str(self.inputs.shape).encode() + str(self.inputs.dtype).encode())
            h.update(np.ascontiguousarray(self.inputs).data)  # the buffer, not a copy (.tobytes() doubled memory)
        else:  # a list: strings (text) or file paths, each modality hashes its own
            modality(self.kind).hash_items(h, self.inputs)
        if self.labels is not None:
            h.update(np.ascontiguousarray(self.labels).data)
        return h.hexdigest()[:16]


def bad_files_error(bad: list[tuple[str, str]], total: int, what: str, hint: str, most: int = 10) -> DataError:
    """One error listing every unusable file (the first ``most``, then a count), so a user fixes them in one go."""
    listed = "\n".join(f"  {p}: {why}" for p, why in bad[:most])
    more = f"\n  ... and {len(bad) - most} more" if len(bad) > most else ""
    return DataError(f"{len(bad)} of {total} {what}:\n{listed}{more}\n{hint}")


def check_label_sets(source: DomainDataset, target: DomainDataset) -> None:
    """Refuse a target whose class names differ from the source's: a head cannot predict unseen classes."""
    if source.classes != target.classes:
        missing = [c for c in target.classes if c not in source.classes]
        extra = [c for c in source.classes if c not in target.classes]
        hint = []
        if missing:
            hint.append(f"target classes missing from the source: {missing[:10]}")
        if extra:
            hint.append(f"source classes missing from the target: {extra[:10]}")
        if not hint:
            hint.append("same classes in a different order")
        raise DataError(
            f"label sets of source {source.domain!r} and target {target.domain!r} do not match ("
            + "; ".join(hint)
            + "); give both domains the same class folders / label names"
        )


MAX_CLASS_ID = 2**63 - 1  # class ids become int64 indices
MAX_EXACT_FLOAT = 2**53  # past it a float is no exact whole number: 1e30 stands for a range of integers, not one


def numeric_labels(values: np.ndarray, where: str) -> np.ndarray:
    """Numeric labels (bool, integer or float arrays) as int64, checked as values *before* the cast.

    A cast alone wraps: uint64 ``2**63 + 1`` and float ``1e30`` both became ``-9223372036854775808``, a phantom
    class. So a float label must be finite, whole and at most :data:`MAX_EXACT_FLOAT` in size, and an integer one
    fit int64; anything else is refused naming ``where`` and the value as written. Negative labels pass: each
    caller has its own rule for them (svmlight's -1/+1).

    Raises:
        DataError: a value that is no exact class id, or a dtype that holds no numbers.
    """
    a = np.asarray(values)
    if a.dtype.kind == "u" and a.size and int(a.max()) > MAX_CLASS_ID:
        raise label_range_error(where, int(a.max()))
    if a.dtype.kind in "biu":
        return a.astype(np.int64)
    if a.dtype.kind != "f":
        raise DataError(f"{where}: labels must be integers or strings, got dtype {a.dtype}")
    finite = np.isfinite(a)
    if not finite.all():
        raise DataError(f"{where}: label {float(a[~finite][0])!r} is not a number; label every item with a class")
    whole = a == np.round(a)
    if not whole.all():
        raise DataError(
            f"{where}: labels must be integers or strings; {float(a[~whole][0])!r} is not a whole number "
            "(regression targets are not class labels)"
        )
    big = np.abs(a) > MAX_EXACT_FLOAT
    if big.any():
        raise label_range_error(where, float(a[big][0]))
    return a.astype(np.int64)


def label_range_error(where: str, value: float) -> DataError:
    """The error for a number too large to be one class id, showing it as written (``1e+30``, not ``-2**63``)."""
    shown = repr(value) if isinstance(value, float) else str(value)
    return DataError(
        f"{where}: label {shown} is too large to be a class id (integer labels must lie in 0..2**63-1, and a float "
        "is an exact whole number only up to 2**53); fix the label, or write the labels as names (strings)"
    )


_CANONICAL_INT = re.compile(r"(?:0|-?[1-9][0-9]*)")


def canonical_int(text: str) -> int | None:
    """The integer a text label spells in its one canonical form (ASCII digits, no sign but ``-``, no leading zero,
    no ``_``), else None. Python's ``int()`` also reads ``"01"``, ``"+1"``, ``"1_0"`` and ``"٣"``: two spellings
    of one number would be one class in one loader and two in another, and a lookup by the raw text would miss."""
    return int(text) if _CANONICAL_INT.fullmatch(text) else None


def integer_classes(labels: Sequence[int] | np.ndarray, where: str) -> list[str]:
    """Class names for non-negative integer labels: the values that occur, in numeric order (``"0".."9"``; labels
    1..10 give ``"1".."10"``, not an empty class ``"0"``). Label ``v`` is class ``classes.index(str(v))``.

    One stray value (``2024`` among 0/1: a year, an id, a typo) would make a head of classes that barely occur, or
    (counting 0..max) a 2,025-class head that trains without complaint and scores 0: where most of the range
    ``0..max`` never occurs, the labels are refused, naming ``where`` and the largest values. A few gaps are fine.
    """
    if not isinstance(labels, np.ndarray):  # Python integers (parsed text) have no upper bound: check before the cast
        outside = next((v for v in labels if not -MAX_CLASS_ID - 1 <= v <= MAX_CLASS_ID), None)
        if outside is not None:
            raise label_range_error(where, outside)
    values, counts = np.unique(np.asarray(labels, dtype=np.int64), return_counts=True)
    if not len(values):
        return []
    n = int(values[-1]) + 1
    empty = n - len(values)
    if empty >= MIN_EMPTY_CLASSES_REFUSED and empty > len(values):
        largest = ", ".join(f"{v} ({c:,} item{'s' if c != 1 else ''})"
                            for v, c in reversed(list(zip(values.tolist(), counts.tolist(), strict=True))[-3:]))
        raise DataError(
            f"{where}: integer labels make classes 0..{n - 1}, but only {len(values)} of those {n:,} occur (largest: "
            f"{largest}); a head with {empty:,} classes that never occur is almost surely a stray label. Fix it, or "
            "write the labels as names (strings) if these ids are meant"
        )
    return [str(v) for v in values.tolist()]


def integer_positions(labels: Sequence[int] | np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """Integer labels as indices into ``classes`` (made by :func:`integer_classes`)."""
    values = np.asarray([int(c) for c in classes], dtype=np.int64)
    return np.searchsorted(values, np.asarray(labels, dtype=np.int64)).astype(np.int64)


MIN_EMPTY_CLASSES_REFUSED = 10


def _default_to_tensor(item: Any) -> torch.Tensor:
    if isinstance(item, torch.Tensor):
        return item
    arr = np.asarray(item, dtype=np.float32) / 255.0
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(arr))


class PairedLoader:
    """Iterate source and target loaders together; the shorter side cycles (reshuffled each pass).

    One epoch lasts as long as the longer of source and target, so every item of both domains is seen at least
    once -- or ``length`` steps where that is longer (a small source is passed over several times per epoch, see
    :mod:`transferkit.train.budget`). ``labelled`` (a few labelled target items, for joint or semi-supervised
    training) always cycles and never sets the epoch's length. Each step yields ``(source_batch, target_batch,
    labelled_batch)``; absent loaders give None.
    """

    def __init__(self, source: Any, target: Any | None = None, labelled: Any | None = None,
                 length: int | None = None) -> None:
        self.source = source
        self.target = target
        self.labelled = labelled
        self.length = length

    def __len__(self) -> int:
        natural = len(self.source) if self.target is None else max(len(self.source), len(self.target))
        return max(natural, self.length or 0)

    def __iter__(self) -> Iterator[tuple[Any, Any | None, Any | None]]:
        return self.iterate(0)

    def iterate(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[Any, Any | None, Any | None]]:
        """The steps from ``start`` to ``stop`` (default: the epoch's length). Resuming mid-epoch, the loaders'
        samplers are already positioned at ``start`` (they skip what was seen), so only the number of remaining
        steps is decided here."""
        few = _cycle(self.labelled) if self.labelled is not None else None
        stop = len(self) if stop is None else stop

        def labelled() -> Any | None:
            return next(few) if few is not None else None

        src_it = _cycle(self.source)
        tgt_it = _cycle(self.target) if self.target is not None else None
        for _ in range(stop - start):
            yield next(src_it), next(tgt_it) if tgt_it is not None else None, labelled()


def _cycle(loader: Any) -> Iterator[Any]:
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise DataError("a data loader produced no batches (is the dataset smaller than one batch with drop_last?)")

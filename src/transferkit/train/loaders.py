"""The loaders one fit trains with: a shuffle that depends only on (seed, epoch, pass), so a resume replays the
same order and can start mid-epoch, and datasets given the backbone's preprocessing (cached in memory)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from transferkit.data.domain import UNLABELLED, DomainDataset, collate

# The most of one dataset's preprocessed inputs kept in a GPU's memory for indexing there (MNIST's 60,000 28x28
# digits take 188 MB); a larger one is fed from host memory batch by batch.
MAX_RESIDENT_GPU_BYTES = 256 * 2**20


class EpochSampler(torch.utils.data.Sampler[int]):
    """A shuffle that depends only on (seed, epoch, pass): resuming at an epoch replays the same order.

    The engine sets the epoch with :meth:`start_epoch`, on purpose not named ``set_epoch``: Accelerate's
    DataLoaderShard calls ``sampler.set_epoch(<its own count of finished iterations>)`` at every ``__iter__``,
    which would replay epoch 0's order after a resume and never reshuffle a loader that is cycled or left
    before its end (the source loader when a target is given).
    """

    def __init__(self, n: int, seed: int, shuffle: bool = True) -> None:
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.epoch, self.passes, self.skip = 0, 0, 0

    def start_epoch(self, epoch: int, passes: int = 0, skip: int = 0) -> None:
        """Position the sampler: pass ``passes`` of ``epoch``, its first ``skip`` items already seen (a resume)."""
        self.epoch, self.passes, self.skip = epoch, passes, skip

    def __iter__(self) -> Iterator[int]:
        yield from self.next_pass().tolist()

    def next_pass(self) -> np.ndarray:
        """The indices of the next pass as one array (what iterating yields one by one)."""
        skip, self.skip = self.skip, 0  # only the pass a resume lands in is partial
        if not self.shuffle:
            return np.arange(skip, self.n)
        rng = np.random.default_rng([self.seed, self.epoch, self.passes])
        self.passes += 1
        return rng.permutation(self.n)[skip:]

    def __len__(self) -> int:
        return self.n


def _drops_last(n: int, batch_size: int, shuffle: bool) -> bool:
    """A last batch of one item breaks BatchNorm in training mode: drop it (only ever that one item)."""
    return shuffle and n > batch_size and n % batch_size == 1


def make_loader(ds: DomainDataset, batch_size: int, *, shuffle: bool, seed: int, num_workers: int) -> Any:
    sampler = EpochSampler(len(ds), seed, shuffle)
    drop_last = _drops_last(len(ds), batch_size, shuffle)
    return torch.utils.data.DataLoader(
        ds,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=drop_last,
        collate_fn=collate,
        persistent_workers=num_workers > 0,
        # Its own generator: every new iterator draws a worker base seed, which must not come from (and shift)
        # the global RNG that dropout and the losses use, or a mid-epoch resume would not replay them exactly.
        generator=torch.Generator().manual_seed(seed),
    )


class ResidentBatches:
    """Batches of a preprocessed dataset that lives where the model trains: each batch is one indexing there.

    Why not a DataLoader: on a GPU, its per-batch copy from host memory is a blocking copy that makes the host wait
    until the device has finished the previous step, and for a small model that wait, the per-item Python and the
    collation are most of the step. The order comes from the same :class:`EpochSampler` as :func:`make_loader`'s
    (and the same last-batch rule), so both give the same batches, and a resume positions it the same way.
    """

    def __init__(self, ds: DomainDataset, batch_size: int, *, shuffle: bool, seed: int,
                 device: torch.device) -> None:
        if not isinstance(ds.cache, torch.Tensor) or ds.emit:
            raise ValueError(f"dataset {ds.domain!r} has no preprocessed inputs to keep on {device}")
        self.sampler = EpochSampler(len(ds), seed, shuffle)
        self.batch_size = batch_size
        self.drop_last = _drops_last(len(ds), batch_size, shuffle)
        self.x = ds.cache.to(device)
        labels = (torch.as_tensor(ds.labels, dtype=torch.long) if ds.labels is not None
                  else torch.full((len(ds),), UNLABELLED, dtype=torch.long))
        self.y = labels.to(device)
        self.device = device

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        order = torch.from_numpy(self.sampler.next_pass().astype(np.int64))  # what is left after a resume
        stop = len(order) - len(order) % self.batch_size if self.drop_last else len(order)
        if self.device.type == "cuda":  # pinned and asynchronous: the host does not wait for the GPU's queue
            order = order.pin_memory().to(self.device, non_blocking=True)
        elif self.device.type != "cpu":
            order = order.to(self.device)
        for start in range(0, stop, self.batch_size):
            idx = order[start:start + self.batch_size]
            yield {"x": self.x[idx], "y": self.y[idx], "index": idx}


def resident_loader(ds: DomainDataset, batch_size: int, *, shuffle: bool, seed: int,
                    device: torch.device) -> ResidentBatches | None:
    """A :class:`ResidentBatches` where the dataset's preprocessed inputs can live on ``device`` (on a CPU they are
    there already; on a GPU up to ``MAX_RESIDENT_GPU_BYTES``), else None (use :func:`make_loader`)."""
    cache = ds.cache
    if not isinstance(cache, torch.Tensor) or ds.emit:
        return None
    if device.type != "cpu" and cache.element_size() * cache.numel() > MAX_RESIDENT_GPU_BYTES:
        return None
    return ResidentBatches(ds, batch_size, shuffle=shuffle, seed=seed, device=device)


def with_model_transform(
    ds: DomainDataset | None, model: nn.Module, cache_bytes: int, progress: bool = False
) -> DomainDataset | None:
    """The backbone's preprocessing, computed once when it fits in ``cache_bytes``.

    Only the model's own transform is cached: it is deterministic (evaluation preprocessing), whereas a
    transform the caller set may draw random augmentations that must differ from epoch to epoch.
    """
    transform = getattr(model, "transform", None)
    if ds is None or ds.transform is not None:
        return ds
    if transform is not None:
        ds = ds.with_transform(transform)
    return ds.precomputed(cache_bytes, progress=progress)


def sampler_of(loader: Any) -> EpochSampler | None:
    """The loader's EpochSampler, also inside Accelerate's wrappers (a BatchSamplerShard around the BatchSampler
    under `accelerate launch`)."""
    for path in (("sampler",), ("batch_sampler", "sampler"), ("batch_sampler", "batch_sampler", "sampler")):
        obj = loader
        for name in path:
            obj = getattr(obj, name, None)
        if isinstance(obj, EpochSampler):
            return obj
    return None


def position_loader(loader: Any, epoch: int, step: int, num_processes: int = 1) -> None:
    """Point ``loader`` at step ``step`` of ``epoch``: the passes it has completed (a cycled loader) and the items
    already taken from the current one. Each step takes ``batch_size`` items per process."""
    sampler = sampler_of(loader)
    if sampler is None:
        return
    steps = max(1, len(loader))
    per_step = int(getattr(loader, "batch_size", None) or getattr(loader.batch_sampler, "batch_size", None) or 1)
    sampler.start_epoch(epoch, passes=step // steps, skip=(step % steps) * per_step * num_processes)

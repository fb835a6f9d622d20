"""The loaders one fit trains with: a shuffle that depends only on (seed, epoch, pass), so a resume replays the
same order and can start mid-epoch, and datasets given the backbone's preprocessing (cached in memory)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from transferkit.data.domain import DomainDataset, collate


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
        skip, self.skip = self.skip, 0  # only the pass a resume lands in is partial
        if not self.shuffle:
            yield from range(skip, self.n)
            return
        rng = np.random.default_rng([self.seed, self.epoch, self.passes])
        self.passes += 1
        yield from rng.permutation(self.n)[skip:].tolist()

    def __len__(self) -> int:
        return self.n


def make_loader(ds: DomainDataset, batch_size: int, *, shuffle: bool, seed: int, num_workers: int) -> Any:
    sampler = EpochSampler(len(ds), seed, shuffle)
    # A last batch of one item breaks BatchNorm in training mode: drop it (only ever that one item).
    drop_last = shuffle and len(ds) > batch_size and len(ds) % batch_size == 1
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

"""ResidentBatches (a preprocessed dataset indexed where the model trains) against torch's DataLoader path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from transferkit.config import TrainConfig
from transferkit.data.domain import UNLABELLED, DomainDataset
from transferkit.models.backbones import create_backbone
from transferkit.models.heads import TransferModel
from transferkit.runs import RunDir
from transferkit.train import engine as engine_module
from transferkit.train.engine import Engine
from transferkit.train.loaders import ResidentBatches, make_loader, position_loader, resident_loader

CPU = torch.device("cpu")


def _ds(n: int, labelled: bool = True) -> DomainDataset:
    x = np.random.default_rng(n).normal(size=(n, 3)).astype(np.float32)
    ds = DomainDataset(x, np.arange(n) % 2 if labelled else None, f"d{n}", ["a", "b"], "vector")
    return ds.precomputed()


def _batches(loader: Any) -> list[tuple[list[float], list[int], list[int]]]:
    return [(b["x"][:, 0].tolist(), b["y"].tolist(), b["index"].tolist()) for b in loader]


@pytest.mark.parametrize(("n", "batch", "shuffle"), [(20, 8, True), (17, 8, True), (17, 8, False), (5, 8, True)],
                         ids=["ragged", "drops-one-item", "in-order", "smaller-than-a-batch"])
def test_resident_batches_are_the_dataloaders_batches(n: int, batch: int, shuffle: bool) -> None:
    ds = _ds(n)
    plain = make_loader(ds, batch, shuffle=shuffle, seed=3, num_workers=0)
    resident = ResidentBatches(ds, batch, shuffle=shuffle, seed=3, device=CPU)
    assert len(resident) == len(plain)
    for epoch in (0, 1):  # a new order each epoch and each pass (a cycled loader), the same for both
        for loader in (plain, resident):
            position_loader(loader, epoch, 0)
        assert _batches(resident) == _batches(plain)
        assert _batches(resident) == _batches(plain)  # the second pass of the epoch
    # a resume lands mid-pass: both skip what the epoch already saw
    for loader in (plain, resident):
        position_loader(loader, 1, 1)
    assert _batches(resident) == _batches(plain)


def test_unlabelled_items_are_marked() -> None:
    batch = next(iter(ResidentBatches(_ds(6, labelled=False), 4, shuffle=False, seed=0, device=CPU)))
    assert batch["y"].tolist() == [UNLABELLED] * 4


def test_what_stays_on_the_dataloader_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inputs not preprocessed, items that carry more than inputs and labels (a source index), and inputs larger than
    an accelerator may hold take the DataLoader; preprocessed inputs within the limit are indexed on the device."""
    raw = DomainDataset(np.zeros((4, 3), np.float32), None, "raw", ["a"], "vector")
    assert resident_loader(raw, 2, shuffle=True, seed=0, device=CPU) is None  # nothing preprocessed
    with pytest.raises(ValueError, match="no preprocessed inputs"):
        ResidentBatches(raw, 2, shuffle=True, seed=0, device=CPU)
    emitting = DomainDataset(np.zeros((4, 3), np.float32), np.arange(4) % 2, "two-sources", ["a", "b"], "vector",
                             meta={"source_index": np.array([0, 0, 1, 1])}, emit=("source_index",)).precomputed()
    assert emitting.cache is not None and resident_loader(emitting, 2, shuffle=True, seed=0, device=CPU) is None
    with pytest.raises(ValueError, match="no preprocessed inputs"):
        ResidentBatches(emitting, 2, shuffle=True, seed=0, device=CPU)  # its batches would lose "t"
    big = _ds(8)  # 8 x 3 float32: 96 bytes
    assert isinstance(resident_loader(big, 2, shuffle=True, seed=0, device=CPU), ResidentBatches)
    monkeypatch.setattr("transferkit.train.loaders.MAX_RESIDENT_GPU_BYTES", 8)
    assert resident_loader(big, 2, shuffle=True, seed=0, device=torch.device("cuda")) is None  # too large for it
    # the limit itself, on a device that needs no accelerator ("meta": shapes only): 96 bytes fit, 95 do not
    meta = torch.device("meta")
    monkeypatch.setattr("transferkit.train.loaders.MAX_RESIDENT_GPU_BYTES", 96)
    fits = resident_loader(big, 2, shuffle=True, seed=0, device=meta)
    assert isinstance(fits, ResidentBatches) and fits.x.device == meta
    monkeypatch.setattr("transferkit.train.loaders.MAX_RESIDENT_GPU_BYTES", 95)
    assert resident_loader(big, 2, shuffle=True, seed=0, device=meta) is None


def test_training_on_resident_batches_is_bit_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine's resident path trains exactly what its DataLoader path does (one CPU thread, same seed)."""

    made: list[Any] = []

    def spy(*args: Any, **kwargs: Any) -> Any:
        made.append(resident_loader(*args, **kwargs))
        return made[-1]

    def fit(resident: bool) -> dict[str, torch.Tensor]:
        monkeypatch.setattr(engine_module, "resident_loader", spy if resident else lambda *a, **k: None)
        torch.manual_seed(0)
        model = TransferModel(create_backbone("mlp", in_features=3, hidden=8, depth=1, dropout=0.1), ["a", "b"])
        cfg = TrainConfig(epochs=2, lr=0.01, device="cpu", scheduler="cosine", checkpoint_every_steps=2)
        Engine(model, cfg, batch_size=8, progress=False, run=RunDir(tmp_path / str(resident))).fit(
            _ds(44), _ds(16), target=_ds(20, labelled=False))
        monkeypatch.undo()
        return {k: v.clone() for k, v in model.state_dict().items()}

    a, b = fit(True), fit(False)
    assert len(made) == 3 and all(isinstance(m, ResidentBatches) for m in made)  # train, target, validation
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

"""Adaptation methods against source-only on a fixed, seeded synthetic shift: two moons rotated by 30°.

The methods listed here beat source-only by a clear margin on this shift (a regression guard: the MDD sign
error was caught this way). coral, mcc, cdan+e, entropy, afn and self-training do not on this particular shift
(see the issue 3 notes); they are not asserted here rather than being tuned until they pass.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import make_moons

from transferkit.adapt.methods import build_method
from transferkit.config import TrainConfig
from transferkit.data.domain import DomainDataset
from transferkit.evaluate.predict import score
from transferkit.models.backbones import create_backbone
from transferkit.models.heads import TransferModel
from transferkit.train.engine import Engine, source_cross_entropy

CLASSES = ["a", "b"]


def _data() -> tuple[DomainDataset, DomainDataset, DomainDataset]:
    xs, ys = make_moons(600, noise=0.1, random_state=0)
    xt, yt = make_moons(600, noise=0.1, random_state=1)
    t = np.deg2rad(30.0)
    xt = xt @ np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]).T
    src = DomainDataset(xs.astype(np.float32), ys, "moons", CLASSES, "vector")
    tgt = DomainDataset(xt.astype(np.float32), None, "moons-30", CLASSES, "vector")
    return src, tgt, DomainDataset(xt.astype(np.float32), yt, "moons-30", CLASSES, "vector")


def _target_accuracy(method: str) -> float:
    src, tgt, tgt_labelled = _data()
    torch.manual_seed(0)
    model = TransferModel(create_backbone("mlp", in_features=2, hidden=64, depth=2, dropout=0.0), CLASSES)
    options = {"hidden": 64} if method in ("dann", "cdan", "mdd") else None
    terms = [source_cross_entropy(), *build_method(method, model.feature_dim, 2, options=options)]
    cfg = TrainConfig(epochs=100, lr=3e-3, scheduler="constant", device="cpu")
    Engine(model, cfg, loss_terms=terms, batch_size=64, seed=0, progress=False).fit(
        src, target=None if method == "none" else tgt
    )
    return score(model, tgt_labelled, device="cpu")["accuracy"]


@pytest.fixture(scope="module")
def source_only() -> float:
    return _target_accuracy("none")


@pytest.mark.parametrize("method", ["dan", "jan", "dann", "cdan", "mdd", "bnm"])
def test_method_beats_source_only(method: str, source_only: float) -> None:
    assert source_only < 0.8  # the shift is real
    assert _target_accuracy(method) > source_only + 0.1

"""Adaptation methods against source-only on a fixed, seeded synthetic shift: two moons rotated by 30°.

The methods listed here beat source-only by a clear margin on this shift. entropy minimisation and MCC rely on
the cluster assumption, so they are checked on a shift built for it: two Gaussian classes moved along their axis.
coral, cdan+e, afn and self-training beat source-only on neither toy shift (they do on MNIST<->USPS, see
benchmarks/README.md); they are not asserted here rather than being tuned until they pass. Neither is MDD: over
seeds 0-3 it reached 0.742, 0.928, 0.707, 0.707 against source-only's 0.697, 0.700, 0.703, 0.687 (seed 0 passed
the +0.1 margin only until the random stream changed), so it only beats source-only reliably on real data; its
loss is checked against hand-computed values in test_losses.py (which is what guards against a sign error).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import make_moons

from helpers import two_blobs
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


def _target_accuracy(method: str, seed: int = 0) -> float:
    src, tgt, tgt_labelled = _data()
    torch.manual_seed(seed)
    model = TransferModel(create_backbone("mlp", in_features=2, hidden=64, depth=2, dropout=0.0), CLASSES)
    options = {"hidden": 64} if method in ("dann", "cdan", "mdd") else None
    terms = [source_cross_entropy(), *build_method(method, model.feature_dim, 2, options=options)]
    cfg = TrainConfig(epochs=100, lr=3e-3, scheduler="constant", device="cpu")
    Engine(model, cfg, loss_terms=terms, batch_size=64, seed=seed, progress=False).fit(
        src, target=None if method == "none" else tgt
    )
    return score(model, tgt_labelled, device="cpu")["accuracy"]


@pytest.fixture(scope="module")
def source_only() -> float:
    return _target_accuracy("none")


@pytest.mark.parametrize("method", ["dan", "jan", "bnm"])
def test_method_beats_source_only(method: str, source_only: float) -> None:
    assert source_only < 0.8  # the shift is real
    assert _target_accuracy(method) > source_only + 0.1


@pytest.mark.parametrize("method", ["dann", "cdan"])
def test_adversarial_method_beats_source_only_on_average(method: str) -> None:
    """The adversarial game has a bad seed now and then (seeds 0-3: DANN 0.875, 0.703, 0.805, 0.905; CDAN 0.727,
    0.928, 0.907, 0.905; source-only 0.687-0.703), and a change in the last bits of the arithmetic (a fused optimiser
    kernel) moves which seed it is: the claim is on the mean of four seeds."""
    adapted = [_target_accuracy(method, seed) for seed in range(4)]
    plain = [_target_accuracy("none", seed) for seed in range(4)]
    assert np.mean(adapted) > np.mean(plain) + 0.08, (adapted, plain)


def _blob_accuracy(method: str, weight: float | None = None) -> float:
    """Two Gaussian classes; the target is moved by 1.2 along the class axis, so the source-only boundary
    cuts through a target class while a low-density gap remains: the cluster assumption of entropy/MCC."""
    xs, ys = two_blobs(600, 0)
    xt, yt = two_blobs(600, 1, shift=(1.2, 0.0))
    torch.manual_seed(0)
    model = TransferModel(create_backbone("mlp", in_features=2, hidden=64, depth=2, dropout=0.0), CLASSES)
    terms = [source_cross_entropy(), *build_method(method, model.feature_dim, 2, weight=weight)]
    cfg = TrainConfig(epochs=150, lr=3e-3, scheduler="constant", device="cpu")
    Engine(model, cfg, loss_terms=terms, batch_size=64, seed=0, progress=False).fit(
        DomainDataset(xs, ys, "blobs", CLASSES, "vector"),
        target=None if method == "none" else DomainDataset(xt, None, "blobs+1.2", CLASSES, "vector"),
    )
    return score(model, DomainDataset(xt, yt, "blobs+1.2", CLASSES, "vector"), device="cpu")["accuracy"]


@pytest.mark.parametrize(("method", "weight", "margin"), [("entropy", 1.0, 0.05), ("mcc", None, 0.03)])
def test_cluster_methods_beat_source_only_on_a_translated_shift(method: str, weight: float | None,
                                                                 margin: float) -> None:
    source_only = _blob_accuracy("none")
    assert source_only < 0.9  # the shift is real
    assert _blob_accuracy(method, weight) > source_only + margin

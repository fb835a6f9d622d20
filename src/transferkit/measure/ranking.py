"""Rank candidate backbones for a labelled target task before fine-tuning any of them (``transferkit rank``).

Each candidate embeds the target data once (features are cached on disk, so a second ranking is quick), and
every requested transferability metric (:mod:`transferkit.measure.transferability`) scores the features
against the target labels. LEEP and NCE score a *source classifier's* predictions, so they apply only to
candidates that carry one: a model file saved by ``transferkit fit`` (``file:runs/x/model.safetensors``).

A candidate is a backbone spec, optionally with ``+pretrained`` (weights from an installed package), e.g.
``timm:tf_efficientnet_lite0+pretrained`` next to its randomly initialised twin ``timm:tf_efficientnet_lite0``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from transferkit.data.domain import DomainDataset
from transferkit.errors import DataError, ModelError
from transferkit.evaluate.predict import predict_logits
from transferkit.features import feature_matrix
from transferkit.measure.transferability import METRICS, score
from transferkit.models.backbones import backbone_for, read_metadata
from transferkit.models.heads import META_CLASSES, TransferModel


@dataclass
class RankRow:
    candidate: str
    feature_dim: int
    extract_seconds: float
    scores: dict[str, float | None] = field(default_factory=dict)  # None: the metric does not apply
    seconds: dict[str, float] = field(default_factory=dict)


def parse_candidate(text: str) -> tuple[str, bool]:
    """``"timm:x+pretrained"`` -> ``("timm:x", True)``."""
    spec = text.strip()
    if spec.endswith("+pretrained"):
        return spec[: -len("+pretrained")], True
    return spec, False


def rank_backbones(
    dataset: DomainDataset, candidates: list[str], metrics: list[str], *, device: str = "auto",
    online: bool = False, progress: bool = True, seed: int = 0, image_size: int | None = None,
) -> list[RankRow]:
    """Score every candidate with every metric; rows come back sorted by the first metric, best first.

    ``image_size`` resizes the images for every ``timm:``/``torchvision:`` candidate (their weights' own
    resolution otherwise): score at the size you will fine-tune at.

    Randomly initialised candidates draw their weights from ``seed``: the same twin on every call, so its
    cached features are reused and the ranking is reproducible.
    """
    import torch

    if dataset.labels is None:
        raise DataError(f"ranking needs target labels: {dataset.domain!r} has none")
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ModelError(f"unknown transferability metric(s) {unknown}; known: {', '.join(METRICS)}")
    if not candidates:
        raise ModelError("give at least one candidate backbone")
    rows = []
    for text in candidates:
        spec, pretrained = parse_candidate(text)
        kwargs: dict[str, Any] = {}
        if image_size is not None and spec.startswith(("timm:", "torchvision:")):
            kwargs["image_size"] = image_size
        t0 = time.perf_counter()
        torch.manual_seed(seed)
        bb = backbone_for(spec, dataset, pretrained=pretrained, online=online, **kwargs)
        feats = feature_matrix(dataset, bb, device=device, progress=progress)
        row = RankRow(text, feats.shape[1], time.perf_counter() - t0)
        probs = _source_probs(spec, dataset, device)
        for m in metrics:
            if METRICS[m].needs_source_probs and probs is None:
                row.scores[m] = None
                continue
            t1 = time.perf_counter()
            row.scores[m] = score(m, feats, dataset.labels, probs)
            row.seconds[m] = time.perf_counter() - t1
        rows.append(row)
    first = metrics[0]
    return sorted(rows, key=lambda r: -np.inf if r.scores[first] is None else r.scores[first], reverse=True)


def _source_probs(spec: str, dataset: DomainDataset, device: str) -> np.ndarray | None:
    """Softmax outputs of the candidate's own classifier, when it is a transferkit model file."""
    if not spec.startswith("file:"):
        return None

    path = spec[len("file:"):]
    if META_CLASSES not in read_metadata(path):
        return None  # a bare backbone: no classifier to take predictions from
    logits, _ = predict_logits(TransferModel.load(path), dataset, device=device)
    return logits.softmax(1).numpy()

"""The gap between two datasets, end to end: load both, embed them (raw inputs or a backbone's features), measure.

What ``transferkit measure`` runs, callable from Python with the same checks:

    >>> gap = measure_domains("digits-uci", "digits-uci", measures=["coral"], max_samples=50)
    >>> gap.features, [g.name for g in gap.gaps], round(gap.gaps[0].value, 6)
    ('raw inputs (64-d)', ['coral'], 0.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transferkit.data import load_data
from transferkit.errors import ConfigError, DataError
from transferkit.features import feature_matrix
from transferkit.measure.discrepancy import measure_gap, per_class_gap
from transferkit.models.backbones import backbone_for


@dataclass
class DomainGap:
    source: str
    target: str
    split: str
    features: str  # what was measured on: "raw inputs (64-d)" or "<backbone> features (512-d)"
    gaps: list[Any]  # measure.discrepancy.Gap, one per measure
    per_class: dict[str, float | None] | None  # MMD² per source class
    per_class_from: str | None  # where the target's classes came from: its labels or pseudo-labels

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "target": self.target, "split": self.split, "features": self.features,
                "gaps": [g.to_dict() for g in self.gaps], "per_class_mmd2": self.per_class}


def measure_domains(
    source: str, target: str, *, split: str = "train", backbone: str | None = None, weights: str | None = None,
    pretrained: bool = False, online: bool = False, measures: list[str] | None = None, max_samples: int = 1000,
    permutations: int = 500, per_class: bool = False, seed: int = 0, device: str = "auto",
) -> DomainGap:
    """Measure the gap from ``source`` to ``target`` (dataset names or paths) on ``split`` of both.

    Raises:
        ConfigError: a sample or permutation count too small to mean anything.
        DataError: raw inputs of different sizes (give a backbone), or a dataset that cannot be loaded.
    """
    if max_samples < 10 or permutations < 1:
        raise ConfigError("--max-samples must be >= 10 and --permutations >= 1")
    src, tgt = load_data(source, split), load_data(target, split)
    bb = None if backbone is None else backbone_for(backbone, src, weights=weights, pretrained=pretrained,
                                                    online=online)
    xs, xt = feature_matrix(src, bb, device=device), feature_matrix(tgt, bb, device=device)
    if bb is None and xs.shape[1] != xt.shape[1]:
        raise DataError(f"the raw inputs differ in size ({xs.shape[1]} vs {xt.shape[1]} values): give --backbone to "
                        "measure on features of one width")
    gaps = measure_gap(xs, xt, measures=measures, max_samples=max_samples, num_permutations=permutations, seed=seed)
    classes = (per_class_gap(xs, src.labels, xt, tgt.labels, classes=src.classes, seed=seed)
               if per_class and src.labels is not None else None)
    on = f"{bb.spec} features ({xs.shape[1]}-d)" if bb is not None else f"raw inputs ({xs.shape[1]}-d)"
    origin = None if classes is None else (
        "target labels" if tgt.labels is not None else "nearest source class mean (pseudo-labels)")
    return DomainGap(source, target, split, on, gaps, classes, origin)

"""Classification metrics on logits, and mean ± std over seeds.

Accuracy, macro-F1, expected calibration error and the confusion matrix come from torchmetrics; per-class
accuracy is read off the confusion matrix so that a class absent from the evaluation set reports None
(not a misleading 0).

Example:
    >>> import torch
    >>> logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0], [0.0, 2.0]])
    >>> m = classification_metrics(logits, torch.tensor([0, 1, 1, 1]), ["a", "b"])
    >>> m["accuracy"], m["per_class_accuracy"]
    (0.75, {'a': 1.0, 'b': 0.6666666666666666})
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from transferkit.tasks import classification_metrics as classification_metrics  # a task kind's metrics


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for one value), as reported over seeds."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("mean_std of no values")
    m = sum(vals) / len(vals)
    if len(vals) == 1:
        return m, 0.0
    var = sum((v - m) ** 2 for v in vals) / (len(vals) - 1)
    return m, math.sqrt(var)


def format_mean_std(values: Sequence[float], scale: float = 100.0, digits: int = 1) -> str:
    m, s = mean_std(values)
    if len(values) == 1:
        return f"{m * scale:.{digits}f}"
    return f"{m * scale:.{digits}f} ± {s * scale:.{digits}f}"

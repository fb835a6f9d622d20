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
from typing import Any

import torch

from transferkit.errors import DataError


def classification_metrics(
    logits: torch.Tensor, labels: torch.Tensor, classes: Sequence[str], *, ece_bins: int = 15
) -> dict[str, Any]:
    """Accuracy, macro-F1, ECE (``ece_bins`` equal-width bins, L1), per-class accuracy and confusion matrix.

    Rows of the confusion matrix are true classes, columns predicted classes.
    """
    labels = torch.as_tensor(labels).long()
    logits = torch.as_tensor(logits).float()
    c = len(classes)
    if logits.dim() != 2 or logits.shape[1] != c:
        raise DataError(f"logits must have shape (N, {c}), got {tuple(logits.shape)}")
    if labels.dim() != 1 or labels.shape[0] != logits.shape[0]:
        n = logits.shape[0]
        raise DataError(f"{tuple(labels.shape)} labels for {n} rows of logits; expected ({n},)")
    if labels.numel() == 0:
        raise DataError("cannot score an empty evaluation set")
    if labels.min() < 0 or labels.max() >= c:
        raise DataError(f"evaluation labels must lie in [0, {c - 1}]; unlabelled data cannot be scored")
    # torchmetrics takes ~3 s to import (it pulls in torchvision): paid when something is scored, not at start-up
    from torchmetrics.functional.classification import (
        multiclass_accuracy,
        multiclass_calibration_error,
        multiclass_confusion_matrix,
        multiclass_f1_score,
    )

    preds = logits.argmax(1)
    probs = logits.softmax(1)
    cm = multiclass_confusion_matrix(preds, labels, num_classes=c)
    support = cm.sum(1)
    per_class = {
        name: (int(cm[i, i]) / int(support[i]) if support[i] > 0 else None) for i, name in enumerate(classes)
    }
    return {
        "n": int(labels.numel()),
        "accuracy": float(multiclass_accuracy(preds, labels, num_classes=c, average="micro")),
        "macro_f1": float(multiclass_f1_score(preds, labels, num_classes=c, average="macro")),
        "ece": float(multiclass_calibration_error(probs, labels, num_classes=c, n_bins=ece_bins, norm="l1")),
        "per_class_accuracy": per_class,
        "confusion_matrix": cm.tolist(),
    }


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

"""Measure before and after: the gap between domains, transferability of models, label-free selection."""

from transferkit.measure.discrepancy import (
    Gap,
    coral_distance,
    measure_gap,
    mmd2,
    mmd_test,
    per_class_gap,
    proxy_a_distance,
    sliced_wasserstein,
    wasserstein,
)
from transferkit.measure.transferability import (
    METRICS,
    MetricSpec,
    gbc,
    hscore,
    leep,
    list_metrics,
    logme,
    nce,
    score,
    transrate,
)

__all__ = [
    "METRICS",
    "Gap",
    "MetricSpec",
    "coral_distance",
    "gbc",
    "hscore",
    "leep",
    "list_metrics",
    "logme",
    "measure_gap",
    "mmd2",
    "mmd_test",
    "nce",
    "per_class_gap",
    "proxy_a_distance",
    "score",
    "sliced_wasserstein",
    "transrate",
    "wasserstein",
]

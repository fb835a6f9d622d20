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

__all__ = [
    "Gap",
    "coral_distance",
    "measure_gap",
    "mmd2",
    "mmd_test",
    "per_class_gap",
    "proxy_a_distance",
    "sliced_wasserstein",
    "wasserstein",
]

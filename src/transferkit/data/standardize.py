"""Standardising feature vectors, per domain: each domain by its own mean and standard deviation.

Features a user brings (a frozen network's embeddings, MFCC statistics, SURF histograms) differ between domains in
their first two moments as much as in anything else, and a network trained on one domain's scale reads another's
shifted. Standardising each domain by its own statistics -- the source by the source's, the target by the
(unlabelled) target's -- is the classic, cheap first step of feature-level adaptation (no labels are used).
The defaults suite (``benchmarks/defaults.py``) measured it: +2 to +14 points for an MLP on dense features, but
-1 to -3 on the Amazon reviews' sparse word counts, whose rare words it inflates; so by default it applies only
where fewer than 90 % of the source's values are exactly zero (:func:`auto_mode`).

How it runs: the ``mlp`` backbone's first layer (``standardize`` option) subtracts the source mean and divides by
the source standard deviation (buffers saved with the model). In ``per-domain`` mode a target dataset is first
mapped onto the source's statistics (:func:`align_to`), feature by feature,
``x -> (x - mean_t) / std_t * std_s + mean_s``, so that after the layer it is standardised by its own statistics.
``transferkit evaluate`` and ``predict`` do the same with the data they are given (its own statistics, no labels).

Example:
    >>> import numpy as np
    >>> x = np.array([[0.0, 10.0], [2.0, 30.0]], np.float32)
    >>> mean, std = statistics(x)
    >>> mean.tolist(), std.tolist()
    ([1.0, 20.0], [1.0, 10.0])
    >>> auto_mode(x)[0], auto_mode(np.zeros((4, 100)))[0]
    ('per-domain', 'none')
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

MODES = ("none", "source", "per-domain")
SPARSE_ZEROS = 0.9  # a share of exact zeros at or above this: sparse counts, left as they are
MIN_ITEMS = 2  # a domain needs this many items for its own statistics


def statistics(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation (1 where a feature is constant, so it passes unchanged)."""
    x = np.asarray(x, dtype=np.float64)
    mean, std = x.mean(0), x.std(0)
    return mean.astype(np.float32), np.where(std > 1e-12, std, 1.0).astype(np.float32)


def auto_mode(x: np.ndarray) -> tuple[str, str]:
    """``(mode, why)`` for the source's feature matrix ``x``: per-domain for dense features, none for sparse ones."""
    x = np.asarray(x)
    zeros = float((x == 0).mean()) if x.size else 1.0
    if zeros >= SPARSE_ZEROS:
        return "none", f"auto: sparse features ({zeros:.0%} zeros) keep their scale"
    return "per-domain", f"auto: dense features ({zeros:.0%} zeros), each domain standardised by its own statistics"


def align_to(ds: Any, source_mean: np.ndarray, source_std: np.ndarray, own: Any = None) -> Any:
    """``ds`` (feature vectors) mapped so that standardising it by the source statistics standardises it by its own:
    ``own`` (default ``ds`` itself; e.g. the target's unlabelled training split for its test split) gives them."""
    ref = np.asarray((own if own is not None else ds).inputs, dtype=np.float32)
    if len(ref) < MIN_ITEMS:
        return ds  # too few items for statistics of its own: the source's apply
    mean, std = statistics(ref)
    x = np.asarray(ds.inputs, dtype=np.float32)
    aligned = ((x - mean) / std * source_std + source_mean).astype(np.float32)
    return replace(ds, inputs=aligned, cache=None, origin=None, meta={**ds.meta, "standardized": "per-domain"})

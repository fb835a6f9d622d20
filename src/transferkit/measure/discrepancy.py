r"""How far apart two domains are, measured on feature vectors (raw, or a backbone's features).

A user checks the gap *before* adapting (is there a shift at all? how large?) and *after* (did the features
move together?). Each measure answers a different question:

- **MMD²** (Gretton et al., "A Kernel Two-Sample Test", JMLR 2012) with a family of Gaussian kernels around the
  median distance: 0 in expectation when both samples come from one distribution. The **permutation test**
  turns it into a p-value: the share of random re-splits of the pooled sample whose MMD² is at least the
  observed one.
- **Proxy A-distance** (Ben-David et al., NeurIPS 2007): ``2·(1 - 2ε)`` with ``ε`` the cross-validated error
  of a linear classifier told to separate the domains; about 0 when it cannot, 2 when it always can.
- **CORAL distance** (Sun & Saenko, 2016): ``‖C_S - C_T‖²_F / (4d²)``, the gap in second-order statistics.
- **Wasserstein-1** (exact optimal transport, POT) and **sliced Wasserstein-2** (random 1-D projections),
  in the units of the features.

Quadratic-time work is blocked: the MMD² of 50,000 x 50,000 samples never holds more than one
``block x block`` kernel tile. Where an exact computation would be cubic (OT) or need many repeats
(permutations), a seeded random subsample of ``max_samples`` per domain is used and the result says so.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> same = mmd_test(rng.normal(size=(200, 5)), rng.normal(size=(200, 5)), seed=0)
    >>> moved = mmd_test(rng.normal(size=(200, 5)), rng.normal(size=(200, 5)) + 1.0, seed=0)
    >>> same.p_value > 0.05, moved.p_value < 0.01
    (True, True)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from transferkit.errors import DataError
from transferkit.two_sample import coral_loss, gaussian_bandwidths, mmd2_linear, pairwise_sq_dists


@dataclass
class Gap:
    """One measured gap: its value, a p-value where the measure has one, and what the number means."""

    name: str
    value: float
    p_value: float | None
    meaning: str
    samples: tuple[int, int]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- input checks -----------------------------------------------------------------------------------
def _as_features(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise DataError(f"{name}: expected feature vectors (N, D), got shape {arr.shape}")
    if arr.shape[0] < 2:
        raise DataError(f"{name}: at least 2 samples are needed, got {arr.shape[0]}")
    if not np.isfinite(arr).all():
        raise DataError(f"{name}: features contain NaN or Inf")
    return arr


def _pair(source: Any, target: Any) -> tuple[np.ndarray, np.ndarray]:
    xs, xt = _as_features(source, "source"), _as_features(target, "target")
    if xs.shape[1] != xt.shape[1]:
        raise DataError(f"source and target features differ in width: {xs.shape[1]} vs {xt.shape[1]}")
    return xs, xt


def _subsample(x: np.ndarray, k: int | None, rng: np.random.Generator) -> np.ndarray:
    if k is None or len(x) <= k:
        return x
    return x[np.sort(rng.choice(len(x), k, replace=False))]


# -- MMD --------------------------------------------------------------------------------------------
def median_bandwidths(
    source: np.ndarray, target: np.ndarray, num_kernels: int = 5, mult: float = 2.0, max_samples: int = 1000,
    seed: int = 0,
) -> torch.Tensor:
    """σ² of the kernel family: the median pooled squared distance (on a subsample) times ``mult^j``."""
    rng = np.random.default_rng(seed)
    pooled = np.concatenate([_subsample(source, max_samples // 2, rng), _subsample(target, max_samples // 2, rng)])
    z = torch.from_numpy(pooled)
    return gaussian_bandwidths(pairwise_sq_dists(z, z), num_kernels, mult)


def _multi_kernel(sq: torch.Tensor, bw: torch.Tensor) -> torch.Tensor:
    """The mean over the bandwidths ``bw`` of ``exp(-sq / σ²)``, one bandwidth at a time.

    Memory: three arrays the size of ``sq`` (it, the sum, one kernel), where broadcasting all bandwidths at
    once held eleven.
    """
    k = torch.zeros_like(sq)
    for s in bw:
        k += torch.div(sq, -s).exp_()
    return k.div_(len(bw))


def _kernel_sum(a: torch.Tensor, b: torch.Tensor, bw: torch.Tensor, block: int, same: bool) -> float:
    """Σ k(a_i, b_j) over all pairs (over i != j when ``a`` is ``b``), one tile of ``block x block`` at a time."""
    total = 0.0
    for i in range(0, len(a), block):
        ai = a[i:i + block]
        for j in range(0, len(b), block):
            k = _multi_kernel(pairwise_sq_dists(ai, b[j:j + block]), bw)
            total += float(k.sum())
            if same and i == j:
                total -= float(k.diagonal().sum())
    return total


def mmd2(
    source: Any, target: Any, *, estimator: str = "unbiased", num_kernels: int = 5, mult: float = 2.0,
    block_size: int = 2048, seed: int = 0,
) -> float:
    """MMD² between two samples with the multi-Gaussian kernel.

    ``unbiased``: the quadratic-time U-statistic ``Σ_{i≠j} k(x_i,x_j)/(m(m-1)) + Σ_{i≠j} k(y_i,y_j)/(n(n-1))
    - 2 Σ k(x_i,y_j)/(mn)``, computed in tiles (memory ``block_size²``, whatever the sample sizes).
    ``linear``: Gretton's linear-time estimator on disjoint pairs (noisier; for very large samples).
    """
    xs, xt = _pair(source, target)
    if estimator == "linear":
        return float(mmd2_linear(torch.from_numpy(xs), torch.from_numpy(xt), num_kernels, mult))
    if estimator != "unbiased":
        raise ValueError(f"estimator must be 'unbiased' or 'linear', got {estimator!r}")
    bw = median_bandwidths(xs, xt, num_kernels, mult, seed=seed)
    a, b = torch.from_numpy(xs), torch.from_numpy(xt)
    m, n = len(a), len(b)
    kxx = _kernel_sum(a, a, bw, block_size, same=True) / (m * (m - 1))
    kyy = _kernel_sum(b, b, bw, block_size, same=True) / (n * (n - 1))
    kxy = _kernel_sum(a, b, bw, block_size, same=False) / (m * n)
    return kxx + kyy - 2.0 * kxy


def mmd_test(
    source: Any, target: Any, *, num_permutations: int = 500, max_samples: int | None = 1000, num_kernels: int = 5,
    mult: float = 2.0, seed: int = 0,
) -> Gap:
    """MMD² with a permutation-test p-value (computed on up to ``max_samples`` per domain).

    The pooled kernel matrix is built once; each permutation re-assigns the pooled rows to two groups of the
    original sizes and recomputes the U-statistic from that matrix (all permutations in one matrix
    product). The p-value counts the observed split among the permutations, so it is never 0:
    ``(1 + #{MMD²_perm >= MMD²_obs}) / (1 + P)``.
    """
    xs, xt = _pair(source, target)
    rng = np.random.default_rng(seed)
    xs, xt = _subsample(xs, max_samples, rng), _subsample(xt, max_samples, rng)
    m, n = len(xs), len(xt)
    z = torch.from_numpy(np.concatenate([xs, xt]))
    sq = pairwise_sq_dists(z, z)
    bw = gaussian_bandwidths(sq, num_kernels, mult)
    k = _multi_kernel(sq, bw)
    k.fill_diagonal_(0.0)  # the U-statistic leaves out i == j; the cross term never meets the diagonal
    del sq

    # Column p of `a` marks the rows that permutation p puts in the first group (column 0: the observed split).
    a = torch.zeros(m + n, num_permutations + 1, dtype=k.dtype)
    a[:m, 0] = 1.0
    gen = torch.Generator().manual_seed(seed)
    for p in range(1, num_permutations + 1):
        a[torch.randperm(m + n, generator=gen)[:m], p] = 1.0
    b = 1.0 - a
    ka, kb = k @ a, k @ b
    sxx, syy, sxy = (a * ka).sum(0), (b * kb).sum(0), (a * kb).sum(0)
    stats = sxx / (m * (m - 1)) + syy / (n * (n - 1)) - 2.0 * sxy / (m * n)
    observed = float(stats[0])
    p_value = float((1 + (stats[1:] >= observed).sum()) / (1 + num_permutations))
    return Gap("mmd2", observed, p_value, "MMD² (multi-Gaussian kernel); p < 0.05: the domains differ", (m, n))


# -- classifier, covariance and transport distances ------------------------------------------------
def proxy_a_distance(
    source: Any, target: Any, *, folds: int = 5, max_samples: int | None = 5000, seed: int = 0
) -> float:
    """``2·(1 - 2ε)``, ``ε`` the ``folds``-fold cross-validated error of a linear source-vs-target classifier.

    Both domains are subsampled to the same size first, so that always guessing the larger domain cannot
    look like separation (ε is then 0.5 for indistinguishable domains, and the distance about 0).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    xs, xt = _pair(source, target)
    rng = np.random.default_rng(seed)
    k = min(len(xs), len(xt), max_samples or len(xs))
    xs, xt = _subsample(xs, k, rng), _subsample(xt, k, rng)
    if k < folds:
        raise DataError(f"proxy A-distance needs at least {folds} samples per domain, got {k}")
    x = np.concatenate([xs, xt])
    y = np.r_[np.zeros(k), np.ones(k)]
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    accuracy = cross_val_score(clf, x, y, cv=folds, scoring="accuracy").mean()
    return float(2.0 * (1.0 - 2.0 * (1.0 - accuracy)))


def coral_distance(source: Any, target: Any) -> float:
    """``‖C_S - C_T‖²_F / (4d²)`` (the Deep CORAL loss, on the whole samples)."""
    xs, xt = _pair(source, target)
    return float(coral_loss(torch.from_numpy(xs), torch.from_numpy(xt)))


def wasserstein(source: Any, target: Any, *, max_samples: int | None = 2000, seed: int = 0) -> float:
    """Exact Wasserstein-1 between the empirical distributions (Euclidean cost, uniform weights; POT)."""
    import ot

    xs, xt = _pair(source, target)
    rng = np.random.default_rng(seed)
    xs, xt = _subsample(xs, max_samples, rng), _subsample(xt, max_samples, rng)
    cost = ot.dist(xs, xt, metric="euclidean")
    return float(ot.emd2(ot.unif(len(xs)), ot.unif(len(xt)), cost, numItermax=1_000_000))


def sliced_wasserstein(source: Any, target: Any, *, projections: int = 200, seed: int = 0) -> float:
    """Sliced Wasserstein-2: the mean over random directions of the 1-D W2 of the projected samples (POT).

    The same directions and value as ``ot.sliced_wasserstein_distance(seed=seed)``, but a few directions at a
    time: POT's 1-D solver keeps about a dozen float arrays of (samples x directions), which for 50,000 x
    50,000 samples and all 200 directions at once was 2.2 GB. A chunk here holds about 1e6 values per array.
    """
    import ot
    from ot.sliced import get_random_projections

    xs, xt = _pair(source, target)
    # a RandomState gives POT's directions for this seed without reseeding NumPy's global generator
    dirs = get_random_projections(xs.shape[1], projections, np.random.RandomState(seed))
    ws, wt = np.full(len(xs), 1.0 / len(xs)), np.full(len(xt), 1.0 / len(xt))
    chunk = max(1, 1_000_000 // (len(xs) + len(xt)))
    total = 0.0
    for i in range(0, projections, chunk):
        d = dirs[:, i:i + chunk]
        total += float(ot.wasserstein_1d(xs @ d, xt @ d, ws, wt, p=2).sum())
    return (total / projections) ** 0.5


# -- all of them, and per class ---------------------------------------------------------------------
MEASURES: dict[str, tuple[str, Callable[..., float] | None]] = {
    "mmd2": ("MMD² (multi-Gaussian kernel); p < 0.05: the domains differ", None),
    "proxy_a": ("proxy A-distance 2(1-2ε): 0 = a linear classifier cannot tell the domains apart, 2 = always can",
                proxy_a_distance),
    "coral": ("CORAL distance ‖C_S - C_T‖²/(4d²): gap in second-order statistics", coral_distance),
    "wasserstein": ("Wasserstein-1 (exact OT, Euclidean cost), in feature units", wasserstein),
    "sliced_wasserstein": ("sliced Wasserstein-2 over random 1-D projections, in feature units", sliced_wasserstein),
}


def measure_gap(
    source: Any, target: Any, *, measures: list[str] | None = None, max_samples: int = 1000,
    num_permutations: int = 500, seed: int = 0,
) -> list[Gap]:
    """Every requested measure (default: all of :data:`MEASURES`) between ``source`` and ``target``.

    MMD²'s permutation test, the proxy A-distance and Wasserstein-1 use up to ``max_samples`` per domain
    (seeded); CORAL and sliced Wasserstein use every sample. Each :class:`Gap` records the sizes it used.
    """
    xs, xt = _pair(source, target)
    names = measures or list(MEASURES)
    unknown = [n for n in names if n not in MEASURES]
    if unknown:
        raise ValueError(f"unknown measure(s) {unknown}; choose from {list(MEASURES)}")
    capped = (min(len(xs), max_samples), min(len(xt), max_samples))
    out = []
    for name in names:
        meaning, fn = MEASURES[name]
        if name == "mmd2":
            out.append(mmd_test(xs, xt, num_permutations=num_permutations, max_samples=max_samples, seed=seed))
        elif name == "proxy_a":
            k = min(capped)
            out.append(Gap(name, proxy_a_distance(xs, xt, max_samples=max_samples, seed=seed), None, meaning, (k, k)))
        elif name == "wasserstein":
            out.append(Gap(name, wasserstein(xs, xt, max_samples=max_samples, seed=seed), None, meaning, capped))
        elif name == "sliced_wasserstein":
            out.append(Gap(name, sliced_wasserstein(xs, xt, seed=seed), None, meaning, (len(xs), len(xt))))
        else:
            assert fn is not None
            out.append(Gap(name, fn(xs, xt), None, meaning, (len(xs), len(xt))))
    return out


def per_class_gap(
    source: Any, source_labels: Any, target: Any, target_labels: Any | None = None, *, measure: str = "mmd2",
    classes: list[str] | None = None, min_samples: int = 5, seed: int = 0,
) -> dict[str, float | None]:
    """One measure between the source and target samples of each class.

    The target's classes are its labels when given (analysis with labels), otherwise the nearest source
    class mean (pseudo-labels: then the gap says how far the target points that *look like* class c lie from
    the source's class c). Classes with fewer than ``min_samples`` on either side give None.
    """
    xs, xt = _pair(source, target)
    ys = np.asarray(source_labels)
    if ys.shape != (len(xs),):
        raise DataError(f"source labels: expected shape ({len(xs)},), got {ys.shape}")
    labels = np.unique(ys)
    if target_labels is None:
        means = np.stack([xs[ys == c].mean(0) for c in labels])
        # ‖x - m‖² = ‖x‖² - 2x·m + ‖m‖²: an (N, C) matrix, never the (N, C, D) array of differences
        sq = (xt**2).sum(1, keepdims=True) - 2.0 * xt @ means.T + (means**2).sum(1)
        yt = labels[np.argmin(sq, axis=1)]
    else:
        yt = np.asarray(target_labels)
        if yt.shape != (len(xt),):
            raise DataError(f"target labels: expected shape ({len(xt)},), got {yt.shape}")
    out: dict[str, float | None] = {}
    for c in labels:
        name = classes[int(c)] if classes is not None else str(c)
        a, b = xs[ys == c], xt[yt == c]
        if len(a) < min_samples or len(b) < min_samples:
            out[name] = None
        elif measure == "mmd2":
            out[name] = mmd2(a, b, seed=seed)
        else:
            fn = MEASURES[measure][1]
            assert fn is not None
            out[name] = fn(a, b)
    return out

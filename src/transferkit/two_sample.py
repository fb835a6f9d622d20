r"""Statistics of a source and a target sample that both adapting and measuring compute: the MMD's Gaussian
bandwidths, squared distances and linear-time estimator, CORAL's covariance gap, and importance weights from a
domain classifier.

``adapt/`` minimises them as losses (DAN, Deep CORAL) or reweights with them; ``measure/`` reports them as domain
gaps and scores validators (IWCV, DEV) with them. They live here, below both packages, so that neither imports
the other for them (docs/architecture.md, the layers). ``adapt.losses`` and ``adapt.shallow`` re-export them under
their old names.

Example:
    >>> import torch
    >>> x = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    >>> float(coral_loss(x, x + 5.0)) < 1e-12, float(mmd2_linear(x, x)) == 0.0
    (True, True)
"""

from __future__ import annotations

import numpy as np
import torch

from transferkit.errors import DataError


# -- kernel two-sample statistics (adapt.losses.mmd, measure.discrepancy) ----------------------------
def gaussian_bandwidths(sq_dists: torch.Tensor, num_kernels: int = 5, mult: float = 2.0) -> torch.Tensor:
    """σ² values: the median off-diagonal squared distance times ``mult^j``, ``j = -(K//2) .. K//2``."""
    n = sq_dists.shape[0]
    off = sq_dists[~torch.eye(n, dtype=torch.bool, device=sq_dists.device)] if n > 1 else sq_dists.flatten()
    median = off.detach().median().clamp_min(1e-12)
    powers = torch.arange(num_kernels, device=sq_dists.device, dtype=sq_dists.dtype) - (num_kernels // 2)
    return median * mult**powers


def pairwise_sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``‖a_i - b_j‖²`` for all pairs ``(N, D), (M, D) -> (N, M)``, with values within rounding of 0 set to 0.

    For more than 25 rows ``torch.cdist`` computes ``‖a‖² + ‖b‖² - 2a·b``, whose rounding error (up to about
    ``(D + 2)·ε·(‖a‖² + ‖b‖²)``) leaves duplicated rows at a small distance that depends on their positions.
    Where most pairs are duplicates the median bandwidth drops to its 1e-12 floor, and that noise would decide
    the kernel values: the MMD² of a collapsed batch (a few distinct rows, float64) with itself came out up to
    0.5 instead of 0, and changed with the order of the rows.
    """
    sq = torch.cdist(a, b).pow(2)
    with torch.no_grad():
        tol = 4 * (a.shape[1] + 2) * torch.finfo(sq.dtype).eps
        rounding = torch.add(a.detach().pow(2).sum(1, keepdim=True), b.detach().pow(2).sum(1)).mul_(tol)
        within = torch.le(sq, rounding)
        del rounding
    return sq.masked_fill_(within, 0.0)


def mmd2_linear(source: torch.Tensor, target: torch.Tensor, num_kernels: int = 5, mult: float = 2.0) -> torch.Tensor:
    """The linear-time estimator (Gretton et al. 2012, §6): O(n) kernel evaluations on disjoint pairs.

    Uses ``h = k(x1, x2) + k(y1, y2) - k(x1, y2) - k(x2, y1)`` over consecutive pairs; the bandwidth comes
    from the median of these pairs' distances. For batches too large for an ``(N, N)`` kernel matrix.
    """
    n = min(source.shape[0], target.shape[0]) // 2 * 2
    if n < 2:
        raise ValueError("the linear MMD needs at least 2 samples per domain")
    x1, x2 = source[0:n:2], source[1:n:2]
    y1, y2 = target[0:n:2], target[1:n:2]
    pairs = [(x1, x2), (y1, y2), (x1, y2), (x2, y1)]
    sq = [(a - b).pow(2).sum(1) for a, b in pairs]
    median = torch.cat(sq).detach().median().clamp_min(1e-12)
    powers = torch.arange(num_kernels, device=source.device, dtype=source.dtype) - (num_kernels // 2)
    bw = (median * mult**powers).view(-1, 1)
    kx, ky, kxy, kyx = (torch.exp(-d.unsqueeze(0) / bw).mean(0) for d in sq)
    return (kx + ky - kxy - kyx).mean()


# -- second-order statistics (adapt.losses.coral, measure.discrepancy) -------------------------------
def covariance(x: torch.Tensor) -> torch.Tensor:
    n = x.shape[0]
    if n < 2:
        raise ValueError("a covariance needs at least 2 samples")
    xc = x - x.mean(0, keepdim=True)
    return xc.T @ xc / (n - 1)


def coral_loss(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    d = source.shape[1]
    diff = covariance(source) - covariance(target)
    return diff.pow(2).sum() / (4.0 * d * d)


# -- importance weights (adapt.shallow, measure.selection) ------------------------------------------
def check_pair(xs: np.ndarray, xt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    xs, xt = np.asarray(xs, dtype=np.float64), np.asarray(xt, dtype=np.float64)
    if xs.ndim != 2 or xt.ndim != 2:
        raise DataError(f"features must be 2-D (N, D); got {xs.shape} and {xt.shape}")
    if xs.shape[1] != xt.shape[1]:
        raise DataError(f"source and target features have different widths: {xs.shape[1]} vs {xt.shape[1]}")
    if len(xs) < 2 or len(xt) < 2:
        raise DataError("shallow adaptation needs at least 2 source and 2 target samples")
    if not (np.isfinite(xs).all() and np.isfinite(xt).all()):
        raise DataError("features contain NaN or Inf")
    return xs, xt


class ImportanceReweighter:
    """Source weights ``w(x) = p(t|x)/p(s|x) · n_s/n_t`` from a logistic domain classifier, clipped to ``max_weight``.

    Train the task classifier on the source with ``sample_weight=weights(xs)``: the weighted source then
    resembles the target (covariate shift assumption).
    """

    def __init__(self, c: float = 1.0, max_weight: float = 10.0) -> None:
        self.c, self.max_weight = c, max_weight

    def fit(self, xs: np.ndarray, xt: np.ndarray) -> ImportanceReweighter:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        xs, xt = check_pair(xs, xt)
        x = np.vstack([xs, xt])
        d = np.r_[np.zeros(len(xs)), np.ones(len(xt))]
        self.classifier_ = make_pipeline(StandardScaler(), LogisticRegression(C=self.c, max_iter=1000)).fit(x, d)
        self.ratio_ = len(xs) / len(xt)
        return self

    def weights(self, xs: np.ndarray) -> np.ndarray:
        p = self.classifier_.predict_proba(np.asarray(xs, dtype=np.float64))[:, 1].clip(1e-6, 1 - 1e-6)
        return np.minimum(p / (1 - p) * self.ratio_, self.max_weight)

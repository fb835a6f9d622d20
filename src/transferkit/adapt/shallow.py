"""Shallow domain adaptation on extracted features: no network is trained, so it runs in seconds.

Each adapter follows the scikit-learn pattern: ``fit(Xs, Xt)`` learns from labelled-source and unlabelled-target
*features* (e.g. from :func:`transferkit.features.extract_to_npz`); ``transform_source`` / ``transform_target``
map them into a shared space, after which any classifier is trained on the mapped source. The importance
reweighter instead returns per-sample weights for the source.

- :class:`CoralAligner`: whiten the source covariance, re-colour it with the target's (Sun et al., "Return of
  Frustratingly Easy Domain Adaptation", AAAI 2016).
- :class:`SubspaceAligner`: align the source PCA basis with the target's (Fernando et al., ICCV 2013).
- :class:`OTMapper`: entropic optimal transport of source samples onto the target (Courty et al., TPAMI 2017),
  through POT's ``ot.da.SinkhornTransport``.
- :class:`ImportanceReweighter`: weights ``p(target|x) / p(source|x)`` from a logistic domain classifier
  (Shimodaira 2000; Sugiyama et al. 2007), clipped for stability.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> xs, xt = rng.normal(size=(200, 3)), rng.normal(size=(200, 3)) * [1, 2, 3]
    >>> mapped = CoralAligner(eps=1e-3).fit(xs, xt).transform_source(xs)
    >>> bool(np.allclose(np.cov(mapped.T), np.cov(xt.T), atol=1e-2))
    True
"""

from __future__ import annotations

import numpy as np
from scipy import linalg

from transferkit.two_sample import ImportanceReweighter as ImportanceReweighter  # shared with measure/
from transferkit.two_sample import check_pair as _check


class CoralAligner:
    """``Xs · C_s^{-1/2} · C_t^{1/2}`` with ``C = cov + eps·I`` (eps = 1 as in the paper, for standardised
    features); the target is left as it is."""

    def __init__(self, eps: float = 1.0) -> None:
        self.eps = eps

    def fit(self, xs: np.ndarray, xt: np.ndarray) -> CoralAligner:
        xs, xt = _check(xs, xt)
        d = xs.shape[1]
        cs = np.cov(xs, rowvar=False) + self.eps * np.eye(d)
        ct = np.cov(xt, rowvar=False) + self.eps * np.eye(d)
        self.matrix_ = np.real(linalg.fractional_matrix_power(cs, -0.5) @ linalg.fractional_matrix_power(ct, 0.5))
        return self

    def transform_source(self, xs: np.ndarray) -> np.ndarray:
        return np.asarray(xs, dtype=np.float64) @ self.matrix_

    def transform_target(self, xt: np.ndarray) -> np.ndarray:
        return np.asarray(xt, dtype=np.float64)


class SubspaceAligner:
    """Project both domains on ``n_components`` PCA directions, rotating the source basis onto the target's."""

    def __init__(self, n_components: int = 32) -> None:
        self.n_components = n_components

    def fit(self, xs: np.ndarray, xt: np.ndarray) -> SubspaceAligner:
        from sklearn.decomposition import PCA

        xs, xt = _check(xs, xt)
        k = min(self.n_components, xs.shape[1], len(xs), len(xt))
        self.pca_s_ = PCA(k).fit(xs)
        self.pca_t_ = PCA(k).fit(xt)
        bs, bt = self.pca_s_.components_.T, self.pca_t_.components_.T  # (D, k)
        self.alignment_ = bs.T @ bt  # M = Bsᵀ Bt
        return self

    def transform_source(self, xs: np.ndarray) -> np.ndarray:
        centred = np.asarray(xs, dtype=np.float64) - self.pca_s_.mean_
        return centred @ self.pca_s_.components_.T @ self.alignment_

    def transform_target(self, xt: np.ndarray) -> np.ndarray:
        centred = np.asarray(xt, dtype=np.float64) - self.pca_t_.mean_
        return centred @ self.pca_t_.components_.T


class OTMapper:
    """Barycentric mapping of source samples onto the target by entropic optimal transport (POT)."""

    def __init__(self, reg: float = 1.0, max_iter: int = 1000, norm: str | None = "median") -> None:
        self.reg, self.max_iter, self.norm = reg, max_iter, norm

    def fit(self, xs: np.ndarray, xt: np.ndarray) -> OTMapper:
        import ot

        xs, xt = _check(xs, xt)
        self.transport_ = ot.da.SinkhornTransport(reg_e=self.reg, max_iter=self.max_iter, norm=self.norm)
        self.transport_.fit(Xs=xs, Xt=xt)
        return self

    def transform_source(self, xs: np.ndarray) -> np.ndarray:
        return np.asarray(self.transport_.transform(Xs=np.asarray(xs, dtype=np.float64)))

    def transform_target(self, xt: np.ndarray) -> np.ndarray:
        return np.asarray(xt, dtype=np.float64)

r"""How well a pre-trained model will transfer to a labelled target task, scored *before* any training.

Each score reads what a candidate model produces on the target data: its features ``F`` (N, D) or, for LEEP
and NCE, its own classifier's predictions over the *source* classes. Higher is better for every score, so a
model zoo is ranked by sorting. The scores are only comparable between models on the same target data.

- **LogME** (You et al., "LogME: Practical Assessment of Pre-trained Models for Transfer Learning", ICML 2021):
  the log marginal likelihood (evidence) of a Bayesian linear model on the features, one per class (one-hot
  target ``y``), maximised over the prior precision ``α`` and noise precision ``β``, averaged over classes and
  divided by ``N``. With ``σ_i`` the eigenvalues of ``FᵀF``, ``t = α/β`` and ``m = (FᵀF + tI)⁻¹Fᵀy``:

  .. math::
      \mathcal{L}(\alpha, \beta) = \tfrac{N}{2}\log\beta + \tfrac{D}{2}\log\alpha - \tfrac{N}{2}\log 2\pi
          - \tfrac{\beta}{2}\lVert Fm - y\rVert^2 - \tfrac{\alpha}{2}m^\top m
          - \tfrac{1}{2}\log\lvert\alpha I + \beta F^\top F\rvert,

  maximised by MacKay's fixed point ``γ = Σ βσ_i/(α + βσ_i)``, ``α ← γ/mᵀm``, ``β ← (N - γ)/‖Fm - y‖²``.
  Every class shares one tridiagonal reduction of ``FᵀF`` (or ``FFᵀ``); see :func:`logme`.
- **LEEP** (Nguyen et al., "LEEP: A New Measure to Evaluate Transferability of Learned Representations",
  ICML 2020): with ``θ(x)`` the source model's probabilities over its classes ``z``, the empirical conditional
  ``P̂(y|z) = P̂(y, z)/P̂(z)`` from ``P̂(y, z) = (1/N) Σ_{i: y_i = y} θ(x_i)_z``, and
  ``LEEP = (1/N) Σ_i log Σ_z P̂(y_i|z) θ(x_i)_z`` (≤ 0).
- **NCE** (Tran et al., "Transferability and Hardness of Supervised Classification Tasks", ICCV 2019):
  ``-H(Y|Z) = (1/N) Σ_i log P̂(y_i|z_i)`` with ``z_i`` the source model's hard prediction (≤ 0).
- **H-score** (Bao et al., "An Information-Theoretic Approach to Transferability in Task Transfer Learning",
  ICIP 2019): ``tr(cov(f)⁻¹ cov(E[f|y]))``, the between-class share of the feature covariance. With
  ``shrinkage`` (Ibrahim et al., "Newer is not always better: Rethinking transferability metrics, their
  peculiarities, stability and performance", ICLR 2022) ``cov(f)`` is the Ledoit-Wolf estimate
  ``(1-a)·S + a·μI`` and the between-class covariance is scaled by ``(1-a)`` to match; without it the sample
  covariance of a few hundred items in 2,048 dimensions is singular and the score mostly measures noise.
- **GBC** (Pándy et al., "Transferability Estimation using Bhattacharyya Class Separability", CVPR 2022):
  each class is a Gaussian with diagonal covariance; ``GBC = -Σ_{i≠j} exp(-D_B(c_i, c_j))`` with the
  Bhattacharyya distance ``D_B = ⅛ Δμᵀ Σ⁻¹ Δμ + ½ log(det Σ / √(det Σ_i det Σ_j))``, ``Σ = (Σ_i + Σ_j)/2``.
  0 when no two classes overlap; ``-C(C-1)`` when all coincide.
- **TransRate** (Huang et al., "Frustratingly Easy Transferability Estimation", ICML 2022): the coding-rate
  estimate of the mutual information between centred features ``Z`` and labels,
  ``R(Z, ε) - (1/C) Σ_c R(Z_c, ε)`` with ``R(Z, ε) = ½ log det(I + ZᵀZ/(n ε))``, as in the code printed
  in the paper.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> labels = np.repeat(np.arange(3), 40)
    >>> informative = rng.normal(size=(120, 8)) + 3.0 * np.eye(3, 8)[labels]
    >>> noise = rng.normal(size=(120, 8))
    >>> bool(logme(informative, labels) > logme(noise, labels))
    True
    >>> probs = np.eye(4)[labels] * 0.7 + 0.3 / 4  # a source model with 4 classes, fairly sure of itself
    >>> -1.0 < score("leep", informative, labels, source_probs=probs) <= 0.0
    True
    >>> sorted(list_metrics())
    ['gbc', 'hscore', 'leep', 'logme', 'nce', 'transrate']

Over 500 lines as one module: each score is short, and all share the feature preparation and the table
``METRICS`` that ``rank`` and the tests read.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from transferkit.errors import ConfigError, DataError

__all__ = [
    "METRICS",
    "MetricSpec",
    "gbc",
    "hscore",
    "leep",
    "list_metrics",
    "logme",
    "nce",
    "score",
    "transrate",
]


# -- input checks -----------------------------------------------------------------------------------------------
def _check_features(features: Any) -> np.ndarray:
    arr = np.asarray(features)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise DataError(f"features must be a numeric array (N, D), got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise DataError(f"features must have shape (N, D), got shape {arr.shape}")
    if arr.shape[0] < 2 or arr.shape[1] < 1:
        raise DataError(f"features need at least 2 rows and 1 column, got shape {arr.shape}")
    arr = np.asarray(arr, dtype=np.float64)
    if not math.isfinite(float(arr.sum())):  # one pass, no (N, D) mask, for the usual all-finite case
        bad = np.argwhere(~np.isfinite(arr))
        if len(bad):
            raise DataError(f"features contain {len(bad)} NaN/Inf value(s), the first at row {bad[0][0]}")
    return arr


def _check_labels(labels: Any, n: int | None = None) -> tuple[np.ndarray, int]:
    """Labels as int64 ``0..C-1`` with every class present and ``C >= 2``; returns ``(labels, C)``."""
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise DataError(f"labels must have shape (N,), got shape {arr.shape}")
    if n is not None and len(arr) != n:
        raise DataError(f"{len(arr)} labels for {n} rows of features/predictions; they must match")
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise DataError(f"labels must be integers 0..C-1, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise DataError("labels contain NaN or Inf; unlabelled items cannot score transferability")
        if not np.equal(np.round(arr), arr).all():
            raise DataError("labels must be whole numbers 0..C-1, got fractional values")
    arr = arr.astype(np.int64)
    if len(arr) == 0:
        raise DataError("no labels: transferability needs a labelled target sample")
    if arr.min() < 0:
        raise DataError(
            f"labels must be 0..C-1, got {arr.min()} (unlabelled items, e.g. -1, cannot score transferability)"
        )
    counts = np.bincount(arr)
    if len(counts) < 2 or np.count_nonzero(counts) < 2:
        raise DataError(f"transferability needs at least 2 classes, got only class {arr[0]}")
    if (counts == 0).any():
        missing = np.flatnonzero(counts == 0)
        shown = ", ".join(map(str, missing[:5])) + (", ..." if len(missing) > 5 else "")
        raise DataError(
            f"labels must be 0..C-1 with every class present; {len(missing)} value(s) in 0..{len(counts) - 1} "
            f"never occur ({shown}); remap them with np.unique(labels, return_inverse=True)"
        )
    return arr, len(counts)


def _check_source(source_probs: Any, n: int, metric: str) -> np.ndarray:
    """The source model's predictions as probabilities (N, Z): rows of softmax outputs, or hard labels (N,)."""
    if source_probs is None:
        raise DataError(
            f"{metric} needs the source model's predictions on the target items (source_probs: probabilities "
            "(N, Z) over its own Z classes, or its predicted class per item (N,))"
        )
    arr = np.asarray(source_probs)
    if arr.ndim == 1:  # hard predictions z_i: one-hot
        if len(arr) != n:
            raise DataError(f"{len(arr)} source predictions for {n} target items; they must match")
        if not np.issubdtype(arr.dtype, np.integer) or (len(arr) and arr.min() < 0):
            raise DataError("1-D source predictions must be non-negative integer class indices")
        return _one_hot(arr.astype(np.int64), int(arr.max()) + 1)
    if arr.ndim != 2 or arr.shape[0] != n or arr.shape[1] < 1:
        raise DataError(f"source_probs must have shape ({n}, Z), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"source_probs must be numeric, got dtype {arr.dtype}")
    arr = np.asarray(arr, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise DataError("source_probs contain NaN or Inf")
    if arr.min() < 0 or not np.allclose(arr.sum(1), 1.0, atol=1e-3):
        raise DataError(
            "source_probs rows must be probabilities (>= 0, summing to 1): pass softmax outputs, not logits"
        )
    return arr / arr.sum(1, keepdims=True)


def _one_hot(labels: np.ndarray, c: int) -> np.ndarray:
    out = np.zeros((len(labels), c))
    out[np.arange(len(labels)), labels] = 1.0
    return out


# -- LogME ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Tridiagonal:
    """``G = Q T Qᵀ`` for a symmetric Gram matrix ``G``: ``T``'s diagonal and off-diagonal, its eigenvalues
    ``σ`` (those of ``G``), and ``Qᵀ rhs`` for the right-hand sides the quadratic forms below need."""

    diag: np.ndarray
    off: np.ndarray
    sigma: np.ndarray
    qt_rhs: np.ndarray

    def solve(self, t: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """``u_j = (T + t_j I)⁻¹ Qᵀ rhs[:, cols[j]]`` for every ``j`` at once, rows of a (len(cols), k) array.

        One LAPACK call (``dptsv``, O(k) per class): the shifted systems are the diagonal blocks of one
        tridiagonal system whose off-diagonal is 0 between blocks, which decouples them exactly.
        """
        from scipy.linalg import lapack  # scipy and scikit-learn are imported where used: `measure` stays light

        m, k = len(cols), len(self.diag)
        diag = (self.diag[None, :] + t[:, None]).ravel()
        rhs = np.ascontiguousarray(self.qt_rhs[:, cols].T).ravel()
        if m * k == 1:
            return (rhs / diag).reshape(m, k)
        off = np.zeros((m, k))
        off[:, :-1] = self.off
        _, _, u, info = lapack.dptsv(diag, off.ravel()[:-1], rhs)
        if info != 0:
            raise np.linalg.LinAlgError(f"shifted tridiagonal solve failed (dptsv info={info})")
        return u.reshape(m, k)

    def quadratic(self, u: np.ndarray) -> np.ndarray:
        """``u_jᵀ T u_j`` for the rows of ``u``, without forming ``T``."""
        return (u**2) @ self.diag + 2.0 * ((u[:, :-1] * u[:, 1:]) @ self.off)


def _tridiagonalize(gram: np.ndarray, rhs: np.ndarray) -> _Tridiagonal:
    """Householder reduction ``G = Q T Qᵀ`` (LAPACK ``dsytrd``), ``Qᵀ rhs`` from the stored reflectors
    (``dormqr``), and the eigenvalues of ``T`` (``dsterf``). This is the first half of ``numpy.linalg.eigh``;
    the second half (the eigenvectors ``V = QW``, a (k, k) matrix) costs twice as much again and is not needed:
    every quantity LogME iterates on is ``Σ_i f(σ_i)`` or a quadratic form in ``(G + tI)⁻¹``, which ``T`` gives
    in O(k). ``gram`` is overwritten.

    The reduction is a long chain of matrix-vector products: it runs on one BLAS thread, as OpenBLAS threads
    spin-waiting between those products made it 20x slower (14 s instead of 0.7 s for k = 2,048) on a 2-core
    machine busy with other work.
    """
    from scipy.linalg import lapack

    k = gram.shape[0]
    if k == 1:
        return _Tridiagonal(gram[0].copy(), np.zeros(0), np.clip(gram[0], 0.0, None), rhs.copy())
    with threadpool_limits(limits=1, user_api="blas"):
        lwork = int(lapack.dsytrd_lwork(k, lower=1)[0])
        # gram is symmetric: its transpose is the same matrix in Fortran order, which LAPACK takes without a copy
        a, diag, off, tau, info = lapack.dsytrd(gram.T, lower=1, lwork=max(lwork, 1), overwrite_a=1)
        if info != 0:
            raise np.linalg.LinAlgError(f"tridiagonal reduction failed (dsytrd info={info})")
        # Q = H(1)...H(k-1), reflector i stored in column i below the subdiagonal: on rows 1..k-1, Q is the Q of a
        # QR factorisation stored in a[1:, :-1] (what LAPACK's dormtr does for the lower triangle)
        qt_rhs = np.array(rhs, dtype=np.float64, order="F", copy=True)
        refl = a[1:, :-1]
        lwork_q = int(lapack.dormqr("L", "T", refl, tau, qt_rhs[1:], -1)[1][0])
        out, _, info = lapack.dormqr("L", "T", refl, tau, qt_rhs[1:], max(lwork_q, 1))
        if info != 0:
            raise np.linalg.LinAlgError(f"applying the Householder reflectors failed (dormqr info={info})")
        qt_rhs[1:] = out
        sigma, info = lapack.dsterf(diag, off)
        if info != 0:
            raise np.linalg.LinAlgError(f"tridiagonal eigenvalues did not converge (dsterf info={info})")
    # eigenvalues within rounding (k·ε·σ_max) of 0 are 0: left as noise, they entered the evidence through
    # log(1 + σ/t) where the search stops at t = 1e-12·σ_max, and the score changed with the order of the items
    sigma[sigma <= k * np.finfo(np.float64).eps * max(float(sigma.max()), 0.0)] = 0.0
    return _Tridiagonal(diag, off, sigma, qt_rhs)


def _class_sums(f: np.ndarray, y: np.ndarray, c: int) -> np.ndarray:
    """``Yᵀ F`` (C, D) for the one-hot ``Y``: the sum of each class's rows, N·D additions (a sparse product)."""
    from scipy.sparse import csr_array

    return csr_array((np.ones(len(y)), (y, np.arange(len(y)))), shape=(c, len(y))) @ f


def _logme_step(
    tri: _Tridiagonal, yy: np.ndarray, n: int, dual: bool, log_t: np.ndarray, cols: np.ndarray,
    bounds: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """Evidence / N at ``t`` and ``h = log t' - log t`` (``t'`` clipped to ``bounds``), for the classes ``cols``
    (see :func:`_logme_fixed_point`)."""
    log_lo, log_hi = bounds
    s = tri.sigma[:, None]
    t = np.exp(log_t)
    u = tri.solve(t, cols)
    qu = np.einsum("jk,kj->j", u, tri.qt_rhs[:, cols])
    uu, utu = np.einsum("jk,jk->j", u, u), tri.quadratic(u)
    if dual:  # v = (FFᵀ + tI)⁻¹y = Qu: ‖Fm - y‖² = t²‖v‖², mᵀm = vᵀFFᵀv
        res2, m2 = t**2 * uu, utu
    else:  # m = (FᵀF + tI)⁻¹Fᵀy = Qu: ‖Fm - y‖² = ‖y‖² - 2bᵀm + mᵀFᵀFm
        res2, m2 = yy[cols] - 2.0 * qu + utu, uu
    tiny = np.finfo(np.float64).tiny
    res2, m2 = np.maximum(res2, tiny), np.maximum(m2, tiny)
    gamma = (s / (s + t)).sum(0)
    const = -0.5 * (1.0 + math.log(2 * math.pi))
    evidence = const - 0.5 * np.log((res2 + t * m2) / n) - 0.5 * np.log1p(s / t).sum(0) / n
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_next = np.log(gamma) - np.log(m2) + np.log(res2) - np.log(n - gamma)  # log(α/β) after the update
    log_next = np.clip(np.nan_to_num(log_next, nan=log_hi, posinf=log_hi, neginf=log_lo), log_lo, log_hi)
    return evidence, log_next - log_t


def _logme_fixed_point(
    tri: _Tridiagonal, yy: np.ndarray, n: int, dual: bool, max_iter: int, tol: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class ``(evidence / N, t = α/β)`` at the fixed point of MacKay's updates, all classes at once.

    With ``t = α/β`` the posterior mean is ``m = (FᵀF + tI)⁻¹Fᵀy``, and in the eigenbasis of ``FᵀF``
    ``γ = Σ σ_i/(σ_i + t)`` and ``log|αI + βFᵀF| - D log α = Σ log(1 + σ_i/t)``. The class-specific
    ``mᵀm`` and ``‖Fm - y‖²`` come from ``u = (T + tI)⁻¹Qᵀb``, for all classes in one call: in the primal
    (``G = FᵀF``, ``b = Fᵀy``) ``m = Qu``; in the dual (``G = FFᵀ``, ``b = y``, when ``N <= D``) ``m = FᵀQu``
    by the push-through identity.

    The updates ``α ← γ/mᵀm``, ``β ← (N - γ)/‖Fm - y‖²`` map ``t`` to ``t' = α/β``, and the evidence
    maximised over ``β`` for a given ``t`` rises exactly where ``t' > t``. So the fixed point ``t' = t`` is
    found as the root of ``h(s) = log t' - s`` in ``s = log t``: from ``t = 1`` (the paper's start) a step of
    ``h`` (the plain update) or of a doubling stride, whichever is longer, until ``h`` changes sign, then
    false position (Illinois) inside that bracket, until ``t`` is known to a relative ``tol``. Plain repetition
    of the updates reaches the same point, but crawls where the evidence is flat (features that carry little
    about a class): there it took hundreds of iterations, this takes 5-15.

    The evidence is read at ``α = tβ`` with the best ``β = N/(‖Fm - y‖² + t·mᵀm)`` for that ``t`` (the
    fixed point's own ``β`` there). Where it still rises at ``t = 10¹²·max σ``, the features are of no use for the
    class and the search stops there, at the evidence of the model ``w = 0`` (the limit ``t -> ∞``). Where the
    evidence has several local maxima (features with a wide spread of eigenvalues can give two), the result is
    a local one, nearly always the one plain repetition from ``t = 1`` reaches (the search can step past it to
    another).
    """
    scale = max(float(tri.sigma.max()), 1.0)
    log_lo, log_hi = math.log(1e-12 * scale), math.log(1e12 * scale)
    c = tri.qt_rhs.shape[1]
    log_t = np.zeros(c)
    evidence = np.full(c, -np.inf)
    lo, hi = np.full(c, -np.inf), np.full(c, np.inf)  # the bracket: h(lo) > 0 > h(hi)
    h_lo, h_hi = np.zeros(c), np.zeros(c)
    stride = np.ones(c)
    last_end = np.zeros(c, dtype=np.int8)  # which end the last evaluation replaced: -1 lo, +1 hi
    active = np.arange(c)
    for _ in range(max_iter):
        a = active
        ev, h = _logme_step(tri, yy, n, dual, log_t[a], a, (log_lo, log_hi))
        evidence[a] = ev
        up = h > 0
        end = np.where(up, -1, 1).astype(np.int8)
        # Illinois: when the same end moves twice running, halve the other end's h (keeps the bracket shrinking)
        again = end == last_end[a]
        h_hi[a] = np.where(again & up, h_hi[a] / 2, h_hi[a])
        h_lo[a] = np.where(again & ~up, h_lo[a] / 2, h_lo[a])
        lo[a], h_lo[a] = np.where(up, log_t[a], lo[a]), np.where(up, h, h_lo[a])
        hi[a], h_hi[a] = np.where(up, hi[a], log_t[a]), np.where(up, h_hi[a], h)
        last_end[a] = end
        done = (np.abs(h) <= tol) | (hi[a] - lo[a] <= tol)
        bracketed = np.isfinite(lo[a]) & np.isfinite(hi[a])
        with np.errstate(divide="ignore", invalid="ignore"):
            false_pos = hi[a] - h_hi[a] * (hi[a] - lo[a]) / (h_hi[a] - h_lo[a])
        inside = (false_pos > lo[a]) & (false_pos < hi[a])
        refine = np.where(inside, false_pos, (lo[a] + hi[a]) / 2)
        expand = log_t[a] + np.sign(h) * np.maximum(np.abs(h), stride[a])
        stride[a] = np.where(bracketed, stride[a], 2 * stride[a])
        log_t[a] = np.where(done, log_t[a], np.clip(np.where(bracketed, refine, expand), log_lo, log_hi))
        active = a[~done]
        if active.size == 0:
            break
    else:
        warnings.warn(
            f"LogME's fixed point was not located to tol={tol} in {max_iter} iterations for {active.size} of {c} "
            "classes; their evidence may be slightly low",
            RuntimeWarning,
            stacklevel=3,
        )
    return evidence, np.exp(log_t)


def logme(features: Any, labels: Any, *, max_iter: int = 100, tol: float = 1e-8) -> float:
    """LogME: mean over classes of the maximised log evidence of a linear model on ``features``, per sample.

    ``features`` (N, D), ``labels`` (N,) in ``0..C-1``. One decomposition of ``FᵀF`` (or of ``FFᵀ`` when
    ``N <= D``), its reduction to tridiagonal form and its eigenvalues, serves every class; the fixed point on
    ``α, β`` then costs O(min(N, D)) per class and iteration, until ``t = α/β`` is known to a relative ``tol``
    (the evidence is stationary there, so its own error is far smaller). Only differences between models on
    the same target data mean anything.
    """
    if max_iter < 1 or not tol > 0:
        raise ValueError(f"logme needs max_iter >= 1 and tol > 0, got {max_iter} and {tol}")
    f = _check_features(features)
    y, c = _check_labels(labels, len(f))
    y1h = _one_hot(y, c)
    n, d = f.shape
    dual = n <= d  # decompose the smaller Gram matrix: FᵀF (D, D), or FFᵀ (N, N)
    tri = _tridiagonalize(f @ f.T, y1h) if dual else _tridiagonalize(f.T @ f, _class_sums(f, y, c).T)
    per_class, _ = _logme_fixed_point(tri, y1h.sum(0), n, dual, max_iter, tol)
    return float(per_class.mean())


# -- LEEP and NCE -----------------------------------------------------------------------------------------------
def leep(source_probs: Any, labels: Any) -> float:
    """LEEP: the mean log-likelihood of the target labels under the source model's predictions, re-labelled
    through the empirical ``P̂(y|z)``. ``source_probs`` (N, Z) are softmax outputs over the source classes
    (or hard predictions (N,), which makes LEEP equal to NCE). Always ≤ 0; 0 when ``y`` is a function of ``z``.
    """
    y, c = _check_labels(labels)
    theta = _check_source(source_probs, len(y), "LEEP")
    joint = _one_hot(y, c).T @ theta / len(y)  # P̂(y, z), (C, Z)
    marginal = joint.sum(0)  # P̂(z)
    # a source class no item gives any mass to has P̂(z) = 0 and weight θ(x)_z = 0 in every sum below
    cond = np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)  # P̂(y | z)
    eep = np.einsum("iz,iz->i", theta, cond[y])
    return float(np.mean(np.log(eep)))


def nce(source_preds: Any, labels: Any) -> float:
    """NCE: ``-H(Y | Z)``, the negative conditional entropy of the target labels given the source model's hard
    predictions ``z`` (``source_preds``: class indices (N,), or probabilities (N, Z), whose argmax is taken).
    Always ≤ 0; 0 when ``y`` is a function of ``z``.
    """
    y, c = _check_labels(labels)
    arr = np.asarray(source_preds) if source_preds is not None else None
    if arr is not None and arr.ndim == 1:
        if len(arr) != len(y):
            raise DataError(f"{len(arr)} source predictions for {len(y)} target items; they must match")
        if not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0:
            raise DataError("1-D source predictions must be non-negative integer class indices")
        z = arr.astype(np.int64)
    else:
        z = np.argmax(_check_source(arr, len(y), "NCE"), axis=1)
    joint = np.zeros((c, int(z.max()) + 1))
    np.add.at(joint, (y, z), 1.0)
    per_z = joint.sum(0, keepdims=True)  # a source class never predicted has no column to condition on
    cond = np.divide(joint, per_z, out=np.zeros_like(joint), where=per_z > 0)
    return float(np.mean(np.log(cond[y, z])))


# -- H-score ----------------------------------------------------------------------------------------------------
def hscore(features: Any, labels: Any, *, shrinkage: bool = True) -> float:
    """H-score ``tr(cov(f)⁻¹ cov(E[f|y]))``, with the Ledoit-Wolf shrunk ``cov(f)`` by default.

    Both covariances are normalised by ``N`` (the published regularised H-score code divides the between-class
    one by ``N - 1``, a constant factor for a given target set that leaves rankings unchanged). Without
    ``shrinkage`` the inverse is a pseudo-inverse, as in Bao et al.'s code. Between 0 and ``min(C - 1, D)``;
    0 also when Ledoit-Wolf shrinks all the way (``a = 1``, which it can on a handful of items).
    """
    from scipy.linalg import solve_triangular
    from sklearn.covariance import LedoitWolf

    f = _check_features(features)
    y, c = _check_labels(labels, len(f))
    f = f - f.mean(0)
    counts = np.bincount(y, minlength=c).astype(np.float64)
    means = (_one_hot(y, c).T @ f) / counts[:, None]  # class means of the centred features, (C, D)
    weighted = means * np.sqrt(counts / len(f))[:, None]  # cov(E[f|y]) = weightedᵀ weighted
    if shrinkage:
        lw = LedoitWolf(assume_centered=True, store_precision=False).fit(f)
        a, cov = float(lw.shrinkage_), lw.covariance_
        try:  # positive definite whenever a > 0 and the features are not all constant
            chol = np.linalg.cholesky(cov)
            half = solve_triangular(chol, weighted.T, lower=True)  # tr(W Σ⁻¹ Wᵀ) = ‖L⁻¹Wᵀ‖²_F
            return float((1.0 - a) * np.sum(half**2))
        except np.linalg.LinAlgError:
            pass
    else:
        a, cov = 0.0, f.T @ f / len(f)
    inv = np.linalg.pinv(cov, rcond=1e-15, hermitian=True)
    return float((1.0 - a) * np.einsum("cd,de,ce->", weighted, inv, weighted))


# -- GBC --------------------------------------------------------------------------------------------------------
def gbc(features: Any, labels: Any, *, min_variance: float = 1e-4, pca_dim: int | None = 64) -> float:
    """GBC with diagonal Gaussians: minus the sum over ordered class pairs of their Bhattacharyya coefficient.

    Features wider than ``pca_dim`` are first projected on their top ``pca_dim`` principal components: in
    hundreds of dimensions every pair of class Gaussians is almost disjoint, the coefficients underflow
    towards 0 and the score stops telling models apart (seen: -1e-20 to -1e-66 for five backbones on
    digits-uci at 500-1,280 dimensions). ``pca_dim=None`` keeps every dimension.

    Per-class variances are floored at ``min_variance`` times the mean per-dimension variance of all the
    features (a class of one item, or a constant feature, has variance 0). The authors' code floors at an
    absolute ``1e-4``; a relative floor keeps the score independent of the features' scale. In ``[-C(C-1), 0]``.
    """
    f = _check_features(features)
    y, c = _check_labels(labels, len(f))
    if not min_variance > 0:
        raise ValueError(f"gbc needs min_variance > 0, got {min_variance}")
    if pca_dim is not None and f.shape[1] > pca_dim:
        centred = f - f.mean(0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        f = centred @ vt[:pca_dim].T
    means = np.empty((c, f.shape[1]))
    variances = np.empty((c, f.shape[1]))
    for k in range(c):  # per class, centred: E[x²] - E[x]² would cancel badly for features far from 0
        fk = f[y == k]
        means[k] = fk.mean(0)
        variances[k] = fk.var(0)
    floor = min_variance * max(float(f.var(0).mean()), np.finfo(np.float64).tiny)
    variances = np.maximum(variances, floor)
    log_var = np.log(variances).sum(1)
    total = 0.0
    for i in range(c - 1):  # each unordered pair once, vectorised over j > i
        avg = (variances[i] + variances[i + 1 :]) / 2
        mahal = ((means[i] - means[i + 1 :]) ** 2 / avg).sum(1) / 8
        log_ratio = np.log(avg).sum(1) - 0.5 * (log_var[i] + log_var[i + 1 :])
        total += np.exp(-(mahal + 0.5 * log_ratio)).sum()
    return float(-2.0 * total)


# -- TransRate --------------------------------------------------------------------------------------------------
def _coding_rate(z: np.ndarray, eps: float) -> float:
    """``½ log det(I_d + ZᵀZ/(n ε))``, through the smaller of ``ZᵀZ`` and ``ZZᵀ`` (same non-zero spectrum)."""
    n, d = z.shape
    gram = z.T @ z if d <= n else z @ z.T
    gram /= n * eps
    gram.flat[:: gram.shape[0] + 1] += 1.0
    _, logdet = np.linalg.slogdet(gram)
    return 0.5 * float(logdet)


def transrate(features: Any, labels: Any, *, eps: float = 1e-4) -> float:
    """TransRate ``R(Z, ε) - (1/C) Σ_c R(Z_c, ε)`` on the centred features ``Z``.

    ``eps`` is the distortion as the authors' published code applies it (``ZᵀZ/(n·eps)``), with their default.
    Larger when the features spread out overall (completeness) but each class is compact (compactness).
    """
    if not eps > 0:
        raise ValueError(f"transrate needs eps > 0, got {eps}")
    f = _check_features(features)
    y, c = _check_labels(labels, len(f))
    z = f - f.mean(0)
    per_class = [_coding_rate(z[y == k], eps) for k in range(c)]
    return _coding_rate(z, eps) - float(np.mean(per_class))


# -- registry ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MetricSpec:
    """A transferability metric: what it computes, where it comes from, what it needs. Higher is better."""

    name: str
    summary: str
    reference: str
    needs_source_probs: bool
    compute: Callable[[np.ndarray, np.ndarray, np.ndarray | None], float]


METRICS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        MetricSpec("logme", "log evidence of a Bayesian linear model on the features, per sample",
                   "You et al., ICML 2021", False, lambda f, y, p: logme(f, y)),
        MetricSpec("leep", "log expected empirical prediction of the source classifier (<= 0)",
                   "Nguyen et al., ICML 2020", True, lambda f, y, p: leep(p, y)),
        MetricSpec("nce", "negative conditional entropy of the labels given the source prediction (<= 0)",
                   "Tran et al., ICCV 2019", True, lambda f, y, p: nce(p, y)),
        MetricSpec("hscore", "between-class share of the Ledoit-Wolf shrunk feature covariance",
                   "Bao et al., ICIP 2019; shrinkage: Ibrahim et al., ICLR 2022", False, lambda f, y, p: hscore(f, y)),
        MetricSpec("gbc", "minus the Bhattacharyya overlap of per-class diagonal Gaussians (<= 0)",
                   "Pándy et al., CVPR 2022", False, lambda f, y, p: gbc(f, y)),
        MetricSpec("transrate", "coding-rate mutual information between features and labels",
                   "Huang et al., ICML 2022", False, lambda f, y, p: transrate(f, y)),
    )
}


def list_metrics() -> dict[str, str]:
    """Every metric's name with a one-line description and its paper."""
    return {name: f"{spec.summary} ({spec.reference})" for name, spec in METRICS.items()}


def score(metric: str, features: Any, labels: Any, source_probs: Any = None) -> float:
    """The transferability ``metric`` of a model whose target ``features`` (N, D) carry ``labels`` (N,).

    ``source_probs`` are the model's own predictions over its source classes on the same items (probabilities
    (N, Z) or class indices (N,)); LEEP and NCE need them, the other metrics ignore them. Higher is better.
    """
    if metric not in METRICS:
        raise ConfigError(f"unknown transferability metric {metric!r}; known: {', '.join(METRICS)}")
    spec = METRICS[metric]
    f = _check_features(features)
    y, _ = _check_labels(labels, len(f))
    if spec.needs_source_probs and source_probs is None:
        raise DataError(
            f"{metric} scores the source model's predictions: pass source_probs (softmax outputs (N, Z) over the "
            "source classes, or the predicted source class per item (N,))"
        )
    return spec.compute(f, y, source_probs)

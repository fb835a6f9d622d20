"""The linear probe solved as what it is: L2-regularised logistic regression on frozen features.

A head trained by AdamW for a few hundred steps on frozen features stops short of the optimum a second-order
solver reaches: on frozen MiniLM sentence embeddings it scored up to 2.8 points below scikit-learn's
``LogisticRegression`` on the same features (benchmarks/defaults.py). The problem is convex, so it is solved to
convergence (L-BFGS) instead of trained. The one real choice is the L2 strength ``C``: scikit-learn's default
``C = 1`` unless asked otherwise, because choosing it by cross-validation on the source did no better on the target
(docs/defaults.md) at many times the cost; ``c=None`` does choose it that way (stratified k-fold, the source
only), then refits on every training item.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = np.concatenate([rng.normal(-1, 1, (40, 3)), rng.normal(1, 1, (40, 3))]).astype(np.float32)
    >>> y = np.repeat([0, 1], 40)
    >>> fit = fit_convex_probe(x, y, num_classes=2, seed=0)
    >>> fit.weight.shape, fit.bias.shape, fit.c, fit.folds
    ((2, 3), (2,), 1.0, 0)
    >>> fit_convex_probe(x, y, num_classes=2, seed=0, c=None).folds  # C by 5-fold cross-validation
    5
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from transferkit.config import bottleneck_width
from transferkit.errors import ConfigError, DataError

if TYPE_CHECKING:
    from transferkit.config import RunConfig

# Inverse L2 strengths tried (scikit-learn's C: the loss is sum of cross-entropies + ||w||² / (2C)).
C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)
DEFAULT_C = 1.0  # scikit-learn's default (and the fallback when a class has too few items to cross-validate)
MAX_FOLDS = 5
LARGE = 20_000  # above this many items, 3 folds instead of 5 (the fit is then the slow part of a run)
MAX_ITER = 1000


@dataclass(frozen=True)
class ProbeFit:
    """The fitted head, ``logits = x @ weight.T + bias``, and how it was chosen (for the report)."""

    weight: np.ndarray  # (num_classes, dim)
    bias: np.ndarray  # (num_classes,)
    c: float
    folds: int  # 0: C was given (or a one-value grid), or a class had too few items to cross-validate
    cv_accuracy: float | None
    iterations: int
    converged: bool

    def describe(self) -> str:
        how = (f"C={self.c:g} chosen by {self.folds}-fold cross-validation on the source's training split "
               f"(accuracy {100 * self.cv_accuracy:.1f}%), then refitted on all of it" if self.cv_accuracy is not None
               else f"C={self.c:g}")
        end = "converged" if self.converged else f"stopped at {MAX_ITER} iterations before converging"
        return f"L2 logistic regression by L-BFGS, {how}; {end} in {self.iterations} iterations"


def fit_convex_probe(x: np.ndarray, y: np.ndarray, *, num_classes: int, seed: int, c: float | None = DEFAULT_C,
                     grid: tuple[float, ...] = C_GRID) -> ProbeFit:
    """Fit the head on features ``x`` (N, D) and class indices ``y`` (N,) in ``[0, num_classes)``; ``c=None``
    chooses C from ``grid`` by cross-validation (``DEFAULT_C`` where a class has too few items for two folds).

    Classes without a training item get a bias far below the others (the probe never predicts them) rather than
    a head of a different width.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    present, counts = np.unique(y, return_counts=True)
    if len(present) < 2:
        raise DataError(f"a linear probe needs training items of at least 2 classes, got {len(present)}")
    folds = min(MAX_FOLDS if len(y) <= LARGE else 3, int(counts.min()))
    cv_acc = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # reported as `converged` on the final fit
        if c is not None or len(grid) == 1:
            c, folds = (grid[0] if c is None else c), 0
        elif folds >= 2:
            split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
            scores = [cross_val_score(LogisticRegression(C=g, max_iter=MAX_ITER), x, y, cv=split).mean()
                      for g in grid]
            best = int(np.argmax(scores))  # first of equals: the strongest regularisation among the best
            c, cv_acc = grid[best], float(scores[best])
        else:
            c, folds = DEFAULT_C, 0
        clf = LogisticRegression(C=c, max_iter=MAX_ITER).fit(x, y)
    n_iter = int(np.max(clf.n_iter_))
    coef, intercept = clf.coef_, clf.intercept_
    if len(present) == 2:  # scikit-learn's one row z for the second class: logits (-z/2, z/2), same softmax
        coef = np.stack([-coef[0] / 2, coef[0] / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    weight = np.zeros((num_classes, x.shape[1]))
    bias = np.full(num_classes, intercept.min() - 30.0)  # absent classes: e^-30 of the least likely present one
    weight[present], bias[present] = coef, intercept
    return ProbeFit(weight=weight.astype(np.float32), bias=bias.astype(np.float32), c=float(c), folds=folds,
                    cv_accuracy=cv_acc, iterations=n_iter, converged=n_iter < MAX_ITER)


def solver_for(cfg: RunConfig) -> str:
    """``lbfgs`` or ``sgd``: how the linear probe of ``cfg`` is trained (a ConfigError where lbfgs was asked for and
    the probe is not a plain logistic regression)."""
    asked = cfg.finetune.probe_solver
    if asked == "sgd" or cfg.finetune.strategy != "linear-probe":
        return "sgd"
    blocker = _not_convex(cfg)
    if asked == "lbfgs":
        if blocker:
            raise ConfigError(f"finetune.probe_solver 'lbfgs' fits a plain logistic regression, but {blocker}: "
                              "use probe_solver 'sgd' (or 'auto')")
        return "lbfgs"
    if blocker or cfg.train.epochs is not None or cfg.train.steps is not None:
        return "sgd"  # auto: an explicit training length asks for the engine
    return "lbfgs"


def _not_convex(cfg: RunConfig) -> str | None:
    """Why the probe's loss is more than L2 logistic regression on fixed features (None: it is not)."""
    m, d = cfg.model, cfg.data
    reasons = [
        (bottleneck_width(cfg) is not None, "model.bottleneck_dim trains a layer under the head"),
        (cfg.adapt.method != "none", f"adapt.method {cfg.adapt.method!r} adds a transfer loss"),
        (bool(m.heads), "model.heads defines its own heads"),
        (d.target_labels_per_class is not None, "labelled target items are trained on with their own weight"),
        (cfg.train.label_smoothing > 0, "train.label_smoothing changes the loss"),
        (bool(cfg.finetune.regularizers), "finetune.regularizers add to the loss"),
        (len(d.sources) > 1, "several sources are weighted per source"),
    ]
    return next((why for hit, why in reasons if hit), None)

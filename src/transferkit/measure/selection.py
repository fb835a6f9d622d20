r"""Label-free model selection for domain adaptation: score a candidate without target labels.

Adaptation has hyper-parameters (method, λ, epochs) and no target labels to choose them with. Each validator
here scores a *candidate* (a trained model's outputs) from what is honestly available: the labelled source
validation split and the unlabelled target. Higher is better for every score.

- ``source_accuracy``: accuracy on the source validation split (blind to the shift).
- ``iwcv``: importance-weighted validation (Sugiyama et al., JMLR 2007): the source validation loss with each
  item weighted by ``p_t(x)/p_s(x)`` from a domain classifier on features, negated.
- ``dev``: Deep Embedded Validation (You et al., ICML 2019): IWCV with a control variate that cuts its
  variance, negated.
- ``snd``: Soft Neighborhood Density (Saito et al., ICCV 2021): how densely target predictions cluster.
- ``entropy``: minus the mean entropy of target predictions (confident = better).
- ``info_max``: ``H(mean p) - mean H(p)``: confident *and* diverse target predictions.

Published validators are known to favour collapsed models (every target item in one class scores well on
entropy, and SND/DEV picked collapsed models on Office-31 in SKADA-Bench), so :func:`collapse_check` rejects a
candidate whose target predictions collapse, whatever its score, and :func:`select` applies it.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> good = Candidate("good", target_logits=rng.normal(size=(100, 4)) * 5)
    >>> collapsed = Candidate("collapsed", target_logits=np.tile([9.0, 0, 0, 0], (100, 1)))
    >>> select([good, collapsed], "entropy").chosen
    'good'

:func:`domain_scorer` turns a validator into a scikit-learn scorer, so that ``GridSearchCV`` / ``cross_validate``
choose a :class:`~transferkit.estimator.TransferClassifier`'s hyper-parameters without target labels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from transferkit.errors import ConfigError, DataError
from transferkit.two_sample import ImportanceReweighter


@dataclass
class Candidate:
    """What a trained candidate produced (arrays; logits are pre-softmax).

    ``source_val_*``: on the labelled source validation split; ``target_*``: on unlabelled target items;
    ``source_train_features``: fits IWCV/DEV's domain classifier (with ``target_features``).
    """

    name: str
    target_logits: np.ndarray
    source_val_logits: np.ndarray | None = None
    source_val_labels: np.ndarray | None = None
    source_val_features: np.ndarray | None = None
    source_train_features: np.ndarray | None = None
    target_features: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)


# -- helpers ----------------------------------------------------------------------------------------
def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def _entropy(p: np.ndarray) -> np.ndarray:
    return -(p * np.log(np.clip(p, 1e-12, None))).sum(-1)


def _need(value: Any, what: str, validator: str) -> np.ndarray:
    if value is None:
        raise DataError(f"validator {validator!r} needs {what}")
    arr = np.asarray(value)
    if not np.isfinite(arr.astype(np.float64)).all():
        raise DataError(f"validator {validator!r}: {what} contain NaN or Inf")
    return arr


def _val_losses(c: Candidate, validator: str) -> np.ndarray:
    logits = _need(c.source_val_logits, "source validation logits", validator)
    labels = _need(c.source_val_labels, "source validation labels", validator).astype(int)
    if labels.shape != (len(logits),):
        raise DataError(f"validator {validator!r}: {len(labels)} labels for {len(logits)} logits")
    p = softmax(logits)
    return -np.log(np.clip(p[np.arange(len(labels)), labels], 1e-12, None))


def importance_weights(c: Candidate, validator: str = "iwcv", max_weight: float = 10.0) -> np.ndarray:
    """``p_t(x)/p_s(x)`` at the source validation items, from a domain classifier on source-train vs target."""
    xs = _need(c.source_train_features, "source train features", validator)
    xt = _need(c.target_features, "target features", validator)
    xv = _need(c.source_val_features, "source validation features", validator)
    key = f"importance_weights/{max_weight}/{id(xs)}/{id(xt)}/{id(xv)}"  # IWCV and DEV share one domain classifier
    if key not in c.meta:
        c.meta[key] = ImportanceReweighter(max_weight=max_weight).fit(xs, xt).weights(xv)
    return c.meta[key]


# -- validators -------------------------------------------------------------------------------------
def source_accuracy(c: Candidate) -> float:
    logits = _need(c.source_val_logits, "source validation logits", "source_accuracy")
    labels = _need(c.source_val_labels, "source validation labels", "source_accuracy")
    return float((logits.argmax(1) == labels).mean())


def iwcv(c: Candidate) -> float:
    w = importance_weights(c, "iwcv")
    return -float((w * _val_losses(c, "iwcv")).mean())


def dev(c: Candidate) -> float:
    """DEV risk ``mean(wL) + η·mean(w) - η`` with ``η = -Cov(wL, w)/Var(w)``, negated (higher is better)."""
    w = importance_weights(c, "dev")
    wl = w * _val_losses(c, "dev")
    var = w.var(ddof=1)
    eta = -np.cov(wl, w)[0, 1] / var if var > 0 else 0.0
    return -float(wl.mean() + eta * w.mean() - eta)


def snd(c: Candidate, temperature: float = 0.05) -> float:
    """Mean entropy of each target item's softmax-normalised similarity to the others (Saito et al., 2021)."""
    p = softmax(_need(c.target_logits, "target logits", "snd"))
    p = p / np.linalg.norm(p, axis=1, keepdims=True)
    sim = p @ p.T
    np.fill_diagonal(sim, -np.inf)
    return float(_entropy(softmax(sim / temperature)).mean())


def target_entropy(c: Candidate) -> float:
    return -float(_entropy(softmax(_need(c.target_logits, "target logits", "entropy"))).mean())


def info_max(c: Candidate) -> float:
    p = softmax(_need(c.target_logits, "target logits", "info_max"))
    return float(_entropy(p.mean(0)) - _entropy(p).mean())


VALIDATORS: dict[str, tuple[Callable[[Candidate], float], str]] = {
    "source_accuracy": (source_accuracy, "accuracy on the labelled source validation split"),
    "iwcv": (iwcv, "importance-weighted source validation loss, negated (Sugiyama et al., JMLR 2007)"),
    "dev": (dev, "deep embedded validation: IWCV with a control variate, negated (You et al., ICML 2019)"),
    "snd": (snd, "soft neighbourhood density of target predictions (Saito et al., ICCV 2021)"),
    "entropy": (target_entropy, "minus the mean entropy of target predictions"),
    "info_max": (info_max, "H(mean prediction) - mean H(prediction) on the target"),
}


# -- collapse guard and selection -------------------------------------------------------------------
@dataclass
class CollapseCheck:
    collapsed: bool
    reason: str
    mean_entropy_ratio: float  # H(mean prediction) / log(C): 1 = classes used evenly, 0 = one class
    top_class_share: float  # share of target items predicted as the most frequent class


def collapse_check(
    target_logits: np.ndarray, *, min_entropy_ratio: float = 0.5, max_class_share: float | None = None
) -> CollapseCheck:
    """Whether target predictions collapsed onto few classes.

    Collapsed when ``H(mean p)/log C < min_entropy_ratio`` or when one class takes more than
    ``max_class_share`` of the target (default ``max(0.5, 3/C)``: three times its even share, and never a
    majority). Either would be a strong class imbalance to *assume* of an unlabelled target; a user who
    expects one sets the thresholds.
    """
    p = softmax(np.asarray(target_logits))
    c = p.shape[1]
    if c < 2:
        raise DataError("the collapse check needs at least 2 classes")
    ratio = float(_entropy(p.mean(0)) / np.log(c))
    share = float(np.bincount(p.argmax(1), minlength=c).max() / len(p))
    limit = max_class_share if max_class_share is not None else max(0.5, 3.0 / c)
    reasons = []
    if ratio < min_entropy_ratio:
        reasons.append(f"entropy of the mean prediction is {ratio:.2f} of log(C) (< {min_entropy_ratio})")
    if share > limit:
        reasons.append(f"one class takes {share:.0%} of the target (> {limit:.0%})")
    return CollapseCheck(bool(reasons), "; ".join(reasons), ratio, share)


@dataclass
class Selection:
    chosen: str | None
    validator: str
    scores: dict[str, float]
    rejected: dict[str, str]  # name -> why the collapse guard rejected it


def select(candidates: list[Candidate], validator: str, *, guard: bool = True, **guard_kwargs: Any) -> Selection:
    """The candidate with the best score among those the collapse guard accepts (None if it rejects all)."""
    if validator not in VALIDATORS:
        raise ValueError(f"unknown validator {validator!r}; choose from {sorted(VALIDATORS)}")
    if not candidates:
        raise ValueError("no candidates to select from")
    fn = VALIDATORS[validator][0]
    scores = {c.name: fn(c) for c in candidates}
    rejected = {}
    if guard:
        for c in candidates:
            check = collapse_check(c.target_logits, **guard_kwargs)
            if check.collapsed:
                rejected[c.name] = check.reason
    allowed = [n for n in scores if n not in rejected]
    chosen = max(allowed, key=lambda n: scores[n]) if allowed else None
    return Selection(chosen, validator, scores, rejected)


# -- scikit-learn scorer ----------------------------------------------------------------------------
_NEEDS_FEATURES = frozenset({"iwcv", "dev"})


class DomainScorer:
    """A scikit-learn scorer ``(estimator, X_val, y_val) -> float`` that scores with a label-free validator.

    Made by :func:`domain_scorer`, which documents it. Holds the unlabelled target inputs; the held-out source fold
    and its labels come from the cross-validation that calls it.
    """

    def __init__(self, X_target: Any, validator: str = "snd", *, X_source: Any = None, guard: bool = True,
                 collapse_score: float = float("-inf")) -> None:
        if validator not in VALIDATORS:
            raise ConfigError(f"unknown validator {validator!r}; choose from {sorted(VALIDATORS)}")
        if X_target is None:
            raise ConfigError("domain_scorer needs the unlabelled target inputs (X_target)")
        self.X_target = X_target
        self.validator = validator
        self.X_source = X_source
        self.guard = guard
        self.collapse_score = collapse_score

    def __repr__(self) -> str:
        return f"domain_scorer(X_target=<{_num_rows(self.X_target)} items>, validator={self.validator!r})"

    def candidate(self, estimator: Any, X_val: Any, y_val: Any = None) -> Candidate:
        """The estimator's outputs as a :class:`Candidate`: on the held-out source fold (with its labels) and on
        the unlabelled target. Logits are the log of ``predict_proba`` (every validator reads them through a
        softmax, which gives the probabilities back); features come from ``transform``."""
        classes = list(estimator.classes_)
        target_logits = _log_proba(estimator, self.X_target)
        cand = Candidate(f"{type(estimator).__name__}", target_logits)
        if y_val is not None:
            index = {c: i for i, c in enumerate(classes)}
            y = np.asarray(y_val).ravel()
            unknown = sorted({str(v) for v in y if v not in index})
            if unknown:
                raise DataError(f"domain_scorer: held-out labels {unknown[:5]} are not among the classes the "
                                f"estimator was fitted on ({classes[:10]})")
            cand.source_val_labels = np.array([index[v] for v in y], dtype=np.int64)
            cand.source_val_logits = _log_proba(estimator, X_val)
        if self.validator in _NEEDS_FEATURES:
            if not hasattr(estimator, "transform"):
                raise DataError(f"validator {self.validator!r} needs the estimator's features (a `transform` "
                                f"method), which {type(estimator).__name__} lacks; use snd, entropy or info_max")
            cand.source_val_features = np.asarray(estimator.transform(X_val))
            cand.target_features = np.asarray(estimator.transform(self.X_target))
            cand.source_train_features = (np.asarray(estimator.transform(self.X_source)) if self.X_source is not None
                                          else cand.source_val_features)
        return cand

    def __call__(self, estimator: Any, X_val: Any, y_val: Any = None) -> float:
        cand = self.candidate(estimator, X_val, y_val)
        if self.guard and collapse_check(cand.target_logits).collapsed:
            return float(self.collapse_score)
        return float(VALIDATORS[self.validator][0](cand))


def domain_scorer(X_target: Any, validator: str = "snd", *, X_source: Any = None, guard: bool = True,
                  collapse_score: float = float("-inf")) -> DomainScorer:
    """A scikit-learn scorer that judges a fitted classifier by a label-free validator (higher is better).

    Cross-validation (``GridSearchCV(..., scoring=domain_scorer(Xt))``) calls it with each fitted candidate and the
    held-out *source* fold ``(X_val, y_val)``; it adds the estimator's outputs on the unlabelled target ``X_target``
    and scores them with ``validator`` (:data:`VALIDATORS`): ``snd``, ``entropy`` and ``info_max`` read the target
    predictions only; ``source_accuracy`` the held-out fold; ``iwcv`` and ``dev`` both, plus features (the
    estimator's ``transform``) for their domain classifier, which is fitted on ``X_source`` when given, else on the
    held-out fold. Target labels are never asked for, so none can leak into the choice.

    Any classifier with ``predict_proba`` and ``classes_`` can be scored, a ``Pipeline`` included (it applies its
    own preprocessing to ``X_target``): pass ``X_target`` as the pipeline's *input*, not as its last step's input.

    With ``guard`` (the default), a candidate whose target predictions collapse onto few classes
    (:func:`collapse_check`) scores ``collapse_score`` (-inf: ranked last; scikit-learn warns about non-finite
    scores) whatever its validator says: published validators are known to favour collapsed models.

    Example:
        >>> import numpy as np
        >>> from sklearn.linear_model import LogisticRegression
        >>> rng = np.random.default_rng(0)
        >>> Xs, Xt = rng.normal(size=(60, 3)), rng.normal(size=(40, 3)) + 0.3
        >>> ys = (Xs[:, 0] > 0).astype(int)
        >>> scorer = domain_scorer(Xt, "info_max")
        >>> round(scorer(LogisticRegression().fit(Xs, ys), Xs, ys), 3) > 0
        True
    """
    return DomainScorer(X_target, validator, X_source=X_source, guard=guard, collapse_score=collapse_score)


def _log_proba(estimator: Any, X: Any) -> np.ndarray:
    p = np.asarray(estimator.predict_proba(X), dtype=np.float64)
    return np.log(np.clip(p, 1e-300, None))


def _num_rows(X: Any) -> int | str:
    try:
        return len(X)
    except TypeError:
        return "?"

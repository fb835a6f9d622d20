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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from transferkit.errors import DataError


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
    from transferkit.adapt.shallow import ImportanceReweighter

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

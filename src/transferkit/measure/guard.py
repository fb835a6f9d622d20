"""The negative-transfer guard: keep the adapted model only when nothing label-free says it is worse.

Adaptation can make the target worse than not adapting at all (negative transfer): when the domains share
too little, when their label sets differ, or when λ is so strong that the target predictions collapse. A
run with an adaptation method and ``adapt.guard`` on (the default) therefore also trains the source-only
model (same seed, same everything, no transfer loss) and compares the two *without target labels*.

The rule (:func:`guard_decision`). The final model falls back to source-only when any of these holds:

1. **Collapse**: the adapted model's target predictions collapse (see
   :func:`~transferkit.measure.selection.collapse_check`) while the source-only model's do not.
2. **Source broken**: the adapted model's source-validation accuracy is more than ``max_source_drop``
   (default 0.05) below the source-only model's. Adaptation that must give up the labelled task to align
   the domains has found nothing shared to align; that is the signature of negative transfer in
   adversarial training (Wang et al., "Characterizing and Avoiding Negative Transfer", CVPR 2019).
3. **Gap grew**: on the adapted model's features the source and target are *further apart* than on the
   source-only model's: a larger MMD² (multi-Gaussian kernel, median-heuristic bandwidths, so the two
   feature spaces are compared on their own scales) that its permutation test also finds significant
   (p < ``gap_alpha``, default 0.05). Every adaptation method is meant to shrink the divergence term of the
   target-error bound (Ben-David et al., Machine Learning 2010); a run that widened it while the source error
   stayed put has made the bound worse and optimised something else, typically target clusters that are not
   the target's classes (seen with MCC on Amazon reviews, where it costs 5 points on average; see
   benchmarks/README.md). Needs both candidates' features; skipped without them. **Off by default**
   (``gap_alpha=None``; still measured and recorded): the two MMD² values are taken in two different feature
   spaces, and on the defaults suite (benchmarks/auto_selection.py) the rule fired 27 times, 16 of them on an
   adapted model that was better on the target (DANN and MCC on Amazon reviews, up to +10 points): net -0.6 points
   per firing. The sure-answers rule (5) catches most of what it caught.
4. **Absent classes** (partial label overlap): the source-only model's mean target prediction, scaled so
   its largest class is 1, estimates which source classes the target has (the class weights of partial
   adaptation, Cao et al., "Partial Adversarial Domain Adaptation", ECCV 2018); a class below
   ``absent_weight`` (default 0.1) is deemed absent. Aligning a whole source with a target that lacks some of
   its classes pushes target items into them. The adapted model falls back when it puts more of the target
   into the absent classes, together, than one present class would get under an even split
   (1 / #present) and more than the source-only model does. One class the source-only model missed and the
   adapted model rightly finds gets about one class's share, so it does not trip the rule. **Off by default**
   (``absent_weight=None``; its numbers are still recorded): a weak source-only model also rarely predicts
   classes the target does have, and on the defaults suite (USPS -> MNIST, 50 labels per class) the rule
   rejected five adapted models that were all 11-24 points better; turn it on where the target may lack classes.
5. **Sure answers overwritten**: adaptation relabels a larger share of the half of the target the source-only
   model is surest of than that model's estimated error rate on the whole target. The estimate is the larger of
   ATC's (Garg et al., "Leveraging Unlabeled Data to Predict Out-of-Distribution Performance", ICLR 2022: the
   confidence threshold below which as many source-validation items fall as the model gets wrong there, and
   the share of target items below it) and DoC's (Guillory et al., ICCV 2021: the source-validation error plus
   the drop in mean confidence from source to target). With ATC alone the rule fired 8 times on the defaults
   suite, 6 of them on MCC on spoken-digit features 16-42 points better than source-only: ATC gave 3-12% there
   for a true 32-46% error (:func:`doc_error` says why). Even if confidence said nothing about correctness, the
   surest half would hold no more errors than that; relabelling more of it means overwriting answers that were right
   (seen with a source from an unrelated domain: 20 Newsgroups -> Amazon reviews). On USPS -> MNIST, DANN
   relabels 5-14% of the surest half against an estimated 23-34% error, and keeps its 17-26 point gain.
6. **Validator** (off by default: ``validator=None``): a label-free validator from
   :data:`~transferkit.measure.selection.VALIDATORS` scores the adapted model below the source-only one.

Otherwise the adapted model is kept. The run report records the decision, every number it used, and the
target accuracy of both models where target labels exist (to report, never to decide).

Example:
    >>> import numpy as np
    >>> from transferkit.measure.selection import Candidate
    >>> y = np.arange(40) % 4
    >>> ok = Candidate("source-only", np.eye(4)[y] * 5, np.eye(4)[y] * 5, y)
    >>> collapsed = Candidate("adapted", np.tile([9.0, 0, 0, 0], (40, 1)), np.eye(4)[y] * 5, y)
    >>> guard_decision(ok, collapsed).keep
    'source-only'
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from transferkit.errors import DataError
from transferkit.measure.discrepancy import measure_gap
from transferkit.measure.selection import (
    VALIDATORS,
    Candidate,
    collapse_check,
    importance_weights,
    softmax,
    source_accuracy,
)


@dataclass
class GuardDecision:
    keep: str  # "adapted" or "source-only"
    reasons: list[str]
    numbers: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def guard_decision(
    source_only: Candidate, adapted: Candidate, *, max_source_drop: float = 0.05, gap_alpha: float | None = None,
    absent_weight: float | None = None, flip_check: bool = True, validator: str | None = None,
    gap_samples: int = 500, gap_permutations: int = 200, error_estimate: str = "atc-doc",
) -> GuardDecision:
    """Apply the rule of the module docstring to two candidates (both need target and source-val logits;
    the gap rule also needs their source-val and target features). The gap and absent-class rules are off unless
    ``gap_alpha`` / ``absent_weight`` (e.g. 0.05 / 0.1) are given; ``flip_check=False`` turns the sure-answers rule
    off; ``error_estimate`` is that rule's estimate of the source-only model's target error
    (:func:`target_error_estimate`; ``"atc"``: ATC alone, the rule before 2026-12-07, for replays)."""
    if error_estimate not in ("atc", "atc-doc"):
        raise ValueError(f"error_estimate must be 'atc' or 'atc-doc', got {error_estimate!r}")
    reasons: list[str] = []
    fired: dict[str, bool] = {}  # every rule that was checked and whether it fired (to re-judge the rules later)
    col_s, col_a = collapse_check(source_only.target_logits), collapse_check(adapted.target_logits)
    acc_s, acc_a = source_accuracy(source_only), source_accuracy(adapted)
    numbers: dict[str, Any] = {
        "source_val_accuracy": {"source-only": acc_s, "adapted": acc_a},
        "collapse": {"source-only": asdict(col_s), "adapted": asdict(col_a)},
        "max_source_drop": max_source_drop,
        "gap_alpha": gap_alpha,
    }
    fired["collapse"] = col_a.collapsed and not col_s.collapsed
    if fired["collapse"]:
        reasons.append(f"the adapted model's target predictions collapsed ({col_a.reason})")
    fired["source_drop"] = acc_a < acc_s - max_source_drop
    if fired["source_drop"]:
        reasons.append(
            f"adaptation cost {100 * (acc_s - acc_a):.1f} points of source-validation accuracy "
            f"({100 * acc_s:.1f}% -> {100 * acc_a:.1f}%; more than {100 * max_source_drop:.0f} allowed)"
        )
    gap = feature_gaps(source_only, adapted, max_samples=gap_samples, num_permutations=gap_permutations)
    if gap is not None:
        numbers["gap"] = gap
        mmd_s, mmd_a = gap["source-only"]["mmd2"], gap["adapted"]["mmd2"]
        fired["gap"] = mmd_a["value"] > mmd_s["value"] and mmd_a["p_value"] < (gap_alpha or 0.05)
        if gap_alpha is not None and fired["gap"]:
            reasons.append(
                f"adaptation widened the domain gap: MMD² {mmd_s['value']:.4f} on the source-only features -> "
                f"{mmd_a['value']:.4f} on the adapted ones (p = {mmd_a['p_value']:.3f})"
            )
    # measured at 0.1 when the rule is off, as the gap is: recorded so the rule can be re-judged, never acted on
    absent = absent_classes(source_only, adapted, absent_weight if absent_weight is not None else 0.1)
    numbers["absent_classes"] = absent
    fired["absent"] = bool(absent["classes"]) and absent["adapted_share"] > max(absent["limit"],
                                                                                 absent["source_only_share"])
    if absent_weight is not None and fired["absent"]:
        reasons.append(
            f"adaptation put {100 * absent['adapted_share']:.1f}% of the target into classes "
            f"{absent['classes']} that the source-only model finds absent from it (source-only: "
            f"{100 * absent['source_only_share']:.1f}%; one present class's even share: "
            f"{100 * absent['limit']:.1f}%)"
        )
    if flip_check:
        flips = confident_flips(source_only.target_logits, adapted.target_logits)
        atc, doc = atc_error(source_only), doc_error(source_only)
        error = atc if error_estimate == "atc" else max(atc, doc)  # target_error_estimate, from the two at hand
        numbers["sure_half"] = {"relabelled": flips, "source_only_error_estimate": error, "atc": atc, "doc": doc}
        fired["flips"] = flips > error
        if fired["flips"]:
            reasons.append(
                f"adaptation relabelled {100 * flips:.1f}% of the target half the source-only model is surest of, "
                f"more than that model's estimated error on the whole target ({100 * error:.1f}%: the larger of "
                f"ATC's {100 * atc:.1f}% and DoC's {100 * doc:.1f}%)"
            )
    if validator is not None:
        fn = VALIDATORS[validator][0]
        v_s, v_a = fn(source_only), fn(adapted)
        numbers["validator"] = {"name": validator, "source-only": v_s, "adapted": v_a}
        fired["validator"] = v_a < v_s
        if fired["validator"]:
            reasons.append(f"validator {validator} scores the adapted model lower ({v_a:.4g} < {v_s:.4g})")
    numbers["rules"] = fired
    return GuardDecision("source-only" if reasons else "adapted", reasons, numbers)


def absent_classes(source_only: Candidate, adapted: Candidate, absent_weight: float = 0.1) -> dict[str, Any]:
    """Which classes the target seems to lack (by the source-only model's mean prediction) and how much of the
    target each model assigns to them."""
    weights = softmax(source_only.target_logits).mean(0)
    weights = weights / weights.max()
    absent = weights < absent_weight
    present = int((~absent).sum())
    return {
        "classes": [int(c) for c in np.flatnonzero(absent)],
        "class_weights": [round(float(w), 4) for w in weights],
        "source_only_share": float(absent[source_only.target_logits.argmax(1)].mean()),
        "adapted_share": float(absent[np.asarray(adapted.target_logits).argmax(1)].mean()),
        "limit": 1.0 / present,
    }


def feature_gaps(
    source_only: Candidate, adapted: Candidate, *, max_samples: int = 500, num_permutations: int = 200,
) -> dict[str, dict[str, dict[str, Any]]] | None:
    """MMD² (with its permutation p-value) and proxy A-distance between source-val and target features, on
    each model's own features: the gap before (source-only) and after adaptation. None without features."""
    if any(c.source_val_features is None or c.target_features is None for c in (source_only, adapted)):
        return None
    smaller = min(len(source_only.source_val_features), len(source_only.target_features))
    measures = ["mmd2", "proxy_a"] if smaller >= 10 else ["mmd2"]  # a 5-fold classifier needs a few per fold
    return {
        c.name: {g.name: {"value": g.value, "p_value": g.p_value, "samples": g.samples}
                 for g in measure_gap(c.source_val_features, c.target_features, measures=measures,
                                      max_samples=max_samples, num_permutations=num_permutations)}
        for c in (source_only, adapted)
    }


def atc_error(c: Candidate) -> float:
    """ATC's estimate of a model's target error (Garg et al., ICLR 2022; max-softmax score): the threshold
    under which the share of source-validation items equals the source-validation error; the share of target
    items under it. Trustworthy for a model that never trained on the target (the source-only one)."""
    val = softmax(np.asarray(c.source_val_logits))
    labels = np.asarray(c.source_val_labels)
    error = float((val.argmax(1) != labels).mean())
    threshold = np.quantile(val.max(1), error)
    return float((softmax(np.asarray(c.target_logits)).max(1) < threshold).mean())


def doc_error(c: Candidate) -> float:
    """DoC's estimate of a model's target error (Guillory et al., "Predicting with Confidence on Unseen
    Distributions", ICCV 2021): its source-validation error plus the drop in mean max-softmax confidence from the
    source-validation items to the target items. Where the source validation is small and the model right on all
    of it, ATC's threshold sits at the least confident validation item and its estimate falls towards 0 however far
    the target shifted; the confidence drop still sees the shift."""
    val = softmax(np.asarray(c.source_val_logits))
    error = float((val.argmax(1) != np.asarray(c.source_val_labels)).mean())
    drop = float(val.max(1).mean() - softmax(np.asarray(c.target_logits)).max(1).mean())
    return float(np.clip(error + drop, 0.0, 1.0))


def target_error_estimate(c: Candidate) -> float:
    """The sure-answers rule's estimate of the source-only model's target error: the larger of ATC's and DoC's.
    Both tend to underestimate it under shift (ATC the more with a few validation items the model gets right), so
    the rule overwrites nothing unless adaptation relabels more of the surest half than either estimate allows."""
    return max(atc_error(c), doc_error(c))


def confident_flips(source_only_logits: np.ndarray, adapted_logits: np.ndarray, share: float = 0.5) -> float:
    """Share of the ``share`` of target items the source-only model is most confident about that the adapted
    model labels differently."""
    ps = softmax(source_only_logits)
    conf = ps.max(1)
    k = max(1, round(share * len(conf)))
    top = np.argsort(-conf, kind="stable")[:k]
    return float((ps[top].argmax(1) != np.asarray(adapted_logits)[top].argmax(1)).mean())


# validators that weigh the source by a domain classifier's density ratio (a fit of seconds per candidate)
IMPORTANCE_WEIGHTED = ("iwcv", "dev")


def guard_signals(
    source_only: Candidate, adapted: Candidate, *, max_items: int = 2000, seed: int = 0, importance: bool = True,
) -> dict[str, Any]:
    """Label-free numbers that compare the two models (recorded with the decision; not all are used by it).

    ``agreement``: share of target items both models label alike; ``confident_flips``: for the 10, 25, 50 and
    75% of the target the source-only model is surest of, the share adaptation relabels (on USPS->MNIST DANN
    relabels 10% of the surest half and gains 21 points, so no limit on it is part of the rule);
    ``weighted_source_accuracy``:
    source-validation accuracy with each item weighted by how target-like it looks *to the source-only model*
    (one set of weights for both models, so the comparison is paired); and every validator that the
    candidates' arrays allow. ``importance=False`` leaves out the numbers that need a domain classifier per
    candidate (``weighted_source_accuracy`` and :data:`IMPORTANCE_WEIGHTED`): a guarded run that uses none of them
    does not pay their seconds.
    """
    ys, ya = source_only.target_logits.argmax(1), adapted.target_logits.argmax(1)
    out: dict[str, Any] = {
        "agreement": float((ys == ya).mean()),
        "confident_flips": {f"top_{q:g}": confident_flips(source_only.target_logits, adapted.target_logits, q)
                            for q in (0.1, 0.25, 0.5, 0.75)},
    }
    # One subsample per candidate for every number below: the importance-weighted validators (IWCV, DEV) and the
    # weighted source accuracy then share one domain classifier per candidate (each fit takes seconds on 500-d
    # features of well-separated domains) instead of fitting one per number.
    subs = (subsampled(source_only, max_items, seed), subsampled(adapted, max_items, seed))
    if (importance and source_only.source_train_features is not None and source_only.source_val_labels is not None
            and source_only.source_val_features is not None and source_only.target_features is not None):
        w = importance_weights(subs[0])
        labels = np.asarray(source_only.source_val_labels)
        out["weighted_source_accuracy"] = {
            c.name: float((w * (c.source_val_logits.argmax(1) == labels)).sum() / w.sum())
            for c in (source_only, adapted)
        }
        out["weights_effective_share"] = float(w.sum() ** 2 / (w ** 2).sum() / len(w))
    for name, (fn, _) in VALIDATORS.items():
        if name in IMPORTANCE_WEIGHTED and not importance:
            continue
        try:
            out[name] = {c.name: fn(sub) for c, sub in zip((source_only, adapted), subs, strict=True)}
        except DataError:  # a validator whose inputs are missing is simply not reported
            continue
    return out


def subsampled(c: Candidate, max_items: int, seed: int) -> Candidate:
    """``c`` with at most ``max_items`` target items (SND is quadratic in them)."""
    from dataclasses import replace

    n = len(c.target_logits)
    idx = np.arange(n) if n <= max_items else np.random.default_rng(seed).choice(n, max_items, replace=False)
    tf = c.target_features[idx] if c.target_features is not None else None
    sf = c.source_train_features
    if sf is not None and len(sf) > max_items:
        sf = sf[np.random.default_rng(seed + 1).choice(len(sf), max_items, replace=False)]
    return replace(c, target_logits=c.target_logits[idx], target_features=tf, source_train_features=sf)

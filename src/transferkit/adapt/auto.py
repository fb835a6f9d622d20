"""``adapt.method: auto``: try a small fixed set of adaptation methods and keep what label-free validation prefers.

No adaptation method wins everywhere, and which one helps (and at all) depends on the data; the target labels
that would say so are what the user does not have. ``auto`` therefore trains, from the same seed:

1. the **source-only** model, once: the reference every candidate is compared with, and a candidate itself;
2. each method of ``adapt.auto_methods`` (default DAN and MCC: a feature-statistics and a class-confusion
   method, each at its own default λ) that the model allows (a feature-alignment method needs trainable
   features: not a linear probe without a bottleneck). DANN was a third default until the defaults suite showed
   it matching DAN's accuracy on every family at three times its cost (docs/defaults.md).

With ``adapt.auto_warm_start`` (the default), each adapted candidate starts from the trained source-only model
(:func:`warm_start`) and trains half as many steps: the adaptation fine-tunes a converged source model, as most
adaptation papers do. On the defaults suite's 16 cells this gained 1.3 points of auto's mean, left no task more
than 1 point below source-only (from scratch: three, down to −6.0) and cut auto's median cost from 5.0x to 3.8x
one source-only run on feature vectors (docs/defaults.md). ``false`` trains every candidate from scratch for the
source-only run's number of steps.

Each adapted candidate then passes the negative-transfer guard against the source-only model
(:mod:`transferkit.measure.guard`; with ``adapt.guard`` off, only the collapse check), and the survivors and the
source-only model are scored by one label-free validator (``adapt.auto_validator``,
:data:`~transferkit.measure.selection.VALIDATORS`). :func:`choose` keeps the best score; target labels, where the
target has them, score every candidate for the report and decide nothing.

Example:
    >>> import numpy as np
    >>> from transferkit.measure.selection import Candidate
    >>> y = np.arange(40) % 4
    >>> plain = Candidate("source-only", np.eye(4)[y] * 2, np.eye(4)[y] * 5, y)
    >>> sharp = Candidate("mcc", np.eye(4)[y] * 6, np.eye(4)[y] * 5, y)
    >>> choose(plain, {"mcc": sharp}, {"mcc": []}, "entropy").chosen
    'mcc'
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from transferkit.adapt.methods import list_methods
from transferkit.measure.guard import subsampled
from transferkit.measure.selection import VALIDATORS, Candidate, softmax

SOURCE_ONLY = "source-only"
ENSV = "ensv"  # agreement with the candidates' ensemble: needs every candidate, so not one of VALIDATORS


@dataclass
class AutoChoice:
    chosen: str
    validator: str
    scores: dict[str, float]  # every candidate that was scored (source-only and those not rejected)
    rejected: dict[str, list[str]]  # candidate -> why the guard (or the collapse check) rejected it
    why: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def trainable_methods(methods: list[str], *, frozen_features: bool) -> dict[str, str]:
    """``{method: reason}`` for each method of ``methods`` that cannot train with this model: a feature-alignment
    method on frozen features."""
    return {name: "aligns features, which a linear probe without model.bottleneck_dim keeps frozen"
            for name in methods if list_methods()[name].aligns_features and frozen_features}


def warm_start(candidate: Any, source_only: Any) -> list[str]:
    """Copy into ``candidate`` every parameter and buffer of the trained ``source_only`` model that has the same name
    and shape (the backbone always; the head where no bottleneck of the candidate's own changes its input), so an
    adapted candidate starts where source-only training ended. Returns the names left at their initial values."""
    own = candidate.state_dict()
    theirs = source_only.state_dict()
    fits = {k: v for k, v in theirs.items() if k in own and own[k].shape == v.shape}
    candidate.load_state_dict(fits, strict=False)
    return sorted(k for k in own if k not in fits)


def ensemble_agreement(candidates: dict[str, Candidate]) -> dict[str, float]:
    """EnsV (Hu et al., "Towards Reliable Model Selection for Unsupervised Domain Adaptation", 2024): the share
    of target items on which each candidate agrees with the ensemble of all of them (mean softmax). The ensemble
    is rarely worse than its members, so agreeing with it is a label-free stand-in for target accuracy that no
    single method's own objective (confidence, alignment) can game."""
    probs = {name: softmax(np.asarray(c.target_logits)) for name, c in candidates.items()}
    pseudo = np.mean(list(probs.values()), axis=0).argmax(1)
    return {name: float((p.argmax(1) == pseudo).mean()) for name, p in probs.items()}


def choose(source_only: Candidate, adapted: dict[str, Candidate], rejections: dict[str, list[str]],
           validator: str) -> AutoChoice:
    """The best-scoring of source-only and the adapted candidates that ``rejections`` leaves (an empty list of
    reasons: kept); a tie keeps source-only, the candidate that assumes nothing about the target. ``validator``
    is one of :data:`~transferkit.measure.selection.VALIDATORS` or ``ensv`` (:func:`ensemble_agreement` among
    source-only and the kept candidates)."""
    rejected = {name: reasons for name, reasons in rejections.items() if reasons}
    pool = {SOURCE_ONLY: source_only, **{n: c for n, c in adapted.items() if n not in rejected}}
    if validator == ENSV:
        scores = ensemble_agreement(pool)
    else:  # on at most 2,000 target items, as the guard's signals (SND is quadratic)
        scores = {name: VALIDATORS[validator][0](subsampled(c, 2000, 0)) for name, c in pool.items()}
    best = max(scores, key=lambda n: (scores[n], n == SOURCE_ONLY))
    if best == SOURCE_ONLY:
        why = ("no adapted candidate passed the guard" if len(scores) == 1 else
               f"{validator} scores source-only at least as high as every adapted candidate that passed the guard")
    else:
        why = f"{validator} scores {best} highest of source-only and the adapted candidates that passed the guard"
    return AutoChoice(best, validator, scores, rejected, why)

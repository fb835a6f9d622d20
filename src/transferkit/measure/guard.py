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
3. **Validator** (off by default: ``validator=None``): a label-free validator from
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

from transferkit.measure.selection import VALIDATORS, Candidate, collapse_check, source_accuracy


@dataclass
class GuardDecision:
    keep: str  # "adapted" or "source-only"
    reasons: list[str]
    numbers: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def guard_decision(
    source_only: Candidate, adapted: Candidate, *, max_source_drop: float = 0.05, validator: str | None = None,
) -> GuardDecision:
    """Apply the rule of the module docstring to two candidates (both need target and source-val logits)."""
    reasons = []
    col_s, col_a = collapse_check(source_only.target_logits), collapse_check(adapted.target_logits)
    acc_s, acc_a = source_accuracy(source_only), source_accuracy(adapted)
    numbers: dict[str, Any] = {
        "source_val_accuracy": {"source-only": acc_s, "adapted": acc_a},
        "collapse": {"source-only": asdict(col_s), "adapted": asdict(col_a)},
        "max_source_drop": max_source_drop,
    }
    if col_a.collapsed and not col_s.collapsed:
        reasons.append(f"the adapted model's target predictions collapsed ({col_a.reason})")
    if acc_a < acc_s - max_source_drop:
        reasons.append(
            f"adaptation cost {100 * (acc_s - acc_a):.1f} points of source-validation accuracy "
            f"({100 * acc_s:.1f}% -> {100 * acc_a:.1f}%; more than {100 * max_source_drop:.0f} allowed)"
        )
    if validator is not None:
        fn = VALIDATORS[validator][0]
        v_s, v_a = fn(source_only), fn(adapted)
        numbers["validator"] = {"name": validator, "source-only": v_s, "adapted": v_a}
        if v_a < v_s:
            reasons.append(f"validator {validator} scores the adapted model lower ({v_a:.4g} < {v_s:.4g})")
    return GuardDecision("source-only" if reasons else "adapted", reasons, numbers)

"""Learning-rate and loss-weight (λ) schedules as pure functions of training progress.

``progress`` runs from 0 at the first optimizer step to 1 at the last, so a schedule means the same thing
whatever the epoch count or batch size.
"""

from __future__ import annotations

import math
from collections.abc import Callable

LrLambda = Callable[[int], float]


def lr_multiplier(kind: str, total_steps: int, warmup_steps: int = 0) -> LrLambda:
    """A LambdaLR factor: linear warm-up over ``warmup_steps``, then ``cosine``, ``step`` or ``constant``.

    ``step`` divides by 10 at half and again at three quarters of training.

    Example:
        >>> f = lr_multiplier("cosine", total_steps=10)
        >>> round(f(0), 3), round(f(5), 3), round(f(10), 3)
        (1.0, 0.5, 0.0)
    """
    total = max(1, int(total_steps))
    warm = max(0, min(int(warmup_steps), total - 1))

    def factor(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(1, total - warm)
        t = min(max(t, 0.0), 1.0)
        if kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * t))
        if kind == "step":
            return 1.0 if t < 0.5 else (0.1 if t < 0.75 else 0.01)
        if kind == "constant":
            return 1.0
        raise ValueError(f"unknown scheduler {kind!r}")

    return factor


def constant(value: float) -> Callable[[float], float]:
    """λ(p) = value."""
    return lambda progress: value


def dann_ramp(max_value: float = 1.0, gamma: float = 10.0) -> Callable[[float], float]:
    """λ(p) = max · (2 / (1 + exp(-γ p)) - 1): the warm-up of Ganin & Lempitsky (2015), 0 at p=0, → max."""
    return lambda progress: max_value * (2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0)

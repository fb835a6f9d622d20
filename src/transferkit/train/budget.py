"""How long a fit trains: a budget counted in optimiser steps, not epochs, when the user does not say.

Ten epochs mean 30 optimiser steps on a source of 157 items and 9,000 on MNIST: the first stops far from
trained, which is where transfer learning is used most (little labelled data). So by default the number of
steps follows the data within a floor and a ceiling:

    steps = clip(EPOCHS_WORTH x (batches in one pass over the source), floor, ceiling)

with a lower floor and ceiling for backbones whose step is expensive (many trainable parameters): a CPU user
fine-tuning a pretrained network on 150 images should not wait an hour by default. The steps are cut into at
most :data:`MAX_EPOCHS` epochs (validation, checkpoint and the learning curves happen once per epoch), each at
least one pass over the data: a small source is passed over several times per epoch.

``train.steps`` or ``train.epochs`` set the length themselves and win over the rule. The guard's source-only twin
is given the step count its adapted run trained, so the two compare equal budgets.

Example:
    >>> plan_budget(epochs=None, steps=None, source_batches=1, run_batches=1).describe()
    '500 steps in 20 epochs of 25 (auto: 20 passes over the source, at least 500 steps)'
    >>> plan_budget(epochs=3, steps=None, source_batches=10, run_batches=12).total
    36
"""

from __future__ import annotations

import math
from dataclasses import dataclass

EPOCHS_WORTH = 20  # passes over the source the automatic budget aims for...
FLOOR, CEILING = 500, 5000  # ...within these bounds (optimiser steps)
HEAVY_PARAMETERS = 5_000_000  # trainable parameters above which a step is costly (a pretrained network)
HEAVY_FLOOR, HEAVY_CEILING = 200, 2000
MAX_EPOCHS = 20  # epochs the automatic budget is cut into


@dataclass(frozen=True)
class Budget:
    """``total`` micro-batch steps in ``epochs`` epochs of ``epoch_len`` (the last one may be shorter)."""

    total: int
    epoch_len: int
    epochs: int
    rule: str

    def epoch_steps(self, epoch: int) -> int:
        return max(0, min(self.epoch_len, self.total - epoch * self.epoch_len))

    def describe(self) -> str:
        return f"{self.total} steps in {self.epochs} epochs of {self.epoch_len} ({self.rule})"


def plan_budget(
    *, epochs: int | None, steps: int | None, source_batches: int, run_batches: int, grad_accum_steps: int = 1,
    trainable_parameters: int = 0,
) -> Budget:
    """The budget of one fit.

    Args:
        epochs, steps: ``train.epochs`` / ``train.steps`` (None: not set). ``steps`` counts optimiser steps.
        source_batches: batches in one pass over the labelled source: what the automatic rule scales with, so that
            an adapted run and its source-only twin get the same length.
        run_batches: batches in one pass over this fit's longest loader (an epoch lasts at least that long).
        grad_accum_steps: micro-batches per optimiser step.
        trainable_parameters: sets the floor and ceiling of the automatic rule (:data:`HEAVY_PARAMETERS`).
    """
    run_batches, accum = max(1, run_batches), max(1, grad_accum_steps)
    if steps is not None:
        total = steps * accum
        epoch_len = max(run_batches, math.ceil(total / MAX_EPOCHS))
        return Budget(total, epoch_len, math.ceil(total / epoch_len), "train.steps")
    if epochs is not None:
        return Budget(epochs * run_batches, run_batches, epochs, "train.epochs")
    heavy = trainable_parameters > HEAVY_PARAMETERS
    floor, ceiling = (HEAVY_FLOOR, HEAVY_CEILING) if heavy else (FLOOR, CEILING)
    optimiser_steps = min(max(EPOCHS_WORTH * math.ceil(max(1, source_batches) / accum), floor), ceiling)
    total = optimiser_steps * accum
    epoch_len = max(run_batches, math.ceil(total / MAX_EPOCHS))
    rule = (f"auto: {EPOCHS_WORTH} passes over the source, at least {floor} steps" if optimiser_steps == floor
            else f"auto: {EPOCHS_WORTH} passes over the source, at most {ceiling} steps" if optimiser_steps == ceiling
            else f"auto: {EPOCHS_WORTH} passes over the source")
    if heavy:
        rule += f" (a backbone of over {HEAVY_PARAMETERS // 1_000_000}M trainable parameters)"
    return Budget(total, epoch_len, math.ceil(total / epoch_len), rule)

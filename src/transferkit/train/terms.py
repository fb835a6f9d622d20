"""What a training step hands to its loss: :class:`StepOutputs`, and the named, weighted :class:`LossTerm`s that
sum to ``L = Σ_i λ_i(p) · L_i`` (the source and target cross-entropies here; adaptation methods, task heads and
regularisers build their own).

Kept apart from the engine so that the modules that define terms (``adapt.methods``, ``finetune``) do not import
the training loop, and the loop does not import them back. ``LossTerm`` itself is defined in :mod:`transferkit.tasks`
(the task heads build terms, and ``tasks`` sits below ``train`` in the layers) and re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from transferkit.errors import ConfigError
from transferkit.tasks import LossTerm as LossTerm  # defined beside the task heads' terms, below both


@dataclass
class StepOutputs:
    """What one step computed: the inputs of every loss term."""

    source_features: torch.Tensor
    source_logits: torch.Tensor
    source_labels: torch.Tensor
    target_features: torch.Tensor | None
    target_logits: torch.Tensor | None
    progress: float
    target_inputs: torch.Tensor | None = None
    model: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None  # for terms needing more views
    # a few labelled target items (joint or semi-supervised training): their features, logits and labels
    labelled_features: torch.Tensor | None = None
    labelled_logits: torch.Tensor | None = None
    labelled_labels: torch.Tensor | None = None
    # every task head's outputs on the source batch and their targets, by task name (transferkit.tasks)
    source_heads: dict[str, torch.Tensor] | None = None
    source_targets: dict[str, torch.Tensor] | None = None
    # several sources: each source item's source index (0..k-1) and its weight (data.source_weighting)
    source_domains: torch.Tensor | None = None
    source_weights: torch.Tensor | None = None


def target_cross_entropy(weight: float | Callable[[float], float] = 1.0, label_smoothing: float = 0.0) -> LossTerm:
    """L_t of ``L = L_s + λ·L_t``: cross-entropy on the batch of labelled target items (``fit(labelled_target=)``)."""

    def fn(out: StepOutputs) -> torch.Tensor:
        if out.labelled_logits is None or out.labelled_labels is None:
            raise ConfigError("the target cross-entropy needs labelled target items (data.target_labels_per_class)")
        return F.cross_entropy(out.labelled_logits, out.labelled_labels, label_smoothing=label_smoothing)

    return LossTerm("target_ce", fn, weight, global_batch=False)


def source_cross_entropy(label_smoothing: float = 0.0) -> LossTerm:
    """The supervised term: cross-entropy on the labelled source batch (a mean over items: each process takes its
    own share, and DDP's averaging of the gradients gives the global mean). With weighted sources
    (``out.source_weights``), a weighted mean."""

    def fn(out: StepOutputs) -> torch.Tensor:
        # No check for unlabelled items here (it would read a GPU tensor back every step): a DomainDataset's labels
        # lie in [0, classes) and Engine.fit refuses an unlabelled training set.
        if out.source_weights is None:
            return F.cross_entropy(out.source_logits, out.source_labels, label_smoothing=label_smoothing)
        ce = F.cross_entropy(out.source_logits, out.source_labels, label_smoothing=label_smoothing, reduction="none")
        return (ce * out.source_weights).sum() / out.source_weights.sum()

    return LossTerm("source_ce", fn, global_batch=False)

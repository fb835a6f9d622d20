"""Regularised fine-tuning: keep what the pre-trained backbone knew while a few labels move it.

With few labelled items, plain fine-tuning drifts far from the pre-trained weights and forgets what made them
worth starting from. Two classic remedies, each a loss term added to the supervised loss
(``finetune.regularizers``):

- **L2-SP** (Li, Grandvalet & Davoine, "Explicit Inductive Bias for Transfer Learning with Convolutional
  Networks", ICML 2018): ``α/2 · ||w_backbone − w⁰||² + β/2 · ||w_head||²``: weight decay towards the *starting
  point* ``w⁰`` (the pre-trained weights, or ``--init-from``'s) instead of towards zero, and plain decay on the
  new head, which has no starting point worth keeping. The paper's defaults: α = 0.01 (0.1 for small data),
  β = 0.01.
- **BSS** (Chen et al., "Catastrophic Forgetting Meets Negative Transfer: Batch Spectral Shrinkage for Safe
  Transfer Learning", NeurIPS 2019): ``η · Σᵢ σ²_{-i}``, the ``k`` smallest squared singular values of the
  batch's feature matrix. Fine-tuning on little data inflates the weak spectral components of the features that
  carry no transferable knowledge; shrinking them counters that negative transfer. The paper's defaults:
  η = 0.001, k = 1.

Example:
    >>> import torch
    >>> from torch import nn
    >>> backbone, head = nn.Linear(3, 2), nn.Linear(2, 2)
    >>> term = l2_sp(backbone, head, alpha=0.5, beta=0.0)
    >>> float(term.fn(None))  # nothing has moved yet
    0.0
    >>> with torch.no_grad():
    ...     _ = backbone.weight.add_(1.0)
    >>> float(term.fn(None))  # 6 weights each 1 away: 0.5/2 * 6
    1.5
"""

from __future__ import annotations

import torch
from torch import nn

from transferkit.train.terms import LossTerm, StepOutputs


def l2_sp(backbone: nn.Module, head: nn.Module, *, alpha: float = 0.01, beta: float = 0.01) -> LossTerm:
    """L2-SP: squared distance of the backbone's trainable weights from their values now (the starting point),
    plus plain L2 on the head's trainable weights."""
    start = {name: p.detach().clone() for name, p in backbone.named_parameters() if p.requires_grad}
    named = dict(backbone.named_parameters())
    head_params = [p for p in head.parameters() if p.requires_grad]

    def fn(_: StepOutputs | None) -> torch.Tensor:
        total = torch.zeros((), device=head_params[0].device if head_params else None)
        for n, w0 in start.items():
            if w0.device != named[n].device:  # the model moved to its device after the snapshot: follow it once
                start[n] = w0 = w0.to(named[n].device)
            total = total + 0.5 * alpha * ((named[n] - w0) ** 2).sum()
        for p in head_params:
            total = total + 0.5 * beta * (p ** 2).sum()
        return total

    # a sum over weights, the same in every process: DDP's gradient averaging keeps it exact
    return LossTerm("l2_sp", fn, 1.0, global_batch=False)


def batch_spectral_shrinkage(features: torch.Tensor, k: int = 1) -> torch.Tensor:
    """``Σᵢ σ²_{-i}``: the sum of the ``k`` smallest squared singular values of the (items x dims) batch."""
    sigma = torch.linalg.svdvals(features.float())
    k = min(k, sigma.numel())
    return (sigma[sigma.numel() - k:] ** 2).sum()


def bss(weight: float = 0.001, k: int = 1) -> LossTerm:
    """BSS on the source batch's features (and the labelled target batch's, when there is one)."""

    def fn(out: StepOutputs) -> torch.Tensor:
        loss = batch_spectral_shrinkage(out.source_features, k)
        if out.labelled_features is not None and len(out.labelled_features) > 1:
            loss = loss + batch_spectral_shrinkage(out.labelled_features, k)
        return loss

    return LossTerm("bss", fn, weight)

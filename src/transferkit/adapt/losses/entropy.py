"""Prediction-based target losses: entropy minimisation, BNM, MCC and stepwise adaptive feature norm.

All take target logits (or features) of one batch; none needs target labels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Per-sample Shannon entropy (nats) of ``softmax(logits)``: ``(N, C) -> (N,)``."""
    logp = F.log_softmax(logits, dim=1)
    return -(logp.exp() * logp).sum(1)


def entropy_loss(logits: torch.Tensor) -> torch.Tensor:
    """Mean target entropy (Grandvalet & Bengio, 2005): pushes decision boundaries away from target data."""
    return entropy(logits).mean()


def bnm_loss(logits: torch.Tensor) -> torch.Tensor:
    """Batch nuclear-norm maximisation (Cui et al., CVPR 2020): ``-||softmax(Z)||_* / N``.

    A large nuclear norm means confident *and* diverse predictions, so it avoids the collapse that plain
    entropy minimisation invites.
    """
    p = logits.softmax(1)
    return -torch.linalg.svdvals(p).sum() / p.shape[0]


def mcc_loss(logits: torch.Tensor, temperature: float = 2.5) -> torch.Tensor:
    """Minimum class confusion (Jin et al., ECCV 2020).

    Class correlations ``C = Ŷᵀ W Ŷ`` of temperature-scaled target predictions, with certain samples weighted
    up (``W ∝ 1 + exp(-H)``), rows normalised; the loss is the off-diagonal mass averaged over classes.
    """
    n, c = logits.shape
    p = (logits / temperature).softmax(1)
    h = entropy(logits / temperature).detach()
    w = 1.0 + torch.exp(-h)
    w = n * w / w.sum()
    conf = (p * w.unsqueeze(1)).T @ p
    conf = conf / conf.sum(1, keepdim=True).clamp_min(1e-12)
    return (conf.sum() - conf.trace()) / c


def afn_loss(features: torch.Tensor, delta: float = 1.0) -> torch.Tensor:
    """Stepwise adaptive feature norm (Xu et al., ICCV 2019): ``mean((||f||.detach() + Δr - ||f||)²)``.

    Each step asks for norms ``Δr`` larger than now: larger-norm features transfer better.
    """
    norm = features.norm(p=2, dim=1)
    return (norm.detach() + delta - norm).pow(2).mean()

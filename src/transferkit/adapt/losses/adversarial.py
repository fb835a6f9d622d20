r"""Adversarial alignment: gradient reversal, DANN, CDAN(+E) and MDD losses.

A discriminator ``D`` tells source from target features while the feature extractor, through a gradient
reversal layer, learns to fool it. The reversal coefficient is an argument here; its schedule
(``λ_p = 2/(1+exp(-10 p)) - 1``) belongs to the method, which reads training progress from the engine.

References: Ganin et al., "Domain-Adversarial Training of Neural Networks", JMLR 2016; Long et al.,
"Conditional Adversarial Domain Adaptation", NeurIPS 2018; Zhang et al., "Bridging Theory and Algorithm
for Domain Adaptation" (MDD), ICML 2019.

Example:
    >>> import torch
    >>> x = torch.ones(3, requires_grad=True)
    >>> grad_reverse(x, 0.5).sum().backward()
    >>> x.grad.tolist()
    [-0.5, -0.5, -0.5]
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from transferkit.adapt.losses.entropy import entropy


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, coeff: float) -> torch.Tensor:
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.coeff * grad, None


def grad_reverse(x: torch.Tensor, coeff: float = 1.0) -> torch.Tensor:
    """Identity forward; multiplies the gradient by ``-coeff`` backward."""
    return _GradReverse.apply(x, coeff)


def domain_bce(
    d_source: torch.Tensor, d_target: torch.Tensor, w_source: torch.Tensor | None = None,
    w_target: torch.Tensor | None = None,
) -> torch.Tensor:
    """Binary cross-entropy of discriminator logits, source = 1 and target = 0, averaged over both domains."""
    ls = F.binary_cross_entropy_with_logits(d_source.view(-1), torch.ones_like(d_source.view(-1)), reduction="none")
    lt = F.binary_cross_entropy_with_logits(d_target.view(-1), torch.zeros_like(d_target.view(-1)), reduction="none")
    if w_source is not None:
        ls = ls * w_source
    if w_target is not None:
        lt = lt * w_target
    return 0.5 * (ls.mean() + lt.mean())


def domain_accuracy(d_source: torch.Tensor, d_target: torch.Tensor) -> float:
    """How often the discriminator is right (0.5 = features indistinguishable)."""
    right = (d_source.view(-1) > 0).float().sum() + (d_target.view(-1) <= 0).float().sum()
    return float(right / (d_source.numel() + d_target.numel()))


def multilinear_map(features: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """``f ⊗ g`` flattened: ``(N, D), (N, C) -> (N, D·C)`` (CDAN's conditioning)."""
    return torch.bmm(probs.unsqueeze(2), features.unsqueeze(1)).flatten(1)


class RandomizedMultilinearMap(nn.Module):
    """``(R_f f) ⊙ (R_g g) / sqrt(d)`` with fixed Gaussian ``R``: an unbiased, ``d``-dimensional stand-in for
    ``f ⊗ g`` when ``D·C`` is too large (CDAN §3.2)."""

    def __init__(self, feature_dim: int, num_classes: int, output_dim: int = 1024, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("rf", torch.randn(feature_dim, output_dim, generator=g))
        self.register_buffer("rg", torch.randn(num_classes, output_dim, generator=g))
        self.output_dim = output_dim

    def forward(self, features: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        return (features @ self.rf) * (probs @ self.rg) / math.sqrt(self.output_dim)


def entropy_weights(logits: torch.Tensor) -> torch.Tensor:
    """CDAN+E weights ``1 + exp(-H(g))``, normalised to mean 1 within the batch (certain samples count more)."""
    w = 1.0 + torch.exp(-entropy(logits.detach()))
    return w / w.mean()


def mdd_loss(
    logits_s: torch.Tensor, adv_logits_s: torch.Tensor, logits_t: torch.Tensor, adv_logits_t: torch.Tensor,
    margin: float = 4.0,
) -> torch.Tensor:
    """Margin disparity discrepancy as a loss to *minimise*, with the adversarial head behind a GRL.

    ``γ · CE(h'(f_s), ŷ_s) - E_t[log(1 - softmax(h'(f_t))[ŷ_t])]`` with ``ŷ`` the main head's predictions: the
    adversary ``h'`` minimises it (agree with ``h`` on the source, disagree on the target, i.e. it maximises
    the disparity ``D_γ``), while the reversed gradient makes the features minimise the disparity.
    """
    pred_s = logits_s.detach().argmax(1)
    pred_t = logits_t.detach().argmax(1)
    source_disparity = F.cross_entropy(adv_logits_s, pred_s)
    p_t = adv_logits_t.softmax(1).gather(1, pred_t.unsqueeze(1)).squeeze(1)
    target_agreement = -torch.log((1.0 - p_t).clamp_min(1e-6)).mean()
    return margin * source_disparity + target_agreement

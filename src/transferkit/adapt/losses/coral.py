r"""Deep CORAL (Sun & Saenko, "Deep CORAL: Correlation Alignment for Deep Domain Adaptation", ECCV-W 2016).

.. math:: \ell_{CORAL} = \frac{1}{4d^2}\,\lVert C_S - C_T \rVert_F^2

with ``C`` the (unbiased) feature covariance of a batch and ``d`` the feature width.

Example:
    >>> import torch
    >>> x = torch.randn(32, 3, generator=torch.Generator().manual_seed(0))
    >>> float(coral_loss(x, x + 5.0)) < 1e-12   # a shift leaves the covariance unchanged
    True
"""

from __future__ import annotations

import torch


def covariance(x: torch.Tensor) -> torch.Tensor:
    n = x.shape[0]
    if n < 2:
        raise ValueError("a covariance needs at least 2 samples")
    xc = x - x.mean(0, keepdim=True)
    return xc.T @ xc / (n - 1)


def coral_loss(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    d = source.shape[1]
    diff = covariance(source) - covariance(target)
    return diff.pow(2).sum() / (4.0 * d * d)

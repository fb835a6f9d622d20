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

from transferkit.two_sample import coral_loss as coral_loss  # shared with measure/
from transferkit.two_sample import covariance as covariance

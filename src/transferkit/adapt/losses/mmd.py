r"""Maximum mean discrepancy with a family of Gaussian kernels (DAN) and its joint version (JAN).

.. math::
    \mathrm{MMD}^2(P, Q) = \mathbb{E}\,k(x, x') + \mathbb{E}\,k(y, y') - 2\,\mathbb{E}\,k(x, y),
    \qquad k = \frac{1}{K}\sum_{k} \exp\!\left(-\frac{\lVert a - b\rVert^2}{\sigma_k^2}\right)

The bandwidths are ``σ² = median² · mult^j`` for ``j`` in a symmetric range around 0: the median heuristic
sets the scale from the data (detached, so it is not a path for gradients), the family covers scales a
single guess would miss (Long et al., "Learning Transferable Features with Deep Adaptation Networks", ICML 2015;
Gretton et al., "A Kernel Two-Sample Test", JMLR 2012).

Example:
    >>> import torch
    >>> x = torch.randn(16, 4, generator=torch.Generator().manual_seed(0))
    >>> abs(float(mmd2_unbiased(x, x))) < 1e-6
    True
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

# the bandwidths, the distances and the linear-time estimator are shared with measure/ (transferkit.two_sample)
from transferkit.two_sample import gaussian_bandwidths as gaussian_bandwidths
from transferkit.two_sample import mmd2_linear as mmd2_linear
from transferkit.two_sample import pairwise_sq_dists as pairwise_sq_dists


def multi_gaussian_kernel(z: torch.Tensor, num_kernels: int = 5, mult: float = 2.0) -> torch.Tensor:
    """Mean of Gaussian kernels over the bandwidth family, on all pairs of rows of ``z`` ``(N, D)`` -> ``(N, N)``."""
    sq = pairwise_sq_dists(z, z)
    bw = gaussian_bandwidths(sq, num_kernels, mult)
    return torch.exp(-sq.unsqueeze(0) / bw.view(-1, 1, 1)).mean(0)


def _mmd2_from_kernel(k: torch.Tensor, m: int) -> torch.Tensor:
    n = k.shape[0] - m
    if m < 2 or n < 2:
        raise ValueError(f"the unbiased MMD needs at least 2 samples per domain, got {m} and {n}")
    kxx, kyy, kxy = k[:m, :m], k[m:, m:], k[:m, m:]
    sum_xx = kxx.sum() - kxx.diagonal().sum()
    sum_yy = kyy.sum() - kyy.diagonal().sum()
    # Equal sizes: Gretton et al. (2012), eq. 3, the U-statistic over pairs i != j (zero for identical samples)
    cross = (kxy.sum() - kxy.diagonal().sum()) / (m * (m - 1)) if m == n else kxy.mean()
    return sum_xx / (m * (m - 1)) + sum_yy / (n * (n - 1)) - 2.0 * cross


def mmd2_unbiased(source: torch.Tensor, target: torch.Tensor, num_kernels: int = 5, mult: float = 2.0) -> torch.Tensor:
    """The quadratic-time unbiased estimator of MMD² (can be slightly negative; 0 in expectation if P = Q).

    With equal batch sizes it is Gretton's U-statistic over pairs ``i != j``, exactly 0 for identical samples.
    """
    k = multi_gaussian_kernel(torch.cat([source, target]), num_kernels, mult)
    return _mmd2_from_kernel(k, source.shape[0])


def jmmd2_unbiased(
    source: Sequence[torch.Tensor], target: Sequence[torch.Tensor], num_kernels: int = 5, mult: float = 2.0
) -> torch.Tensor:
    """Joint MMD² (JAN, Long et al. ICML 2017): the kernel is the product of the layers' kernels.

    ``source`` and ``target`` list the same layers, e.g. ``[features, softmax outputs]``.
    """
    if len(source) != len(target) or not source:
        raise ValueError("jmmd needs the same non-empty list of layers for source and target")
    m = source[0].shape[0]
    k = None
    for s, t in zip(source, target, strict=True):
        kl = multi_gaussian_kernel(torch.cat([s, t]), num_kernels, mult)
        k = kl if k is None else k * kl
    assert k is not None
    return _mmd2_from_kernel(k, m)

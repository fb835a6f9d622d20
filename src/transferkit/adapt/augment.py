"""Strong augmentation of a batch of preprocessed images, for FixMatch-style self-training.

FixMatch trains the prediction on a *strongly* augmented view towards the pseudo-label of a *weakly*
augmented one. transferkit's input pipeline is deterministic (it is cached, see
:meth:`~transferkit.data.domain.DomainDataset.precomputed`), so the weak view is the preprocessed image itself
and the strong view is drawn here, on the batch tensor, on the device it already lives on: one random affine
warp, contrast/brightness change and cutout per image, all batched (no per-image Python loop).

Example:
    >>> x = torch.zeros(4, 1, 28, 28)
    >>> strong_augment(x, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([4, 1, 28, 28])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def strong_augment(
    x: torch.Tensor,
    *,
    rotate_deg: float = 25.0,
    translate: float = 0.15,
    scale: tuple[float, float] = (0.85, 1.15),
    shear_deg: float = 15.0,
    jitter: float = 0.4,
    cutout: float = 0.4,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A randomly distorted copy of every image in ``x`` ``(N, C, H, W)``; each image draws its own distortion.

    Magnitudes follow RandAugment's strong end for small images: digits stay legible but move, rotate,
    shear, change contrast and lose a square of side ``cutout·H`` (filled with the image's mean, since the
    inputs are already normalised and 0 is not black).
    """
    if x.ndim != 4:
        raise ValueError(f"strong_augment expects image batches (N, C, H, W), got shape {tuple(x.shape)}")
    n, _, h, w = x.shape
    dev = x.device

    def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return torch.rand(*(shape or (n,)), generator=generator).to(dev) * (hi - lo) + lo

    angle = uniform(-rotate_deg, rotate_deg) * math.pi / 180
    shear = uniform(-shear_deg, shear_deg) * math.pi / 180
    zoom = uniform(*scale)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(n, 2, 3, device=dev, dtype=x.dtype)
    theta[:, 0, 0] = cos / zoom
    theta[:, 0, 1] = (-sin + torch.tan(shear) * cos) / zoom
    theta[:, 1, 0] = sin / zoom
    theta[:, 1, 1] = cos / zoom
    theta[:, :, 2] = uniform(-2 * translate, 2 * translate, n, 2)  # grid units: the image spans [-1, 1]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    out = F.grid_sample(x - mean, grid, padding_mode="zeros", align_corners=False) + mean

    contrast = uniform(1 - jitter, 1 + jitter).view(n, 1, 1, 1)
    brightness = uniform(-jitter, jitter).view(n, 1, 1, 1) * x.std(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * contrast + mean + brightness

    if cutout > 0:
        side = max(1, round(cutout * min(h, w)))
        cy = (uniform(0, 1) * h).long().view(n, 1, 1)
        cx = (uniform(0, 1) * w).long().view(n, 1, 1)
        ys = torch.arange(h, device=dev).view(1, h, 1)
        xs = torch.arange(w, device=dev).view(1, 1, w)
        box = ((ys - cy).abs() <= side // 2) & ((xs - cx).abs() <= side // 2)
        out = torch.where(box.unsqueeze(1), mean, out)
    return out

"""Strong augmentation of image batches: shape, per-image randomness, identity at zero strength."""

import pytest
import torch

from transferkit.adapt.augment import strong_augment


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_each_image_draws_its_own_distortion() -> None:
    x = torch.randn(1, 3, 16, 16).repeat(6, 1, 1, 1)
    out = strong_augment(x, generator=_gen())
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert not torch.allclose(out[0], out[1])  # same input, different draws
    assert torch.equal(out, strong_augment(x, generator=_gen()))  # reproducible under a seeded generator


def test_zero_strength_is_the_identity() -> None:
    x = torch.randn(4, 1, 12, 12)
    out = strong_augment(x, rotate_deg=0, translate=0, scale=(1, 1), shear_deg=0, jitter=0, cutout=0,
                         generator=_gen())
    assert torch.allclose(out, x, atol=1e-5)


def test_cutout_fills_a_square_with_the_image_mean() -> None:
    x = torch.arange(100.0).view(1, 1, 10, 10)
    out = strong_augment(x, rotate_deg=0, translate=0, scale=(1, 1), shear_deg=0, jitter=0, cutout=0.3,
                         generator=_gen(1))
    filled = out == x.mean()
    assert 1 <= int(filled.sum()) <= 9 and torch.allclose(out[~filled], x[~filled], atol=1e-4)


def test_refuses_non_image_batches() -> None:
    with pytest.raises(ValueError, match="image batches"):
        strong_augment(torch.zeros(4, 10))

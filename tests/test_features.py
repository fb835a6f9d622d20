"""Feature extraction: streamed to an .npz equal to the backbone's own output, and cached by content."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from helpers import vector_dataset
from transferkit import features
from transferkit.data.domain import DomainDataset
from transferkit.errors import DataError, ModelError
from transferkit.features import cache_key, cached_features, default_cache_dir, extract_to_npz, load_features
from transferkit.models.backbones import Backbone, create_backbone


def _images(n: int = 11, labelled: bool = True, seed: int = 0) -> DomainDataset:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    y = np.arange(n) % 3 if labelled else None
    return DomainDataset(x, y, "digits", ["zero", "one", "two"], "image")


_books = partial(vector_dataset, d=5, classes=("neg", "pos"), domain="books")  # n standard normal vectors


def _mlp(d: int = 5, seed: int = 0) -> Backbone:
    torch.manual_seed(seed)
    return create_backbone("mlp", in_features=d, hidden=8)


def _direct(backbone: Backbone, ds: DomainDataset) -> np.ndarray:
    """The backbone applied to the whole dataset at once, in eval mode, with its own preprocessing."""
    tf = backbone.transform
    xs = torch.stack([tf(ds.decode(i)) if tf is not None else ds.decode(i) for i in range(len(ds))])
    backbone.eval()
    with torch.no_grad():
        return backbone(xs).numpy()


def test_extract_images_equals_the_backbone_output(tmp_path: Path) -> None:
    torch.manual_seed(0)
    bb = create_backbone("lenet")
    bb.train()  # extraction must use eval mode (dropout off) and put the mode back
    ds = _images(11)
    path = extract_to_npz(bb, ds, tmp_path / "f.npz", batch_size=4, device="cpu", progress=False)  # 4 + 4 + 3
    assert bb.training
    with np.load(path, allow_pickle=False) as z:
        assert z["features"].shape == (11, 500) and z["features"].dtype == np.float32
        assert np.allclose(z["features"], _direct(bb, ds), atol=1e-5)
        assert z["labels"].tolist() == (np.arange(11) % 3).tolist()
        assert z["classes"].tolist() == ["zero", "one", "two"]
        assert str(z["domain"]) == "digits" and str(z["backbone"]) == "lenet"
    assert [p.name for p in tmp_path.iterdir()] == ["f.npz"]  # no temp file left


def test_extract_vectors_unlabelled(tmp_path: Path) -> None:
    bb = _mlp()
    ds = _books(13, labelled=False)
    path = extract_to_npz(bb, ds, tmp_path / "u.npz", batch_size=5, device="cpu", progress=False)
    with np.load(path, allow_pickle=False) as z:
        assert np.allclose(z["features"], _direct(bb, ds), atol=1e-6)
        assert z["labels"].tolist() == [-1] * 13


def test_load_features_round_trip(tmp_path: Path) -> None:
    bb = _mlp()
    ds = _books(9)
    path = extract_to_npz(bb, ds, tmp_path / "f.npz", batch_size=4, device="cpu", progress=False)
    back = load_features(path)
    assert back.kind == "vector" and back.domain == "books" and back.classes == ["neg", "pos"]
    assert np.array_equal(back.labels, ds.labels)
    assert np.allclose(back.inputs, _direct(bb, ds), atol=1e-6)
    assert len(back) == 9 and back[0]["x"].shape == (8,)

    unl = load_features(extract_to_npz(bb, ds.unlabelled(), tmp_path / "u.npz", device="cpu", progress=False))
    assert unl.labels is None and not unl.is_labelled


def test_load_features_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_features(tmp_path / "missing.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"garbage")
    with pytest.raises(DataError, match="is not a transferkit feature file"):
        load_features(junk)
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(DataError, match="is not a transferkit feature file"):
        load_features(tmp_path / "other.npz")


def test_non_finite_features_are_refused_and_leave_no_file(tmp_path: Path) -> None:
    bb = _mlp()
    with torch.no_grad():
        bb.body[0][0].bias.fill_(float("nan"))
    with pytest.raises(DataError, match="produced NaN/Inf features on 'books'"):
        extract_to_npz(bb, _books(13), tmp_path / "nan.npz", device="cpu", progress=False)
    assert list(tmp_path.iterdir()) == []


# -- cache -------------------------------------------------------------------------------------
@pytest.fixture
def spy_extract(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Path]:
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path))
    calls: list[Path] = []
    real = features.extract_to_npz

    def spy(*args: Any, **kwargs: Any) -> Path:
        calls.append(Path(args[2]))
        return real(*args, **kwargs)

    monkeypatch.setattr(features, "extract_to_npz", spy)
    return calls


def test_default_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "features"


def test_cached_features_extracts_once(spy_extract: list[Path], tmp_path: Path) -> None:
    bb, ds = _mlp(), _books(13)
    first = cached_features(bb, ds, device="cpu", progress=False)
    assert len(spy_extract) == 1
    file = spy_extract[0]
    assert file.parent == tmp_path / "features" and file.name == f"{cache_key(bb, ds)}.npz" and file.exists()
    mtime = file.stat().st_mtime_ns
    second = cached_features(bb, ds, device="cpu", progress=False)
    assert len(spy_extract) == 1 and file.stat().st_mtime_ns == mtime  # reused, not rewritten
    assert np.array_equal(first.inputs, second.inputs)
    assert np.allclose(first.inputs, _direct(bb, ds), atol=1e-6)
    assert np.array_equal(second.labels, ds.labels) and second.meta["features_from"] == str(file)


def test_cache_key_changes_with_weights_and_data(spy_extract: list[Path]) -> None:
    bb, ds = _mlp(), _books(13)
    key = cache_key(bb, ds)
    assert cache_key(_mlp(), _books(13)) == key  # same content, same key
    cached_features(bb, ds, device="cpu", progress=False)
    with torch.no_grad():
        bb.body[0][0].weight[0, 0] += 1.0
    assert cache_key(bb, ds) != key
    changed = cached_features(bb, ds, device="cpu", progress=False)
    assert len(spy_extract) == 2 and spy_extract[0] != spy_extract[1]
    assert np.allclose(changed.inputs, _direct(bb, ds), atol=1e-6)  # not the stale features
    assert cache_key(bb, _books(13, seed=1)) != cache_key(bb, ds)
    assert cache_key(bb, ds.unlabelled()) != cache_key(bb, ds)


def test_a_relabelled_subset_reads_the_whole_datasets_features(spy_extract: list[Path]) -> None:
    from dataclasses import replace

    bb, ds = _mlp(), _books(13)
    whole = cached_features(bb, ds, device="cpu", progress=False)
    part = replace(ds.subset([1, 4, 6]), labels=np.array([1, 0, 1]), classes=["odd", "even"], domain="part")
    feats = cached_features(bb, part, device="cpu", progress=False)
    assert len(spy_extract) == 1  # served from the whole dataset's file
    assert np.array_equal(feats.inputs, whole.inputs[[1, 4, 6]])
    assert feats.labels.tolist() == [1, 0, 1] and feats.classes == ["odd", "even"] and feats.domain == "part"


def test_cached_features_keeps_the_callers_labels(spy_extract: list[Path], tmp_path: Path) -> None:
    bb = _mlp()
    unl = cached_features(bb, _books(13, labelled=False), cache_dir=tmp_path / "own", device="cpu", progress=False)
    assert unl.labels is None
    assert spy_extract[0].parent == tmp_path / "own"


def test_backbone_stays_trainable_after_extraction(tmp_path) -> None:
    """Extraction runs on a copy: the caller's backbone must still train afterwards (lp-ft does exactly this)."""
    import numpy as np
    import torch

    from transferkit.data.domain import DomainDataset
    from transferkit.features import extract_to_npz
    from transferkit.models.backbones import create_backbone

    bb = create_backbone("torchvision:mobilenet_v2")
    imgs = np.random.default_rng(0).integers(0, 255, (4, 40, 40, 3), dtype=np.uint8)
    ds = DomainDataset(imgs, np.array([0, 1, 0, 1]), "toy", ["a", "b"], "image")
    extract_to_npz(bb, ds, tmp_path / "f.npz", device="cpu", progress=False)
    bb.train()
    bb(torch.randn(2, 3, 64, 64)).sum().backward()
    assert all(p.grad is not None for p in bb.parameters() if p.requires_grad)


def test_feature_matrix_raw_vectors_images_and_a_backbone() -> None:
    from transferkit.errors import ConfigError
    from transferkit.features import feature_matrix
    from transferkit.models.backbones import create_backbone

    vec = DomainDataset(np.arange(6, dtype=np.float32).reshape(3, 2), None, "v", ["a"], "vector")
    assert np.array_equal(feature_matrix(vec), vec.inputs)
    imgs = DomainDataset(np.full((2, 3, 3), 255, np.uint8), None, "i", ["a"])
    assert feature_matrix(imgs).shape == (2, 9) and float(feature_matrix(imgs).max()) == 1.0
    mixed = DomainDataset([np.zeros((3, 3), np.uint8), np.zeros((4, 4), np.uint8)], None, "m", ["a"])
    with pytest.raises(ConfigError, match="different sizes"):
        feature_matrix(mixed)
    lenet = create_backbone("lenet")
    assert feature_matrix(imgs, lenet, device="cpu", progress=False).shape == (2, lenet.out_features)
    with pytest.raises(ModelError, match="reads vector inputs, but 'i' holds image data"):
        feature_matrix(imgs, create_backbone("mlp", in_features=9), device="cpu", progress=False)

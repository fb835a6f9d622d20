"""The Amazon review domains of the benchmark root (``amazon_svmlight/``) as built-in datasets."""

import hashlib
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from transferkit.cli import app
from transferkit.data import benchmarks
from transferkit.data.catalog import list_datasets, load_dataset
from transferkit.data.registry import DATA_ROOT_ENV
from transferkit.errors import DataError

NAMES = [f"amazon-{d}" for d in benchmarks.AMAZON_DOMAINS]
TEST_SIZES = {"amazon-books": 4465, "amazon-dvd": 3586, "amazon-electronics": 5681, "amazon-kitchen": 5945}


def test_registered_and_listed_by_the_cli() -> None:
    assert set(NAMES) <= set(list_datasets())
    result = CliRunner().invoke(app, ["datasets"])
    assert result.exit_code == 0
    for name in NAMES:
        assert name in result.output


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("split", ["train", "test"])
def test_shapes_labels_dtype(data_root: Path, name: str, split: str) -> None:
    ds = load_dataset(name, split, root=data_root)
    n = 2000 if split == "train" else TEST_SIZES[name]
    assert ds.kind == "vector" and ds.domain == name and ds.classes == ["negative", "positive"]
    assert ds.inputs.shape == (n, 5000) and ds.inputs.dtype == np.float32
    assert ds.labels.dtype == np.int64 and set(np.unique(ds.labels)) == {0, 1}
    if split == "train":
        assert ds.class_counts() == {"negative": 1000, "positive": 1000}
    # word counts: non-negative integers; nearly every review has some (3 of electronics_test have none)
    assert ds.inputs.min() == 0 and np.all(ds.inputs == np.round(ds.inputs))
    assert (ds.inputs.sum(axis=1) == 0).sum() <= 3
    assert ds[0]["x"].shape == (5000,) and ds[0]["y"] in (0, 1)


def test_first_review_matches_the_file(data_root: Path) -> None:
    # the first line of books_train: label +1, "0:6 1:8 2:8 3:2 4:3 6:5 ..." (indices are zero-based)
    ds = load_dataset("amazon-books", "train", root=data_root)
    assert ds.labels[0] == 1
    assert ds.inputs[0, :7].tolist() == [6, 8, 8, 2, 3, 0, 5]


def test_cached_loads_are_independent(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATA_ROOT_ENV, str(data_root))
    a = load_dataset("amazon-kitchen", "train")
    a.inputs[:] = 0  # a caller mutating its copy must not change the cache
    b = load_dataset("amazon-kitchen", "train")
    assert b.inputs.max() > 0


def test_tampered_copy_fails_the_checksum(data_root: Path, tmp_path: Path) -> None:
    relative = benchmarks.amazon_file("kitchen", "train")
    target = tmp_path / relative
    target.parent.mkdir(parents=True)
    shutil.copyfile(data_root / relative, target)
    shutil.copyfile(data_root / "SHA256SUMS", tmp_path / "SHA256SUMS")
    assert len(load_dataset("amazon-kitchen", "train", root=tmp_path)) == 2000
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    expected = benchmarks.KNOWN_SHA256[relative]
    with pytest.raises(DataError, match=f"checksum mismatch for {re.escape(str(target))}: expected sha256 {expected}"):
        load_dataset("amazon-kitchen", "train", root=tmp_path)


# -- bad input (no benchmark data needed) -------------------------------------------------------
def _root_with(tmp_path: Path, text: str, domain: str = "dvd", split: str = "test") -> Path:
    """A data root holding one svmlight file with ``text`` and a SHA256SUMS that vouches for it."""
    relative = benchmarks.amazon_file(domain, split)
    path = tmp_path / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="ascii")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    (tmp_path / "SHA256SUMS").write_text(f"{digest}  ./{relative}\n")
    return tmp_path


def test_a_small_valid_file(tmp_path: Path) -> None:
    root = _root_with(tmp_path, "1 3:2 4999:1\n-1 0:1\n")
    ds = load_dataset("amazon-dvd", "test", root=root)
    assert ds.labels.tolist() == [1, 0] and ds.inputs.shape == (2, 5000)
    assert ds.inputs[0, 3] == 2 and ds.inputs[0, 4999] == 1 and ds.inputs[1, 0] == 1  # no index shift
    assert ds.inputs.sum() == 4


def test_missing_file_names_expected_path(tmp_path: Path) -> None:
    missing = tmp_path / "amazon_svmlight" / "books_train.svmlight"
    with pytest.raises(DataError, match=f"expected the file {re.escape(str(missing))}, which is missing"):
        load_dataset("amazon-books", "train", root=tmp_path)


def test_missing_root_says_how_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_ROOT_ENV, raising=False)
    with pytest.raises(
        DataError,
        match=rf"set {DATA_ROOT_ENV}=.*amazon_svmlight/electronics_train.svmlight, amazon_svmlight/electronics_test",
    ):
        load_dataset("amazon-electronics")


def test_unknown_split(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="'amazon-books' has splits train, test; got 'unlabeled'"):
        load_dataset("amazon-books", "unlabeled", root=tmp_path)


def test_labels_other_than_plus_minus_one(tmp_path: Path) -> None:
    root = _root_with(tmp_path, "1 0:1\n2 1:1\n")
    with pytest.raises(DataError, match=r"labels must be -1 \(negative\) or \+1 \(positive\); found \[2.0\]"):
        load_dataset("amazon-dvd", "test", root=root)


def test_feature_index_past_5000(tmp_path: Path) -> None:
    root = _root_with(tmp_path, "1 0:1 5000:3\n")
    with pytest.raises(DataError, match=r"cannot read Amazon reviews from .*dvd_test\.svmlight as svmlight with 5000"):
        load_dataset("amazon-dvd", "test", root=root)


def test_not_svmlight(tmp_path: Path) -> None:
    root = _root_with(tmp_path, "this is a review, not a feature vector\n")
    with pytest.raises(DataError, match="cannot read Amazon reviews from"):
        load_dataset("amazon-dvd", "test", root=root)


def test_empty_file(tmp_path: Path) -> None:
    root = _root_with(tmp_path, "")
    with pytest.raises(DataError, match="holds no reviews"):
        load_dataset("amazon-dvd", "test", root=root)

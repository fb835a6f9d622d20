import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from transferkit.data import benchmarks
from transferkit.data.catalog import list_datasets, load_dataset
from transferkit.data.registry import DATA_ROOT_ENV
from transferkit.errors import DataError


def test_registered() -> None:
    names = list_datasets()
    assert "mnist" in names and "usps" in names


@pytest.mark.parametrize(
    ("name", "split", "n", "side"),
    [
        ("mnist", "train", 60000, 28),
        ("mnist", "test", 10000, 28),
        ("usps", "train", 7291, 16),
        ("usps", "test", 2007, 16),
    ],
)
def test_shapes_labels_dtype(data_root: Path, name: str, split: str, n: int, side: int) -> None:
    ds = load_dataset(name, split, root=data_root)
    assert ds.kind == "image" and ds.domain == name
    assert ds.inputs.shape == (n, side, side) and ds.inputs.dtype == np.uint8
    assert ds.labels.dtype == np.int64 and ds.labels.min() == 0 and ds.labels.max() == 9
    assert set(np.unique(ds.labels)) == set(range(10))
    assert ds.classes == [str(d) for d in range(10)]
    assert ds.inputs.max() == 255 and ds.inputs.min() == 0
    assert ds[0]["x"].shape == (1, side, side)


def test_usps_class_counts_and_polarity(data_root: Path) -> None:
    ds = load_dataset("usps", "test", root=data_root)
    assert list(ds.class_counts().values()) == [359, 264, 198, 166, 200, 160, 170, 147, 166, 177]
    border = np.concatenate([ds.inputs[:, 0, :], ds.inputs[:, -1, :]])
    assert np.median(border) == 0  # background is black, like MNIST


def test_env_var_root_and_cached_loads_are_independent(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATA_ROOT_ENV, str(data_root))
    a = load_dataset("usps", "test")
    a.inputs[:] = 0  # a caller mutating its copy must not change the cache
    b = load_dataset("usps", "test")
    assert b.inputs.max() == 255


def _copy_usps_test(data_root: Path, dest: Path, with_sums: bool = True) -> Path:
    (dest / "usps").mkdir(parents=True)
    target = dest / "usps" / "zip.test.gz"
    shutil.copyfile(data_root / "usps" / "zip.test.gz", target)
    if with_sums:
        shutil.copyfile(data_root / "SHA256SUMS", dest / "SHA256SUMS")
    return target


@pytest.mark.parametrize("with_sums", [True, False])
def test_tampered_copy_fails_the_checksum(data_root: Path, tmp_path: Path, with_sums: bool) -> None:
    _copy_usps_test(data_root, tmp_path / "good", with_sums)
    assert len(load_dataset("usps", "test", root=tmp_path / "good")) == 2007
    target = _copy_usps_test(data_root, tmp_path / "bad", with_sums)
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    expected = benchmarks.KNOWN_SHA256["usps/zip.test.gz"]
    pattern = f"checksum mismatch for {re.escape(str(target))}: expected sha256 {expected}, got [0-9a-f]{{64}}"
    with pytest.raises(DataError, match=pattern):
        load_dataset("usps", "test", root=tmp_path / "bad")


def test_sha256sums_of_the_root_are_authoritative(data_root: Path, tmp_path: Path) -> None:
    _copy_usps_test(data_root, tmp_path, with_sums=False)
    (tmp_path / "SHA256SUMS").write_text(f"{'0' * 64}  ./usps/zip.test.gz\n")
    with pytest.raises(DataError, match=f"expected sha256 {'0' * 64}"):
        load_dataset("usps", "test", root=tmp_path)


def test_known_checksums_match_the_data_roots_list(data_root: Path) -> None:
    sums = benchmarks.read_sha256sums(data_root / "SHA256SUMS")
    for relative, digest in benchmarks.KNOWN_SHA256.items():
        assert sums[relative] == digest


def test_missing_root_says_how_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_ROOT_ENV, raising=False)
    with pytest.raises(DataError, match=rf"set {DATA_ROOT_ENV}=.*or pass root=.*mnist/mnist_near_exact.npz"):
        load_dataset("mnist")
    with pytest.raises(DataError, match=r"usps/zip.train.gz, usps/zip.test.gz"):
        load_dataset("usps", "test")


def test_root_that_is_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"benchmark data root .*nowhere .*is not a folder"):
        load_dataset("mnist", root=tmp_path / "nowhere")


def test_missing_file_names_expected_path(tmp_path: Path) -> None:
    with pytest.raises(
        DataError, match=f"expected the file {re.escape(str(tmp_path / 'usps' / 'zip.train.gz'))}, which is missing"
    ):
        load_dataset("usps", "train", root=tmp_path)


def test_unknown_split(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="splits train, test; got 'val'"):
        load_dataset("mnist", "val", root=tmp_path)

from pathlib import Path

import numpy as np
import pytest

from transferkit.data.tabular import load_arrays, load_csv
from transferkit.errors import DataError


# -- .npz / .npy -------------------------------------------------------------------------------
def test_npz_vectors_with_labels_and_class_names(tmp_path: Path) -> None:
    path = tmp_path / "feats.npz"
    np.savez(path, x=np.arange(12, dtype=np.float64).reshape(4, 3), y=np.array([0, 1, 1, 0]), classes=["neg", "pos"])
    ds = load_arrays(path)
    assert ds.kind == "vector" and ds.inputs.dtype == np.float32 and ds.inputs.shape == (4, 3)
    assert ds.classes == ["neg", "pos"] and ds.labels.tolist() == [0, 1, 1, 0]
    assert ds.domain == "feats"
    assert ds[2]["x"].tolist() == [6.0, 7.0, 8.0] and ds[2]["y"] == 1


def test_npz_per_split_keys_share_classes(tmp_path: Path) -> None:
    path = tmp_path / "digits.npz"
    rng = np.random.default_rng(0)
    np.savez(
        path,
        x_train=rng.integers(0, 256, (5, 8, 8), dtype=np.uint8),
        y_train=np.array([0, 1, 2, 3, 4]),
        x_test=rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)[:, :, :, 0],
        y_test=np.array([0, 0, 1]),
    )
    train, test = load_arrays(path, "train"), load_arrays(path, "test")
    assert train.kind == test.kind == "image" and train.inputs.dtype == np.uint8
    assert train.classes == test.classes == ["0", "1", "2", "3", "4"]
    assert len(load_arrays(path, "all")) == 8
    assert train[0]["x"].shape == (1, 8, 8)


def test_npz_string_labels_map_to_sorted_names(tmp_path: Path) -> None:
    path = tmp_path / "s.npz"
    np.savez(path, x=np.zeros((3, 2)), y=np.array(["dog", "cat", "dog"]))
    ds = load_arrays(path)
    assert ds.classes == ["cat", "dog"] and ds.labels.tolist() == [1, 0, 1]


def test_npz_unlabelled_and_npy(tmp_path: Path) -> None:
    np.savez(tmp_path / "u.npz", x=np.ones((2, 5), np.float32))
    assert load_arrays(tmp_path / "u.npz").labels is None
    np.save(tmp_path / "imgs.npy", np.zeros((3, 4, 4, 3), np.uint8))
    ds = load_arrays(tmp_path / "imgs.npy")
    assert ds.kind == "image" and ds.labels is None and ds[0]["y"] == -1
    np.save(tmp_path / "vec.npy", np.zeros((3, 4), np.float64))
    assert load_arrays(tmp_path / "vec.npy").inputs.dtype == np.float32


@pytest.mark.parametrize(
    ("arrays", "pattern"),
    [
        ({"x": np.zeros((2, 3)), "y": np.array([0, 1, 1])}, "2 rows but its labels have 3"),
        ({"x": np.array([[0.0, np.nan], [1.0, 2.0]])}, "NaN or Inf in 1 rows"),
        ({"x": np.array([[0.0, np.inf]])}, "NaN or Inf"),
        ({"x": np.zeros((2, 3, 3))}, r"feature vectors must be 2-D"),
        ({"x": np.zeros((2, 3, 8, 8), np.uint8)}, r"channels first"),
        ({"x_train": np.zeros((2, 3))}, r"no array 'x_val' or 'x' for split 'val'; its splits: train"),
        ({"x": np.zeros((2, 3)), "y": np.array([0.5, 1.0])}, "labels must be integers or strings"),
        ({"x": np.zeros((2, 3)), "y": np.array([0, -1])}, "labels must be >= 0"),
    ],
)
def test_npz_errors(tmp_path: Path, arrays: dict, pattern: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=pattern) as err:
        load_arrays(path, "val" if "x_train" in arrays else "train")
    assert str(path) in str(err.value)


def test_array_file_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"missing.npz does not exist"):
        load_arrays(tmp_path / "missing.npz")
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty.npz is empty"):
        load_arrays(tmp_path / "empty.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip archive")
    with pytest.raises(DataError, match=r"cannot read .*junk.npz"):
        load_arrays(tmp_path / "junk.npz")
    (tmp_path / "data.txt").write_text("1 2 3")
    with pytest.raises(DataError, match=r"expected a .npz or .npy"):
        load_arrays(tmp_path / "data.txt")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"cannot read .*obj.npy"):
        load_arrays(tmp_path / "obj.npy")


# -- CSV ---------------------------------------------------------------------------------------
def _csv(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_csv_string_labels_and_split_column(tmp_path: Path) -> None:
    path = _csv(tmp_path, "f1,label,f2,split\n1,dog,2,train\n3,cat,4,test\n5,dog,6,train\n7,bird,8,train\n")
    train = load_csv(path)
    assert train.kind == "vector" and train.inputs.dtype == np.float32
    assert train.inputs.tolist() == [[1, 2], [5, 6], [7, 8]]
    assert train.classes == ["bird", "cat", "dog"]  # over the whole file: splits share indices
    assert train.labels.tolist() == [2, 2, 0]
    test = load_csv(path, split="test")
    assert test.labels.tolist() == [1] and test.classes == train.classes
    assert len(load_csv(path, split="all")) == 4
    assert train.meta["features"] == ["f1", "f2"]


def test_csv_integer_labels_unlabelled_and_tsv(tmp_path: Path) -> None:
    path = _csv(tmp_path, "a,b,label\n0.5,1e3,2\n-1,2,0\n")
    ds = load_csv(path, split="val")  # no split column: the whole file for any split
    assert ds.classes == ["0", "2"] and ds.labels.tolist() == [1, 0]  # the values that occur, in numeric order
    assert ds.inputs.tolist() == [[0.5, 1000.0], [-1.0, 2.0]]
    unlabelled = load_csv(_csv(tmp_path, "a,b\n1,2\n3,4\n", "u.csv"))
    assert unlabelled.labels is None and unlabelled[0]["y"] == -1
    assert load_csv(path, label_column=None).inputs.shape == (2, 3)
    tsv = load_csv(_csv(tmp_path, "a\tb\ttarget\n1\t2\tx\n", "t.tsv"), label_column="target")
    assert tsv.classes == ["x"] and tsv.inputs.shape == (1, 2)


@pytest.mark.parametrize(
    ("text", "kwargs", "pattern"),
    [
        ("", {}, r"is empty"),
        ("\n\n", {}, r"data.csv is empty; expected a header"),
        ("a,b,label\n", {}, r"header but no data rows"),
        ("a,b,label\n1,2,0\n3,oops,1\n", {}, r"feature column 'b' is not numeric \(the value 'oops' in row 3\)"),
        ("a,b,label\n1,,0\n", {}, r"feature column 'b' is not numeric \(an empty cell in row 2\)"),
        ("a,b,label\n1,nan,0\n2,3,1\n", {}, r"NaN or Inf in feature columns \['b'\] \(rows \[2\]\)"),
        ("a,b,label\n1,inf,0\n", {}, r"NaN or Inf"),
        ("a,label,split\n1,0,train\n2,1,test\n", {"split": "val"}, r"no rows with split == 'val'.*holds: test, train"),
        ("a,label\n1,0\n2\n", {}, r"row 3: 1 cells but the header has 2"),
        ("a,label\n1,0\n", {"label_column": "target"}, r"no label column 'target'; its columns: a, label"),
        ("a,a,label\n1,2,0\n", {}, r"duplicate column names \['a'\]"),
        ("a,label\n1,0\n2,\n", {}, r"label column 'label' is empty in rows \[3\]"),
        ("a,label\n1,-1\n", {}, r"must be >= 0"),
        ("label\n1\n", {}, r"no feature columns"),
    ],
)
def test_csv_errors(tmp_path: Path, text: str, kwargs: dict, pattern: str) -> None:
    path = _csv(tmp_path, text)
    with pytest.raises(DataError, match=pattern) as err:
        load_csv(path, **kwargs)
    assert str(path) in str(err.value)


def test_csv_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope.csv does not exist"):
        load_csv(tmp_path / "nope.csv")


def test_csv_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes("a,label\n1,caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"cannot read .*latin\.csv as a UTF-8 CSV"):
        load_csv(path)


def test_npz_classes_cover_labels_of_every_split(tmp_path: Path) -> None:
    path = tmp_path / "p.npz"
    np.savez(path, x_train=np.zeros((2, 2)), y_train=np.array([0, 7]), x_test=np.zeros((1, 2)), y_test=np.array([1]))
    test = load_arrays(path, "test")  # every split's values, so splits share indices; no empty classes 2..6
    assert test.classes == ["0", "1", "7"] and test.labels.tolist() == [1]

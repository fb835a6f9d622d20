"""Parquet and svmlight feature files, the CSV domain column, source/target width checks and ``load_data``'s
dispatch and ``?`` options for feature files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import dump_svmlight_file

from transferkit.data import load_data
from transferkit.data.tabular import check_feature_widths, load_csv, load_parquet, load_svmlight
from transferkit.errors import DataError

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def _parquet(path: Path, columns: dict) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


def _svm(tmp_path: Path, text: str, name: str = "f.svmlight") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# -- Parquet -----------------------------------------------------------------------------------
def test_parquet_round_trip_with_split_and_domain_columns(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 3))
    counts = rng.integers(0, 9, 8).astype(np.int32)
    labels = np.array(["pos", "neg", "pos", "mid", "neg", "pos", "neg", "pos"])
    split = ["train", "train", "test", "train", "test", "train", "train", "test"]
    domain = ["a", "b", "a", "b", "a", "b", "a", "b"]
    path = _parquet(tmp_path / "feats.parquet", {"f0": x[:, 0], "label": labels, "f1": x[:, 1], "split": split,
                                                 "f2": x[:, 2].astype(np.float32), "n": counts, "domain": domain})
    full = np.column_stack([x[:, 0], x[:, 1], x[:, 2].astype(np.float32), counts]).astype(np.float32)

    ds = load_parquet(path, split="all")
    assert ds.kind == "vector" and ds.inputs.dtype == np.float32 and ds.domain == "feats"
    np.testing.assert_array_equal(ds.inputs, full)
    assert ds.classes == ["mid", "neg", "pos"]
    assert [ds.classes[i] for i in ds.labels] == labels.tolist()
    assert ds.meta["features"] == ["f0", "f1", "f2", "n"]

    train = load_parquet(path)  # split "train", every domain
    rows = [i for i, s in enumerate(split) if s == "train"]
    np.testing.assert_array_equal(train.inputs, full[rows])
    b_test = load_parquet(path, split="test", domain="b")
    assert b_test.domain == "feats/b" and b_test.inputs.shape == (1, 4) and b_test.classes == ds.classes
    np.testing.assert_array_equal(b_test.inputs, full[[7]])


def test_parquet_label_types_and_unlabelled(tmp_path: Path) -> None:
    x = np.arange(6, dtype=np.float64)
    ints = load_parquet(_parquet(tmp_path / "i.parquet", {"x": x, "label": np.array([0, 2, 2, 0, 1, 2])}))
    assert ints.classes == ["0", "1", "2"] and ints.labels.tolist() == [0, 2, 2, 0, 1, 2]
    floats = load_parquet(_parquet(tmp_path / "f.parquet", {"x": x, "y": np.array([1.0, 0, 0, 1, 1, 0])}),
                          label_column="y")
    assert floats.classes == ["0", "1"] and floats.labels.tolist() == [1, 0, 0, 1, 1, 0]
    dictionary = pa.array(["b", "a", "b", "a", "a", "b"]).dictionary_encode()
    cat = load_parquet(_parquet(tmp_path / "c.parquet", {"x": x, "label": dictionary, "flag": [True] * 6}))
    assert cat.classes == ["a", "b"] and cat.inputs[:, 1].tolist() == [1.0] * 6
    unlabelled = load_parquet(_parquet(tmp_path / "u.parquet", {"x": x, "z": x}))
    assert unlabelled.labels is None and unlabelled.inputs.shape == (6, 2)
    assert load_parquet(tmp_path / "i.parquet", label_column=None).inputs.shape == (6, 2)


@pytest.mark.parametrize(
    ("columns", "kwargs", "pattern"),
    [
        ({"a": [1.0, np.nan], "label": [0, 1]}, {}, r"NaN or Inf in feature columns \['a'\] \(rows \[1\]\)"),
        ({"a": [1.0, 2.0], "b": [np.inf, 0.0], "label": [0, 1]}, {}, r"NaN or Inf in feature columns \['b'\]"),
        ({"a": [1.0, 1e39], "label": [0, 1]}, {}, r"NaN or Inf"),  # overflows float32
        ({"a": pa.array([1.0, None]), "label": [0, 1]}, {}, r"feature column 'a' has 1 missing \(null\)"),
        ({"a": ["x", "y"], "label": [0, 1]}, {}, r"feature column 'a' is not numeric \(Parquet type string\)"),
        ({"v": pa.array([[1.0], [2.0]]), "label": [0, 1]}, {}, r"'v' is not numeric .*one number per column"),
        ({"a": [1.0, 2.0], "label": [0, 1]}, {"label_column": "target"}, r"no label column 'target'; its col"),
        ({"a": [1.0, 2.0], "label": pa.array([0, None])}, {}, r"label column 'label' is null in rows \[1\]"),
        ({"a": [1.0, 2.0], "label": [0.5, 1.0]}, {}, r"non-integer numbers \(e.g. 0.5\)"),
        ({"a": [1.0, 2.0], "label": [-1, 1]}, {}, r"must be >= 0, found -1"),
        ({"a": [1.0], "label": [0], "split": ["train"]}, {"split": "test"}, r"no rows with split == 'test'"),
        ({"a": [1.0], "label": [0]}, {"domain": "books"}, r"no domain column 'domain' to pick domain 'books'"),
        ({"a": [1.0], "label": [0], "domain": ["dvd"]}, {"domain": "books"}, r"no rows of domain 'books'.*: dvd"),
        ({"a": [1.0], "label": [0]}, {"domain_column": "d"}, r"no domain column 'd'; its columns: a, label"),
        ({"label": [0, 1]}, {}, r"no feature columns"),
        ({"a": pa.array([], pa.float64()), "label": pa.array([], pa.int64())}, {}, r"has columns but no data rows"),
    ],
)
def test_parquet_errors_name_the_file(tmp_path: Path, columns: dict, kwargs: dict, pattern: str) -> None:
    path = _parquet(tmp_path / "bad.parquet", columns)
    with pytest.raises(DataError, match=pattern) as err:
        load_parquet(path, **kwargs)
    assert str(path) in str(err.value)


def test_parquet_unreadable_and_empty_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.parquet"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty.parquet is empty \(0 bytes\)"):
        load_parquet(empty)
    garbage = tmp_path / "garbage.parquet"
    garbage.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match=r"cannot read .*garbage.parquet as a Parquet file"):
        load_parquet(garbage)
    with pytest.raises(DataError, match=r"nope.parquet does not exist"):
        load_parquet(tmp_path / "nope.parquet")


# -- CSV domain column -------------------------------------------------------------------------
def test_csv_domain_column_selects_rows_and_shares_classes(tmp_path: Path) -> None:
    path = tmp_path / "two.csv"
    path.write_text("a,b,label,domain\n1,2,pos,books\n3,4,neg,dvd\n5,6,pos,dvd\n")
    dvd = load_csv(path, domain="dvd")
    assert dvd.domain == "two/dvd" and dvd.inputs.tolist() == [[3, 4], [5, 6]]
    assert dvd.classes == ["neg", "pos"] and dvd.labels.tolist() == [0, 1]
    books = load_csv(path, domain="books")
    assert books.classes == dvd.classes and books.labels.tolist() == [1]
    assert load_csv(path).inputs.shape == (3, 2)  # the domain column is never a feature
    with pytest.raises(DataError, match=r"no rows of domain 'kitchen'.*holds: books, dvd"):
        load_csv(path, domain="kitchen")


# -- svmlight ----------------------------------------------------------------------------------
@pytest.mark.parametrize("zero_based", [True, False])
def test_svmlight_round_trip(tmp_path: Path, zero_based: bool) -> None:
    rng = np.random.default_rng(1)
    x = np.round(rng.random((7, 5)) * (rng.random((7, 5)) < 0.5), 3)
    x[:, 0] = 0.5  # feature 0 present, so "auto" can tell the base
    x[0, 4] = 2.0  # the last feature present: the inferred width is 5
    y = np.array([0, 2, 1, 2, 0, 1, 1])
    path = tmp_path / "tr.svmlight"
    dump_svmlight_file(x, y, str(path), zero_based=zero_based)
    for given in ("auto", zero_based):
        ds = load_svmlight(path, zero_based=given)
        assert ds.kind == "vector" and ds.inputs.dtype == np.float32 and ds.domain == "tr"
        np.testing.assert_allclose(ds.inputs, x.astype(np.float32))
        assert ds.classes == ["0", "1", "2"] and ds.labels.tolist() == y.tolist()
        assert ds.meta["format"] == "svmlight" and ds.meta["zero_based"] is zero_based
    wide = load_svmlight(path, n_features=9, zero_based=zero_based)
    assert wide.inputs.shape == (7, 9) and not wide.inputs[:, 5:].any()
    assert wide.meta["n_features"] == 9


def test_svmlight_binary_minus_one_plus_one_and_comments(tmp_path: Path) -> None:
    path = _svm(tmp_path, "# header comment\n-1 0:1 2:3.5\n+1 1:2  # trailing\n\n1 0:0.25\n")
    ds = load_svmlight(path)
    assert ds.classes == ["-1", "1"] and ds.labels.tolist() == [0, 1, 1]
    assert ds.inputs.tolist() == [[1, 0, 3.5], [0, 2, 0], [0.25, 0, 0]]
    one_based = load_svmlight(_svm(tmp_path, "-1 1:1 3:3.5\n", "one.svm"))  # no index 0: auto reads it one-based
    assert one_based.inputs.tolist() == [[1, 0, 3.5]] and one_based.meta["zero_based"] is False
    assert load_svmlight(tmp_path / "one.svm", zero_based=True).inputs.tolist() == [[0, 1, 0, 3.5]]


@pytest.mark.parametrize(
    ("text", "kwargs", "pattern"),
    [
        ("1 1:0.5 2:nan\n0 1:1\n", {}, r"NaN or Inf .* in 1 rows \(data lines, from 1: \[1\]\)"),
        ("1 1:0.5\n0 2:inf\n", {}, r"NaN or Inf .*\[2\]"),
        ("1 1:1e300\n", {}, r"NaN or Inf \(or a value too large for float32\)"),
        ("# nothing but a comment\n", {}, r"holds no rows"),
        ("1 1:abc\n", {}, r"cannot read .* as an svmlight/libsvm file"),
        ("1 1:1 7:1\n", {"n_features": 3}, r"feature index 7 \(one-based, so 7 features\) but n_features=3"),
        ("1.5 1:1\n", {}, r"labels must be integer class ids, found 1.5 on data line 1 \(regression"),
        ("-2 1:1\n1 1:1\n", {}, r"negative labels other than the binary -1/\+1 convention \(\[-2, 1\]\)"),
        ("1 0:1\n", {"zero_based": False}, r"uses feature index 0, so it is zero-based"),
        ("1 1:1\n", {"n_features": 0}, r"n_features must be a positive integer"),
        ("1 1:1\n", {"zero_based": "yes"}, r"zero_based must be True, False or 'auto'"),
    ],
)
def test_svmlight_errors_name_the_file(tmp_path: Path, text: str, kwargs: dict, pattern: str) -> None:
    path = _svm(tmp_path, text)
    with pytest.raises(DataError, match=pattern) as err:
        load_svmlight(path, **kwargs)
    assert str(path) in str(err.value)


def test_svmlight_empty_file_and_dense_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DataError, match=r"empty.svm is empty \(0 bytes\)"):
        load_svmlight(_svm(tmp_path, "", "empty.svm"))
    monkeypatch.setenv("TRANSFERKIT_MAX_DATA_GIB", str(1000 / 2**30))  # the one data budget: 1000 bytes
    with pytest.raises(DataError, match=r"2 rows x 1000 features .* as dense float32"):
        load_svmlight(_svm(tmp_path, "0 1:1\n1 1000:1\n", "wide.svm"))


# -- source and target together ----------------------------------------------------------------
def test_svmlight_widths_differ_names_both_files_and_the_fix(tmp_path: Path) -> None:
    source = load_svmlight(_svm(tmp_path, "0 0:1 4:1\n1 1:1\n", "src.svmlight"))
    target = load_svmlight(_svm(tmp_path, "0 0:1 2:1\n1 1:1\n", "tgt.svmlight"))  # lacks the last feature
    with pytest.raises(DataError) as err:
        check_feature_widths(source, target)
    message = str(err.value)
    assert str(tmp_path / "src.svmlight") in message and str(tmp_path / "tgt.svmlight") in message
    assert "source" in message and "5 features" in message and "has 3" in message
    assert "?n_features=5" in message
    fixed = load_svmlight(tmp_path / "tgt.svmlight", n_features=5)
    check_feature_widths(source, fixed)


def test_svmlight_index_bases_chosen_by_auto_must_agree(tmp_path: Path) -> None:
    source = load_svmlight(_svm(tmp_path, "0 0:1 4:1\n", "src.svm"))  # index 0 present: zero-based, 5 features
    target = load_svmlight(_svm(tmp_path, "0 1:1 4:1\n", "tgt.svm"))  # no index 0: auto guesses one-based
    # n_features=5 on both would hide the shift: the base is checked first
    target5 = load_svmlight(tmp_path / "tgt.svm", n_features=5)
    for tgt in (target, target5):
        with pytest.raises(DataError, match=r"bases differ: .*src.svm was read zero-based, target .*tgt.svm one-based "
                                            r"\(a guess: no line uses index 0\).*'\?zero_based=true'"):
            check_feature_widths(source, tgt)
    check_feature_widths(source, load_svmlight(tmp_path / "tgt.svm", zero_based=True))  # stated: accepted
    stated_one_based = load_svmlight(tmp_path / "tgt.svm", zero_based=False, n_features=5)
    check_feature_widths(source, stated_one_based)  # both bases known (a seen index 0, a stated one): accepted


def test_table_widths_and_columns_must_match(tmp_path: Path) -> None:
    a = load_csv(_write(tmp_path / "a.csv", "x,y,label\n1,2,0\n"))
    b = load_parquet(_parquet(tmp_path / "b.parquet", {"x": [1.0], "label": [0]}))
    with pytest.raises(DataError, match=r"source .*a.csv has 2 features, target .*b.parquet has 1; both must hold"):
        check_feature_widths(a, b)
    c = load_parquet(_parquet(tmp_path / "c.parquet", {"y": [1.0], "x": [2.0], "label": [0]}))
    with pytest.raises(DataError, match=r"feature columns differ .*column 1: 'x' vs 'y'"):
        check_feature_widths(a, c)
    check_feature_widths(a, load_parquet(_parquet(tmp_path / "d.parquet", {"x": [1.0], "y": [2.0], "label": [1]})))


# -- load_data: dispatch and options -----------------------------------------------------------
@pytest.mark.parametrize("suffix", [".svm", ".svmlight", ".libsvm"])
def test_load_data_dispatches_svmlight_suffixes(tmp_path: Path, suffix: str) -> None:
    path = _svm(tmp_path, "1 1:2\n0 2:3\n", f"x{suffix}")
    ds = load_data(str(path))
    assert ds.meta["format"] == "svmlight" and ds.inputs.tolist() == [[2, 0], [0, 3]]
    wide = load_data(f"{path}?n_features=4&zero_based=true")
    assert wide.inputs.tolist() == [[0, 2, 0, 0], [0, 0, 3, 0]] and wide.meta["zero_based_from"] == "given"


def test_load_data_parquet_tsv_and_table_options(tmp_path: Path) -> None:
    path = _parquet(tmp_path / "t.parquet", {"a": [1.0, 2.0, 3.0], "sentiment": ["p", "n", "p"],
                                             "site": ["x", "y", "y"], "split": ["train", "train", "test"]})
    ds = load_data(f"{path}?label=sentiment&domain_column=site&domain=y", "train")
    assert ds.domain == "t/y" and ds.inputs.tolist() == [[2.0]] and ds.classes == ["n", "p"]
    assert load_data(f"{path}?label=sentiment&domain_column=site", "all").inputs.shape == (3, 1)
    with pytest.raises(DataError, match=r"feature column 'sentiment' is not numeric"):
        load_data(str(path))  # without ?label=... the column is taken for a feature
    tsv = load_data(str(_write(tmp_path / "f.tsv", "a\tb\tlabel\n1\t2\t0\n")))
    assert tsv.inputs.tolist() == [[1, 2]]
    text_table = load_data(str(_write(tmp_path / "reviews.csv", "text,label\ngreat,pos\n")))
    assert text_table.kind == "text"  # a CSV with a text column is still a text table


def test_load_data_split_template(tmp_path: Path) -> None:
    _svm(tmp_path, "1 0:1\n", "d_train.svm")
    _svm(tmp_path, "0 1:1\n", "d_test.svm")  # no index 0: state the base, or "auto" would read it one-based
    spec = str(tmp_path / "d_{split}.svm") + "?n_features=3&zero_based=true"
    train, test = load_data(spec, "train"), load_data(spec, "test")
    assert train.inputs.tolist() == [[1, 0, 0]] and test.inputs.tolist() == [[0, 1, 0]]
    with pytest.raises(DataError, match=r"d_val.svm \(the file of split 'val'\) does not exist"):
        load_data(spec, "val")


@pytest.mark.parametrize(
    ("query", "pattern"),
    [
        ("n_features=x", r"n_features must be a positive whole number"),
        ("n_features=0", r"n_features must be a positive whole number"),
        ("zero_based=maybe", r"zero_based must be auto, true or false"),
        ("label=y", r"key one of n_features, zero_based; got 'label=y'"),
        ("n_features", r"look like key=value"),
        ("n_features=3&n_features=4", r"option 'n_features' is given twice"),
    ],
)
def test_load_data_bad_options(tmp_path: Path, query: str, pattern: str) -> None:
    path = _svm(tmp_path, "1 1:2\n")
    with pytest.raises(DataError, match=pattern):
        load_data(f"{path}?{query}")


def test_load_data_unsupported_suffix_lists_the_types(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"unsupported data file type '.xls'; .*\.parquet, \.mat, \.svm / \.svmlight"):
        load_data(str(_write(tmp_path / "f.xls", "x")))


# -- MATLAB .mat --------------------------------------------------------------------------------------------------
def test_mat_files_with_one_based_labels(tmp_path: Path) -> None:
    import scipy.io

    from transferkit.data import load_data

    rng = np.random.default_rng(0)
    fts, labels = rng.normal(size=(30, 5)), (np.arange(30) % 3 + 1)[:, None]  # MATLAB: 1-based, N x 1
    scipy.io.savemat(tmp_path / "dslr.mat", {"fts": fts, "labels": labels})
    ds = load_data(str(tmp_path / "dslr.mat"))
    assert ds.kind == "vector" and ds.inputs.shape == (30, 5) and ds.classes == ["1", "2", "3"]
    assert ds.labels.tolist()[:4] == [0, 1, 2, 0] and ds.meta["whole_file"]
    scipy.io.savemat(tmp_path / "odd.mat", {"A": fts, "B": labels.ravel()})
    with pytest.raises(DataError, match=r"none of its arrays \(A, B\) is named like features"):
        load_data(str(tmp_path / "odd.mat"))
    named = load_data(f"{tmp_path / 'odd.mat'}?x=A&y=B")
    assert named.classes == ["1", "2", "3"] and len(named) == 30
    with pytest.raises(DataError, match="labels B have shape"):
        scipy.io.savemat(tmp_path / "bad.mat", {"A": fts, "B": np.arange(5)})
        load_data(f"{tmp_path / 'bad.mat'}?x=A&y=B")
    (tmp_path / "junk.mat").write_bytes(b"not matlab at all")
    with pytest.raises(DataError, match=r"cannot read .*junk\.mat as a MATLAB \.mat file"):
        load_data(str(tmp_path / "junk.mat"))

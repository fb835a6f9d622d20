import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from transferkit.data import load_data
from transferkit.data.text import is_text_table, load_text_table, parse_spec
from transferkit.errors import DataError


def test_jsonl_domains_share_classes_and_keep_side_fields(reviews_jsonl: Path) -> None:
    books = load_data(f"{reviews_jsonl}?domain=books")
    kitchen = load_data(f"{reviews_jsonl}?domain=kitchen")
    assert books.kind == "text" and books.domain == "reviews/books" and len(books) == 24
    assert books.classes == kitchen.classes == ["negative", "positive"]
    assert all("book" in t for t in books.inputs) and all("blender" in t for t in kitchen.inputs)
    assert books.labels.tolist()[:4] == [0, 1, 0, 1]
    assert books.meta["rating"].tolist()[:2] == [1.0, 5.0]
    # a split keeps every item's side field with it
    _rest, held = books.split(0.25, seed=0)
    assert np.array_equal(held.meta["rating"], np.where(held.labels == 1, 5.0, 1.0))


def test_whole_file_without_domain_and_csv_tsv_gz(tmp_path: Path) -> None:
    rows = [{"text": "good book", "label": 1}, {"text": "bad, awful", "label": 0}, {"text": "so \"so\"", "label": 2}]
    csv_path = tmp_path / "t.csv"
    csv_path.write_text('text,label\ngood book,1\n"bad, awful",0\n"so ""so""",2\n', encoding="utf-8")
    tsv_path = tmp_path / "t.tsv"
    tsv_path.write_text("label\ttext\n1\tgood book\n0\tbad, awful\n2\tso \"so\"\n", encoding="utf-8")
    gz_path = tmp_path / "t.jsonl.gz"
    with gzip.open(gz_path, "wt", encoding="utf-8") as f:
        f.write("\n".join(json.dumps(r) for r in rows))
    for path in (csv_path, tsv_path, gz_path):
        ds = load_data(str(path))
        assert ds.inputs == ["good book", "bad, awful", 'so "so"'], path
        assert ds.classes == ["0", "1", "2"] and ds.labels.tolist() == [1, 0, 2]


def test_split_column_and_unlabelled(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text("\n".join(json.dumps({"text": f"t{i}", "split": "train" if i < 3 else "test"}) for i in range(5)))
    assert load_text_table(path, "test").inputs == ["t3", "t4"]
    assert len(load_text_table(path, "all")) == 5
    assert load_text_table(path).labels is None


def test_is_text_table_tells_text_csv_from_feature_csv(tmp_path: Path) -> None:
    (tmp_path / "f.csv").write_text("a,b,label\n1,2,0\n", encoding="utf-8")
    (tmp_path / "t.csv").write_text("text,label\nhi,0\n", encoding="utf-8")
    assert not is_text_table(tmp_path / "f.csv") and is_text_table(tmp_path / "t.csv")
    assert load_data(str(tmp_path / "f.csv")).kind == "vector"


def test_options_with_other_column_names(tmp_path: Path) -> None:
    path = tmp_path / "o.jsonl"
    path.write_text(json.dumps({"body": "nice", "stars": 5, "site": "x"}) + "\n" + json.dumps(
        {"body": "meh", "stars": 2, "site": "y"}), encoding="utf-8")
    ds = load_data(f"{path}?text=body&label=stars&domain=y&domain_column=site")
    assert ds.inputs == ["meh"] and ds.classes == ["2", "5"] and ds.labels.tolist() == [0]
    assert parse_spec("a.jsonl?domain=b") == ("a.jsonl", {"domain": "b"})


@pytest.mark.parametrize(
    ("content", "spec_suffix", "message"),
    [
        ('{"body": "x"}', "", "no text column 'text'"),
        ('{"text": ""}', "", "row 1: the 'text' field is empty"),
        ('{"text": 3}', "", "not a string"),
        ('{"text": "a", "label": "p"}\n{"text": "b"}', "", "label 'label' is empty in rows \\[2\\]"),
        ('{"text": "a"}\nnot json', "", "line 2: not valid JSON"),
        ('[1, 2]', "", "expected a JSON object per line"),
        ('{"text": "a", "domain": "b"}', "?domain=zzz", "no rows with domain == 'zzz'; it holds: b"),
        ('{"text": "a"}', "?domain=b", "no 'domain' column"),
        ('{"text": "a"}', "?colour=red", "options after '\\?'"),
        ('{"text": "a", "label": -1}', "", "must be >= 0"),
    ],
)
def test_bad_text_files_name_the_problem(tmp_path: Path, content: str, spec_suffix: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        load_data(str(path) + spec_suffix)


def test_non_utf8_and_missing_and_empty(tmp_path: Path) -> None:
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes('{"text": "caf\xe9"}'.encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        load_data(str(latin))
    with pytest.raises(DataError, match="does not exist"):
        load_text_table(tmp_path / "nope.jsonl")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="holds no rows"):
        load_data(str(empty))


def test_fingerprint_follows_the_text(reviews_jsonl: Path) -> None:
    a = load_data(f"{reviews_jsonl}?domain=books")
    b = load_data(f"{reviews_jsonl}?domain=books")
    assert a.fingerprint() == b.fingerprint()
    b.inputs[0] = b.inputs[0] + "!"
    assert a.fingerprint() != b.fingerprint()


def test_amazon_text_splits(data_root: Path) -> None:
    all_ = load_data("amazon-text-kitchen", "all", root=data_root)
    train, test = (load_data("amazon-text-kitchen", s, root=data_root) for s in ("train", "test"))
    assert (len(all_), len(train), len(test)) == (2000, 1600, 400)
    assert all_.classes == ["negative", "positive"] and all_.class_counts() == {"negative": 1000, "positive": 1000}
    # disjoint items (the collection itself repeats a few reviews word for word, so compare positions)
    assert not set(train.origin[1].tolist()) & set(test.origin[1].tolist())
    with pytest.raises(DataError, match="splits train, test, all"):
        load_data("amazon-text-kitchen", "val", root=data_root)

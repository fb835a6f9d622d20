"""20 Newsgroups: the 20-way task with its `group` field and the cross-domain topic pairs."""

import gzip
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from transferkit.data.catalog import list_datasets, load_dataset
from transferkit.data.newsgroups import CATEGORIES, NEWSGROUPS_FILE, PAIR_GROUPS, pair_categories
from transferkit.errors import DataError


def test_pairs_split_every_group_into_disjoint_halves() -> None:
    assert pair_categories("comp", "rec", "source") == [
        "comp.graphics", "comp.sys.ibm.pc.hardware", "comp.windows.x", "rec.autos", "rec.sport.baseball"]
    assert pair_categories("comp", "rec", "target") == [
        "comp.os.ms-windows.misc", "comp.sys.mac.hardware", "rec.motorcycles", "rec.sport.hockey"]
    for g in PAIR_GROUPS:
        members = {c for c in CATEGORIES if c.startswith(g + ".")}
        s = set(pair_categories(g, "sci" if g != "sci" else "rec", "source")) & members
        t = set(pair_categories(g, "sci" if g != "sci" else "rec", "target")) & members
        assert s and t and not s & t and s | t == members
    with pytest.raises(DataError, match="fewer than two"):
        pair_categories("alt", "rec", "source")
    assert "20newsgroups-comp-vs-rec-source" in list_datasets() and "20newsgroups-sci-vs-talk-target" in list_datasets()


def test_twenty_way_task_and_its_group_field(data_root: Path) -> None:
    train, test = (load_dataset("20newsgroups", s, root=data_root) for s in ("train", "test"))
    assert (len(train), len(test)) == (11314, 7532) and train.kind == "text"
    assert train.classes == list(CATEGORIES) and set(np.unique(train.labels)) == set(range(20))
    assert train.class_counts()["rec.sport.hockey"] == 600  # the bydate split's known size
    groups = Counter(train.meta["group"].tolist())
    assert set(groups) == {"alt", "comp", "misc", "rec", "sci", "soc", "talk"}
    i = int(np.flatnonzero(train.labels == CATEGORIES.index("sci.space"))[0])
    assert train.meta["group"][i] == "sci" and isinstance(train.inputs[i], str)
    assert len(load_dataset("20newsgroups", "all", root=data_root)) == 18846


def test_a_pair_holds_other_subcategories_in_source_and_target(data_root: Path) -> None:
    src = load_dataset("20newsgroups-rec-vs-sci-source", "train", root=data_root)
    tgt = load_dataset("20newsgroups-rec-vs-sci-target", "test", root=data_root)
    assert src.classes == tgt.classes == ["rec", "sci"]
    assert set(src.meta["category"]) == set(pair_categories("rec", "sci", "source"))
    assert set(tgt.meta["category"]) == set(pair_categories("rec", "sci", "target"))
    for ds in (src, tgt):  # the label is the category's group
        assert [ds.classes[y] for y in ds.labels] == [c.split(".")[0] for c in ds.meta["category"]]
    assert 1000 < src.class_counts()["rec"] < 1300  # two sub-categories of ~600 training posts


def test_bad_split_and_a_corrupt_file(data_root: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="splits train, test, all"):
        load_dataset("20newsgroups", "val", root=data_root)
    root = tmp_path / "root"
    (root / "20newsgroups").mkdir(parents=True)
    shutil.copy(data_root / NEWSGROUPS_FILE, root / NEWSGROUPS_FILE)
    with gzip.open(root / NEWSGROUPS_FILE, "at", encoding="utf-8") as f:
        f.write(json.dumps({"split": "train", "label": 3, "category": "sci.space", "text": "x"}) + "\n")
    with pytest.raises(DataError, match="checksum mismatch"):
        load_dataset("20newsgroups", "train", root=root)



def test_a_pair_is_a_subset_of_the_twenty_way_split(data_root: Path) -> None:
    """So a frozen encoder's cached features of ``20newsgroups`` serve every pair (no second extraction)."""
    pair = load_dataset("20newsgroups-sci-vs-talk-target", "test", root=data_root)
    whole, idx = pair.origin
    assert whole.domain == "20newsgroups" and len(whole) == 7532 and len(idx) == len(pair)
    assert whole.fingerprint() == load_dataset("20newsgroups", "test", root=data_root).fingerprint()
    assert [whole.inputs[i] for i in idx[:5]] == pair.inputs[:5]
    assert len(pair.meta["category"]) == len(pair.meta["group"]) == len(pair)

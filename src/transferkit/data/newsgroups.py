"""20 Newsgroups ("bydate" split) from a data root: the 20-way topic task, and cross-domain topic pairs.

The file is ``<root>/20newsgroups/20newsgroups_bydate.jsonl.gz``, one JSON object per post with ``split``
(train 11,314 / test 7,532), ``label`` (0-19), ``category`` (``comp.graphics`` ...) and ``text`` (the post as
distributed, headers such as ``From:`` and ``Subject:`` included). It is checked by SHA-256 like every benchmark
file (:mod:`transferkit.data.benchmarks`).

- ``20newsgroups``: the 20 categories as classes; every item also carries ``group``, the category's top-level
  name (alt, comp, misc, rec, sci, soc, talk), so a second head can learn the coarse topic (``model.heads``).
- ``20newsgroups-<a>-vs-<b>-source`` / ``-target`` for two of comp, rec, sci, talk: the binary task "is the post
  about a or b", where source and target hold *different* sub-categories of each (the classic cross-domain text
  setting of Dai et al., KDD 2007). The rule here is transferkit's own, stated so it can be checked: each top-level
  group's sub-categories in sorted order go alternately to the source (1st, 3rd, ...) and the target (2nd,
  4th, ...). Every item carries ``category``, its sub-category.

Example:
    >>> from transferkit.data.newsgroups import pair_categories
    >>> pair_categories("rec", "sci", "source")
    ['rec.autos', 'rec.sport.baseball', 'sci.crypt', 'sci.med']
"""

from __future__ import annotations

import functools
import gzip
import json
import zlib
from itertools import combinations
from pathlib import Path

import numpy as np

from transferkit.data.benchmarks import _file_key, verified_file
from transferkit.data.domain import DomainDataset
from transferkit.data.registry import DatasetLoader, register_dataset
from transferkit.errors import DataError

NEWSGROUPS_FILE = "20newsgroups/20newsgroups_bydate.jsonl.gz"
NEWSGROUPS_SPLITS = ("train", "test", "all")
CATEGORIES = (
    "alt.atheism", "comp.graphics", "comp.os.ms-windows.misc", "comp.sys.ibm.pc.hardware", "comp.sys.mac.hardware",
    "comp.windows.x", "misc.forsale", "rec.autos", "rec.motorcycles", "rec.sport.baseball", "rec.sport.hockey",
    "sci.crypt", "sci.electronics", "sci.med", "sci.space", "soc.religion.christian", "talk.politics.guns",
    "talk.politics.mideast", "talk.politics.misc", "talk.religion.misc",
)  # label i is CATEGORIES[i] (checked on every read)
PAIR_GROUPS = ("comp", "rec", "sci", "talk")  # the groups with several sub-categories: the cross-domain pairs
ROLES = ("source", "target")


def group_of(category: str) -> str:
    """``"rec.sport.hockey"`` -> ``"rec"``."""
    return category.split(".", 1)[0]


def pair_categories(a: str, b: str, role: str) -> list[str]:
    """The sub-categories of groups ``a`` and ``b`` that the ``role`` ("source" or "target") domain holds."""
    if role not in ROLES:
        raise DataError(f"role must be one of {', '.join(ROLES)}; got {role!r}")
    picked = []
    for group in (a, b):
        members = sorted(c for c in CATEGORIES if group_of(c) == group)
        if len(members) < 2:
            raise DataError(f"group {group!r} has fewer than two sub-categories; pairs use {', '.join(PAIR_GROUPS)}")
        picked += members[ROLES.index(role)::2]
    return picked


@functools.lru_cache(maxsize=2)
def _read(path: str, size: int, mtime_ns: int) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """(texts, labels, splits) of the whole file, parsed once per process."""
    texts, labels, splits = [], [], []
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    text, label, category, split = row["text"], row["label"], row["category"], row["split"]
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise DataError(f"{path}, line {n}: expected a JSON object with text, label, category and "
                                    f"split ({exc})") from None
                if not isinstance(label, int) or not 0 <= label < len(CATEGORIES) or CATEGORIES[label] != category:
                    raise DataError(f"{path}, line {n}: label {label!r} / category {category!r} do not match the "
                                    "20 Newsgroups categories in their usual order")
                if not isinstance(text, str) or not text.strip() or split not in NEWSGROUPS_SPLITS[:2]:
                    raise DataError(f"{path}, line {n}: an empty text or a split other than train/test ({split!r})")
                texts.append(text)
                labels.append(label)
                splits.append(split)
    except (OSError, EOFError, UnicodeDecodeError, zlib.error) as exc:
        raise DataError(f"cannot read 20 Newsgroups from {path}: {exc}") from exc
    label_array, split_array = np.asarray(labels, dtype=np.int64), np.asarray(splits, dtype=str)
    label_array.flags.writeable = False
    split_array.flags.writeable = False
    return tuple(texts), label_array, split_array


def _twenty_way(name: str, split: str, root: Path | None) -> DomainDataset:
    if split not in NEWSGROUPS_SPLITS:
        raise DataError(f"dataset {name!r} has splits {', '.join(NEWSGROUPS_SPLITS)}; got {split!r}")
    path = verified_file(root, NEWSGROUPS_FILE, name, [NEWSGROUPS_FILE])
    texts, labels, splits = _read(*_file_key(path))
    index = np.flatnonzero(np.ones(len(labels), dtype=bool) if split == "all" else splits == split)
    y = labels[index].copy()
    groups = np.asarray([group_of(CATEGORIES[i]) for i in y], dtype=str)
    return DomainDataset([texts[i] for i in index], y, "20newsgroups", list(CATEGORIES), "text",
                         meta={"path": str(path), "split": split, "group": groups})


@register_dataset("20newsgroups", "20 Newsgroups, 20 topics, posts as raw text, with each post's top-level `group` "
                  "(benchmark root: 20newsgroups/); splits train 11,314 / test 7,532 / all")
def load_newsgroups(split: str = "train", root: Path | None = None) -> DomainDataset:
    """The 20-way task; ``meta["group"]`` is each post's top-level group, a field for a second head."""
    return _twenty_way("20newsgroups", split, root)


def _pair_loader(a: str, b: str, role: str) -> DatasetLoader:
    name = f"20newsgroups-{a}-vs-{b}-{role}"
    wanted = pair_categories(a, b, role)

    def load(split: str = "train", root: Path | None = None) -> DomainDataset:
        from dataclasses import replace

        whole = _twenty_way(name, split, root)
        categories = np.asarray(CATEGORIES, dtype=str)[whole.labels]
        index = np.flatnonzero(np.isin(categories, wanted))
        y = np.asarray([0 if group_of(c) == a else 1 for c in categories[index]], dtype=np.int64)
        # a subset of the 20-way split: a frozen encoder's cached features of 20newsgroups serve every pair
        part = whole.subset(index)
        return replace(part, labels=y, classes=[a, b], domain=name,
                       meta={**part.meta, "category": categories[index]})

    load.__name__ = load.__qualname__ = f"load_{name.replace('-', '_')}"
    load.__doc__ = f"20 Newsgroups, {a} vs {b}, the {role} sub-categories: {', '.join(wanted)}."
    return load


for _a, _b in combinations(PAIR_GROUPS, 2):
    for _role in ROLES:
        register_dataset(
            f"20newsgroups-{_a}-vs-{_b}-{_role}",
            f"20 Newsgroups, {_a} vs {_b}, {_role} sub-categories ({', '.join(pair_categories(_a, _b, _role))}); "
            "splits train / test / all",
        )(_pair_loader(_a, _b, _role))

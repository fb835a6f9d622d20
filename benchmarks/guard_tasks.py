"""Build the negative-transfer tasks of `benchmarks/guard.py` as `.npz` domains from the shared benchmark data.

Tasks built to make adaptation hurt (issue 4), besides Amazon with MCC:

- **unrelated**: the source is 20 Newsgroups, *comp* vs *rec* posts (labels 0/1); the target is Amazon reviews,
  negative vs positive (labels 0/1). The label names pair up by index only: nothing in the source says which
  review is positive, so aligning the two domains can only move target predictions at random.
- **partial**: 20 Newsgroups with four classes in the source (comp, rec, sci, talk, from one set of
  sub-groups) and only two of them in the target (comp, rec, from other sub-groups). Aligning the whole source
  with the target pulls target items towards the two classes it lacks (partial domain adaptation).
- **digits**: USPS, all ten digits, to MNIST holding only digits 0-4 (partial); and to all of MNIST (a task
  where adaptation helps, to check the guard keeps the gain).

Text becomes TF-IDF vectors (5,000 words, fitted on the source and target *train* texts, no labels); every array
is written once into ``out_dir`` and reused.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np

NG_SPLITS = {  # source sub-groups, target sub-groups (the literature's usual comp/rec cross-domain split)
    "a": ({"comp": ["comp.graphics", "comp.os.ms-windows.misc"], "rec": ["rec.autos", "rec.motorcycles"],
           "sci": ["sci.crypt", "sci.electronics"], "talk": ["talk.politics.guns", "talk.politics.mideast"]},
          {"comp": ["comp.sys.ibm.pc.hardware", "comp.sys.mac.hardware"],
           "rec": ["rec.sport.baseball", "rec.sport.hockey"]}),
    "b": ({"comp": ["comp.sys.ibm.pc.hardware", "comp.sys.mac.hardware"],
           "rec": ["rec.sport.baseball", "rec.sport.hockey"],
           "sci": ["sci.med", "sci.space"], "talk": ["talk.politics.misc", "talk.religion.misc"]},
          {"comp": ["comp.graphics", "comp.os.ms-windows.misc"], "rec": ["rec.autos", "rec.motorcycles"]}),
}


def _newsgroups(root: Path) -> list[dict]:
    with gzip.open(root / "20newsgroups" / "20newsgroups_bydate.jsonl.gz", "rt") as f:
        return [json.loads(line) for line in f]


def _amazon_text(root: Path, domain: str) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    """One Amazon domain's 2,000 reviews split 1,500 train / 500 test (fixed shuffle)."""
    with gzip.open(root / "amazon_text" / "amazon_multidomain_raw_text.jsonl.gz", "rt") as f:
        rows = [r for r in map(json.loads, f) if r["domain"] == domain]
    order = np.random.default_rng(0).permutation(len(rows))
    texts = [f"{rows[i]['title']} {rows[i]['text']}" for i in order]
    labels = np.array([int(rows[i]["label"]) for i in order])
    return texts[:1500], labels[:1500], texts[1500:], labels[1500:]


def _pick(
    docs: list[dict], groups: dict[str, list[str]], classes: list[str], split: str
) -> tuple[list[str], np.ndarray]:
    sub = {g: classes.index(c) for c, gs in groups.items() for g in gs}
    rows = [d for d in docs if d["split"] == split and d["category"] in sub]
    return [d["text"] for d in rows], np.array([sub[d["category"]] for d in rows])


def _tfidf_pair(src: tuple, tgt: tuple, classes: list[str], out: Path) -> tuple[Path, Path]:
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(max_features=5000, min_df=2, stop_words="english", sublinear_tf=True)
    vec.fit(src[0] + tgt[0])  # train texts of both domains, labels unused
    paths = []
    for name, (xtr, ytr, xte, yte) in (("source", src), ("target", tgt)):
        path = out.with_name(f"{out.name}-{name}.npz")
        np.savez_compressed(path, x_train=vec.transform(xtr).toarray().astype(np.float32), y_train=ytr,
                            x_test=vec.transform(xte).toarray().astype(np.float32), y_test=yte,
                            classes=np.array(classes))
        paths.append(path)
    return paths[0], paths[1]


def unrelated_task(root: Path, out_dir: Path, target_domain: str) -> tuple[Path, Path]:
    out = out_dir / f"ng-to-{target_domain}"
    if not out.with_name(f"{out.name}-target.npz").exists():
        docs = _newsgroups(root)
        groups = {"0": [c for c in {d["category"] for d in docs} if c.startswith("comp.")],
                  "1": [c for c in {d["category"] for d in docs} if c.startswith("rec.")]}
        src = (*_pick(docs, groups, ["0", "1"], "train"), *_pick(docs, groups, ["0", "1"], "test"))
        _tfidf_pair(src, _amazon_text(root, target_domain), ["0", "1"], out)
    return out.with_name(f"{out.name}-source.npz"), out.with_name(f"{out.name}-target.npz")


def partial_task(root: Path, out_dir: Path, split: str) -> tuple[Path, Path]:
    out = out_dir / f"ng-partial-{split}"
    if not out.with_name(f"{out.name}-target.npz").exists():
        docs = _newsgroups(root)
        classes = ["comp", "rec", "sci", "talk"]
        src_groups, tgt_groups = NG_SPLITS[split]
        src = (*_pick(docs, src_groups, classes, "train"), *_pick(docs, src_groups, classes, "test"))
        tgt = (*_pick(docs, tgt_groups, classes, "train"), *_pick(docs, tgt_groups, classes, "test"))
        _tfidf_pair(src, tgt, classes, out)
    return out.with_name(f"{out.name}-source.npz"), out.with_name(f"{out.name}-target.npz")


def digits_task(root: Path, out_dir: Path, digits: int = 5, target_train: int = 10000) -> tuple[Path, Path]:
    """USPS (ten digits, 16x16 uint8) -> MNIST digits ``0..digits-1`` (a seeded subset of its train split);
    ``digits=10`` is the ordinary USPS -> MNIST task, where adaptation helps."""
    from transferkit.data.benchmarks import load_mnist, load_usps

    src_path, tgt_path = out_dir / "usps10.npz", out_dir / f"mnist0-{digits - 1}.npz"
    classes = np.array([str(i) for i in range(10)])
    if not src_path.exists():
        arrays = {}
        for split in ("train", "test"):
            ds = load_usps(split, root)
            arrays[f"x_{split}"], arrays[f"y_{split}"] = np.asarray(ds.inputs), np.asarray(ds.labels)
        np.savez_compressed(src_path, **arrays, classes=classes)
    if not tgt_path.exists():
        arrays = {}
        for split in ("train", "test"):
            ds = load_mnist(split, root)
            x, y = np.asarray(ds.inputs), np.asarray(ds.labels)
            keep = np.flatnonzero(y < digits)
            if split == "train":
                keep = np.sort(np.random.default_rng(0).choice(keep, min(target_train, len(keep)), replace=False))
            arrays[f"x_{split}"], arrays[f"y_{split}"] = x[keep], y[keep]
        np.savez_compressed(tgt_path, **arrays, classes=classes)
    return src_path, tgt_path

"""examples/textile_defects.py writes a valid ImageFolder tree (a handful of images per class)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("conformal_clip_data", reason="the textile images come from the pip package conformal-clip-data")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "textile_defects.py"
CLASSES = {"nominal", "global_defect", "local_defect"}


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("textile_defects_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _files(root: Path) -> dict[str, dict[str, list[str]]]:
    return {split: {c.name: sorted(f.name for f in c.iterdir()) for c in (root / split).iterdir()}
            for split in ("train", "val")}


def test_writes_a_stratified_imagefolder_tree(example, tmp_path: Path) -> None:
    out = tmp_path / "textile"
    counts = example.write_textile_tree(out, limit=5)
    assert counts == {"train": dict.fromkeys(CLASSES, 3), "val": dict.fromkeys(CLASSES, 2)}
    files = _files(out)
    for c in CLASSES:
        assert len(files["train"][c]) == 3 and len(files["val"][c]) == 2
        assert not set(files["train"][c]) & set(files["val"][c])  # no image in both splits
    src = example.textile_sources()["local_defect"]
    copied = out / "val" / "local_defect" / files["val"]["local_defect"][0]
    assert copied.is_file() and not copied.is_symlink()
    assert copied.read_bytes() == (src / copied.name).read_bytes()
    assert example.tree_matches(out, limit=5) and not example.tree_matches(out)
    # only train/ and val/ at the top (the marker is a hidden file, which image folders skip)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["train", "val"]


def test_split_is_fixed_and_overwrite_is_explicit(example, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    example.write_textile_tree(a, limit=4)
    example.write_textile_tree(b, limit=4)
    assert _files(a) == _files(b)  # same seed, same split
    with pytest.raises(FileExistsError, match="--overwrite"):
        example.write_textile_tree(a, limit=4)
    (a / "train" / "stray").mkdir()  # replaced along with the rest of train/
    (a / "notes.txt").write_text("kept")
    example.write_textile_tree(a, limit=4, seed=1, overwrite=True)
    assert not (a / "train" / "stray").exists() and (a / "notes.txt").read_text() == "kept"
    assert example.tree_matches(a, limit=4, seed=1)


def test_main_prints_the_fit_command(example, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t"
    assert example.main(["--out", str(out), "--limit", "2"]) == 0
    printed = capsys.readouterr().out
    assert f"transferkit fit -c examples/textile_defects.yaml --source {out}" in printed
    assert example.main(["--out", str(out), "--limit", "2"]) == 2  # not empty: refused

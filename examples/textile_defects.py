"""Write the textile defect images of `conformal-clip-data` as an ImageFolder tree, then print how to train on it.

The pip package ``conformal-clip-data`` ships 2,000 simulated fabric images (250x250 greyscale JPEGs): 1,000
nominal, 500 with a global defect (the whole weave changes) and 500 with a local defect (a speckled patch of
about 10x20 pixels anywhere in the image). This script copies them into the layout of the PyTorch
transfer-learning tutorial's ``hymenoptera_data``::

    OUT/train/nominal/*.jpg   OUT/train/global_defect/*.jpg   OUT/train/local_defect/*.jpg
    OUT/val/nominal/*.jpg     OUT/val/global_defect/*.jpg     OUT/val/local_defect/*.jpg

with a fixed, stratified split (70/30 per class, seed 0: 700/300 nominal, 350/150 of each defect class).
The files are copied, not linked. A non-empty OUT is left alone unless ``--overwrite`` is given, which
replaces OUT/train and OUT/val (and nothing else in OUT).

Run:
    python examples/textile_defects.py                    # writes data/textile
    transferkit fit -c examples/textile_defects.yaml      # fine-tunes MobileNetV2 (ImageNet weights) on it
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

DEFAULT_OUT = Path("data/textile")
CLASSES = ("nominal", "global_defect", "local_defect")  # folder names; transferkit sorts them into labels
MARKER = ".textile_defects.json"  # what wrote the tree and how: lets a benchmark reuse it safely
SPLITS = ("train", "val")


def textile_sources() -> dict[str, Path]:
    """The package's image folder of each class; ImportError with the install hint when it is missing."""
    try:
        import conformal_clip_data as ccd
    except ImportError as exc:
        raise ImportError(
            "the textile images come from the pip package conformal-clip-data: pip install conformal-clip-data"
        ) from exc
    return {"nominal": Path(ccd.nominal_dir()), "global_defect": Path(ccd.global_dir()),
            "local_defect": Path(ccd.local_dir())}


def split_files(files: list[Path], val_fraction: float, seed: int) -> dict[str, list[Path]]:
    """A fixed split of one class's files: sorted by name, shuffled by ``seed``, the first share goes to val."""
    files = sorted(files, key=lambda p: p.name)
    order = np.random.default_rng(seed).permutation(len(files))
    n_val = round(val_fraction * len(files))
    return {"val": sorted(files[i] for i in order[:n_val]), "train": sorted(files[i] for i in order[n_val:])}


def write_textile_tree(
    out: str | Path = DEFAULT_OUT,
    *,
    val_fraction: float = 0.3,
    seed: int = 0,
    limit: int | None = None,
    overwrite: bool = False,
    sources: dict[str, Path] | None = None,
) -> dict[str, dict[str, int]]:
    """Copy the textile images into ``out/{train,val}/<class>/`` and return the counts per split and class.

    Args:
        out: the tree's root folder.
        val_fraction: share of each class that goes to ``val`` (stratified; rounded per class).
        seed: the split's seed; the same seed always gives the same split.
        limit: use only the first ``limit`` images (by name) of each class (quick tries and tests).
        overwrite: replace ``out/train`` and ``out/val`` when ``out`` is not empty.
        sources: class name -> folder of JPEGs (default: the conformal-clip-data folders).

    Raises:
        FileExistsError: ``out`` exists, is not empty, and ``overwrite`` is false.
        ValueError: bad ``val_fraction`` or ``limit``, or a source folder holds no JPEGs.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie strictly between 0 and 1, got {val_fraction}")
    if limit is not None and limit < 2:
        raise ValueError(f"limit must be at least 2 images per class (one for each split), got {limit}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file; pass a folder for the ImageFolder tree")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} is not empty; pass --overwrite to replace {out}/train and {out}/val, "
                                  "or choose another folder")
        for split in SPLITS:
            if (out / split).is_dir():
                shutil.rmtree(out / split)
        (out / MARKER).unlink(missing_ok=True)
    sources = sources or textile_sources()
    counts: dict[str, dict[str, int]] = {split: {} for split in SPLITS}
    for name, folder in sources.items():
        files = sorted(Path(folder).glob("*.jpg"), key=lambda p: p.name)
        if not files:
            raise ValueError(f"no .jpg files in {folder} (class {name!r})")
        files = files[:limit] if limit is not None else files
        for split, chosen in split_files(files, val_fraction, seed).items():
            dest = out / split / name
            dest.mkdir(parents=True, exist_ok=True)
            for f in chosen:
                shutil.copyfile(f, dest / f.name)  # a copy: the tree stays valid if the package is removed
            counts[split][name] = len(chosen)
    (out / MARKER).write_text(json.dumps(
        {"val_fraction": val_fraction, "seed": seed, "limit": limit, "counts": counts}, indent=1) + "\n")
    return counts


def tree_matches(out: str | Path, *, val_fraction: float = 0.3, seed: int = 0, limit: int | None = None) -> bool:
    """Whether ``out`` holds a tree this script wrote with these settings (its marker file says so)."""
    marker = Path(out) / MARKER
    if not marker.is_file():
        return False
    meta = json.loads(marker.read_text())
    return (meta.get("val_fraction"), meta.get("seed"), meta.get("limit")) == (val_fraction, seed, limit)


def fit_commands(out: str | Path) -> list[str]:
    """The `transferkit fit` commands that train on the tree at ``out``."""
    src = "" if Path(out) == DEFAULT_OUT else f" --source {out}"
    return [
        f"transferkit fit -c examples/textile_defects.yaml{src}",
        f"transferkit fit -c examples/textile_defects.yaml{src} --strategy linear-probe --set data.augment=false "
        "--name textile-linear-probe --epochs 30 --lr 0.01",
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"root of the tree (default {DEFAULT_OUT})")
    p.add_argument("--val-fraction", type=float, default=0.3, help="share of each class in val/ (default 0.3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    p.add_argument("--limit", type=int, default=None, help="only the first N images of each class")
    p.add_argument("--overwrite", action="store_true", help="replace OUT/train and OUT/val if OUT is not empty")
    args = p.parse_args(argv)
    try:
        counts = write_textile_tree(args.out, val_fraction=args.val_fraction, seed=args.seed, limit=args.limit,
                                    overwrite=args.overwrite)
    except (FileExistsError, ImportError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for split, per_class in counts.items():
        listed = ", ".join(f"{name} {n}" for name, n in per_class.items())
        print(f"{args.out}/{split}: {sum(per_class.values())} images ({listed})")
    print("\nTrain on it (fine-tuning MobileNetV2 from its ImageNet weights; then a linear probe to compare):")
    for cmd in fit_commands(args.out):
        print(f"  {cmd}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

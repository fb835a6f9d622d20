"""The linear probe's L2 strength: a fixed C against C chosen by cross-validation on the source.

On frozen MiniLM sentence embeddings (the ``vec-minilm`` files that ``defaults.py`` writes: every Amazon review pair
and 20 Newsgroups comp-vs-sci), the probe is fitted by :func:`transferkit.finetune.convex_probe.fit_convex_probe`
on the source (the full training split, or K items per class drawn by seed) for every C of the grid, and scored on
the target's test split. One table row per rule, task averages of target accuracy %:

- ``C=x``: a fixed C;
- ``cv-accuracy``: C with the best 5-fold source cross-validated accuracy (what ``finetune.probe_c: null`` does);
- ``oracle``: the best C per run by target labels (a ceiling no rule can use).

    .venv/bin/python benchmarks/defaults.py --families vec-minilm --arms logreg --sizes 20   # writes the vectors
    .venv/bin/python benchmarks/probe_c.py --vectors runs/bench-defaults/vectors/vec-minilm
"""

from __future__ import annotations

import argparse
import itertools
import sys
import warnings
from pathlib import Path

import numpy as np

AMAZON = {"B": "books", "D": "dvd", "E": "electronics", "K": "kitchen"}
SIZES = ("full", "150", "50", "20")


def tasks() -> list[tuple[str, str]]:
    pairs = [(f"amazon-text-{AMAZON[a]}", f"amazon-text-{AMAZON[b]}") for a, b in itertools.permutations("BDEK", 2)]
    return [*pairs, ("20newsgroups-comp-vs-sci-source", "20newsgroups-comp-vs-sci-target")]


def draw(y: np.ndarray, size: str, seed: int) -> np.ndarray:
    if size == "full":
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.choice(np.flatnonzero(y == c), min(int(size), int((y == c).sum())), replace=False)
                           for c in np.unique(y)])


def main() -> None:
    from sklearn.exceptions import ConvergenceWarning

    from transferkit.finetune.convex_probe import C_GRID, fit_convex_probe

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vectors", type=Path, default=Path("runs/bench-defaults/vectors/vec-minilm"))
    p.add_argument("--seeds", default="0,1,2", help="draws of each small source (the full source runs once)")
    args = p.parse_args()
    warnings.simplefilter("ignore", ConvergenceWarning)
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"# {' '.join([Path(sys.executable).name, *sys.argv])}")
    cells: dict[tuple[str, str], list[float]] = {}
    for source, target in tasks():
        s, t = np.load(args.vectors / f"{source}.npz"), np.load(args.vectors / f"{target}.npz")
        xt, yt = t["x_test"], t["y_test"]
        for size in SIZES:
            for seed in seeds[:1] if size == "full" else seeds:
                idx = draw(s["y_train"], size, seed)
                x, y = s["x_train"][idx], s["y_train"][idx]
                k = len(s["classes"])
                scores = {}
                for c in C_GRID:
                    fit = fit_convex_probe(x, y, num_classes=k, seed=seed, c=c)
                    scores[f"C={c:g}"] = float(((xt @ fit.weight.T + fit.bias).argmax(1) == yt).mean())
                cv = fit_convex_probe(x, y, num_classes=k, seed=seed, c=None)
                scores["cv-accuracy"] = scores[f"C={cv.c:g}"]
                scores["oracle"] = max(scores[f"C={c:g}"] for c in C_GRID)
                for rule, acc in scores.items():
                    cells.setdefault((rule, size), []).append(acc)
                print(f"# {source} -> {target} {size} seed {seed}: cv chose C={cv.c:g}", flush=True)
    rules = sorted({r for r, _ in cells}, key=lambda r: (r.startswith("C=") is False, r))
    print("| rule | " + " | ".join(f"{s}/class" if s != "full" else s for s in SIZES) + " |")
    print("|---|" + "---:|" * len(SIZES))
    for rule in rules:
        print(f"| {rule} | " + " | ".join(f"{100 * np.mean(cells[(rule, s)]):.1f}" for s in SIZES) + " |")


if __name__ == "__main__":
    main()

"""Re-judge guard rules on saved label-free arrays: the sure-answers rule's error estimate, and gap rules.

``benchmarks/guard.py --save-arrays DIR`` and ``benchmarks/defaults.py --methods auto --save-arrays DIR`` keep, for
every guard decision, both models' logits and features on the source-validation and target items (no target
label). This script replays decisions from them, so a rule is judged on every run at once without training again.
Target accuracies come from the results file and only score.

``--what flips``: the guard (all rules at their defaults) with the sure-answers rule's error estimate ``atc`` (the
rule before 2026-12-07) or ``atc-doc`` (the larger of ATC and DoC, today's), and, for auto runs, auto's choice
(``info_max`` among source-only and the kept candidates). Mean target accuracy % per cell (suite and method, or
family and size).

``--what gap``: for every adapted model, whether each candidate gap rule would fire, and whether it would be right
(the adapted model below source-only on the target); rejections' net effect in points:

- ``own``: MMD² between source-validation and target features, each model in its own feature space (the rule that is
  off by default: ``adapt.guard_gap_alpha``);
- ``ratio``: that MMD² over the mean MMD² between the source's classes in the same space (the domain gap measured
  against the class structure: a common yardstick for two spaces);
- ``common``: one common space, the source-only model's features: the class-conditional MMD² between each source
  class and the target items each model labels that class (mean, weighted by the target's share of the class).

    .venv/bin/python benchmarks/guard_rules.py --what flips --kind auto benchmarks/results/auto-2026-12-07-bn.jsonl
    .venv/bin/python benchmarks/guard_rules.py --what gap --kind guard runs/bench-guard/results.jsonl
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

SO = "source-only"


Decision = tuple[int, tuple[str, ...], str, dict[str, float], Any]


def decisions(kind: str, path: str, per_task: bool = False) -> Iterator[Decision]:
    """``(run, cell, candidate, target accuracies, loaded arrays)`` for every guard decision with saved arrays (``run``:
    the results file's line; an auto run has one decision per candidate); a cell per task with ``per_task``."""
    for run, line in enumerate(Path(path).read_text().splitlines()):
        r = json.loads(line) if line.strip() else {}
        if kind == "guard" and r.get("arrays"):
            p = next((q for q in (r["arrays"], r["arrays"].replace("-call0.npz", ".npz")) if Path(q).exists()), None)
            if p is not None:
                yield (run, (r["suite"], r["method"], *([r["task"]] * per_task)), r["method"],
                       {SO: 100 * r["source_only"], r["method"]: 100 * r["adapted"]}, np.load(p))
        elif kind == "auto" and r.get("r_arrays"):
            names = [n for n in r["r_auto"]["candidates"] if n != SO]
            accs = {n: 100 * c["target_accuracy"] for n, c in r["r_auto"]["candidates"].items()}
            for i, name in enumerate(names):  # the guard ran once per candidate, in adapt.auto_methods' order
                cell = (r["family"], r["size"], *([f"{Path(r['source']).stem}->{Path(r['target']).stem}"] * per_task))
                yield run, cell, name, accs, np.load(f"{r['r_arrays']}-call{i}.npz")


def candidates(arrays: Any) -> tuple[Any, Any]:
    from transferkit.measure.selection import Candidate

    return tuple(Candidate(c, arrays[f"{c}/target_logits"], arrays[f"{c}/source_val_logits"],
                           arrays[f"{c}/source_val_labels"]) for c in (SO, "adapted"))  # type: ignore[return-value]


def replay_flips(kind: str, path: str, per_task: bool = False) -> list[str]:
    from transferkit.adapt.auto import choose
    from transferkit.measure.guard import guard_decision

    cells: dict[tuple[str, ...], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    runs: dict[int, dict[str, Any]] = {}
    for run_id, cell, name, accs, arrays in decisions(kind, path, per_task):
        so, ad = candidates(arrays)
        c = cells[cell]
        if run_id not in runs:  # one source-only per run
            c[SO].append(accs[SO])
            runs[run_id] = {"cell": cell, "so": so, "accs": accs, "adapted": {}, "rejected": {}}
        c[name].append(accs[name])
        run = runs[run_id]
        run["adapted"][name] = ad
        for est in ("atc", "atc-doc"):
            reasons = guard_decision(so, ad, error_estimate=est).reasons
            c[f"{name} guarded, {est}"].append(accs[SO] if reasons else accs[name])
            run["rejected"].setdefault(est, {})[name] = reasons
    if kind == "auto":
        for run in runs.values():
            for est in ("atc", "atc-doc"):
                chosen = choose(run["so"], run["adapted"], run["rejected"][est], "info_max").chosen
                cells[run["cell"]][f"auto, {est}"].append(run["accs"][chosen])
    cols = sorted({k for c in cells.values() for k in c}, key=lambda k: (k != SO, k))
    lines = ["| cell | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for cell, c in cells.items():
        lines.append(f"| {' '.join(cell)} | " + " | ".join(f"{statistics.fmean(c[k]):.1f}" if c.get(k) else "–"
                                                           for k in cols) + " |")
    lines.append("| mean of cells | " + " | ".join(
        f"{statistics.fmean(statistics.fmean(c[k]) for c in cells.values() if c.get(k)):.1f}" for k in cols) + " |")
    return lines


def _sub(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    return x if len(x) <= k else x[rng.choice(len(x), k, replace=False)]


def gap_measures(arrays: Any) -> dict[str, dict[str, float]]:
    """Each gap measure of the module docstring for source-only and the adapted model."""
    from transferkit.measure.discrepancy import mmd2

    rng = np.random.default_rng(0)
    yv = arrays[f"{SO}/source_val_labels"]
    common_v, common_t = (arrays[f"{SO}/{k}"].astype(np.float32) for k in ("source_val_features", "target_features"))
    pairs = list(itertools.combinations(np.unique(yv), 2))
    pairs = [pairs[i] for i in rng.choice(len(pairs), min(15, len(pairs)), replace=False)]
    out = {}
    for who in (SO, "adapted"):
        fv, ft = (arrays[f"{who}/{k}"].astype(np.float32) for k in ("source_val_features", "target_features"))
        yt = arrays[f"{who}/target_logits"].argmax(1)
        own = mmd2(_sub(fv, 400, rng), _sub(ft, 400, rng))
        between = statistics.fmean(mmd2(_sub(fv[yv == a], 150, rng), _sub(fv[yv == b], 150, rng)) for a, b in pairs)
        cond, weight = 0.0, 0.0
        for c in np.unique(yv):
            a, b = common_v[yv == c], common_t[yt == c]
            if len(a) >= 3 and len(b) >= 3:
                share = float((yt == c).mean())
                cond += share * mmd2(_sub(a, 100, rng), _sub(b, 100, rng))
                weight += share
        out[who] = {"own": own, "ratio": own / between, "common": cond / max(weight, 1e-9)}
    return out


def judge_gaps(kind: str, path: str) -> list[str]:
    tally: dict[str, list[float]] = defaultdict(list)  # rule -> the adapted-minus-source-only delta of each firing
    total = 0
    for _, _, name, accs, arrays in decisions(kind, path):
        m = gap_measures(arrays)
        total += 1
        for rule in ("own", "ratio", "common"):
            if m["adapted"][rule] > m[SO][rule]:
                tally[rule].append(accs[name] - accs[SO])
    lines = [f"{total} adapted models", "| rule | fired | rightly (adapted worse) | net points of its rejections |",
             "|---|---:|---:|---:|"]
    for rule in ("own", "ratio", "common"):
        d = tally[rule]
        lines.append(f"| {rule} | {len(d)} | {sum(x < 0 for x in d)} | {-sum(d):+.1f} |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results_jsonl")
    p.add_argument("--kind", choices=("guard", "auto"), required=True,
                   help="guard: rows of benchmarks/guard.py; auto: rows of benchmarks/defaults.py --methods auto")
    p.add_argument("--what", choices=("flips", "gap"), default="flips")
    p.add_argument("--per-task", action="store_true", help="flips: a row per task instead of per family and size")
    args = p.parse_args()
    lines = (replay_flips(args.kind, args.results_jsonl, args.per_task) if args.what == "flips"
             else judge_gaps(args.kind, args.results_jsonl))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

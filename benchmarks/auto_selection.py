"""Re-judge ``adapt.method auto`` and the negative-transfer guard from the defaults suite's auto runs.

Every auto run of ``benchmarks/defaults.py --methods auto`` records, for source-only and each candidate, the
target accuracy (which decided nothing), the guard rules that fired and every label-free validator's score. This
script replays, on those records, what other choices would have given, per family and source size (target
accuracy %, mean over tasks and seeds):

- ``source-only``, each candidate method alone (``dann``, ...) and each guarded (falling back to source-only when
  the guard rejects it);
- ``auto`` as it ran, and ``auto`` with each validator instead (``by:VALIDATOR``), with and without the guard;
- ``ensemble of the kept``: the mean softmax of source-only and the candidates the guard kept (as it ran);
- ``oracle``: the best candidate by target accuracy, a ceiling no label-free rule can pass (shown, never a
  default).

Then each guard rule: how often it fired, how often rightly (the candidate it rejected was below source-only on
the target) and the net effect of its rejections in accuracy points; "alone" counts the rejections no other rule
made, which are what the rule itself decides.

    .venv/bin/python benchmarks/auto_selection.py runs/bench-defaults/auto.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

SO = "source-only"


def _choose(cands: dict[str, Any], validator: str, guarded: bool) -> str | None:
    """What ``choose`` would pick with ``validator`` (None when a candidate lacks the score)."""
    pool = {n: c for n, c in cands.items() if n == SO or not guarded or c.get("kept")}
    scores = {n: c.get("validators", {}).get(validator) for n, c in pool.items()}
    if any(v is None for v in scores.values()):
        return None
    return max(scores, key=lambda n: (scores[n], n == SO))


Cells = dict[tuple[str, str], dict[str, list[float]]]


def replay(rows: list[dict[str, Any]], keep: set[str] | None = None,
           ignore_rules: frozenset[str] = frozenset()) -> tuple[Cells, dict[str, Any]]:
    cells: Cells = defaultdict(lambda: defaultdict(list))
    rules: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for r in rows:
        a = r.get("r_auto")
        if not a:
            continue
        cands = {n: c for n, c in a["candidates"].items() if keep is None or n == SO or n in keep}
        if ignore_rules:  # the guard's verdict as if these rules were off (each run records every rule's outcome)
            cands = {n: c if n == SO else {**c, "kept": not {r for r, f in (c.get("guard_rules") or {}).items()
                                                              if f and r not in ignore_rules}}
                     for n, c in cands.items()}
        acc = {n: 100 * c["target_accuracy"] for n, c in cands.items()}
        cell = cells[(r["family"], r["size"])]
        cell[SO].append(acc[SO])
        if a["chosen"] in acc:  # auto as it ran (only when its choice is among the replayed candidates)
            cell["auto"].append(acc[a["chosen"]])
        cell["oracle"].append(max(acc.values()))
        if a.get("ensemble") is not None:
            cell["ensemble of the kept"].append(100 * a["ensemble"])
        validators = set.union(*(set(c.get("validators", {})) for c in cands.values()))
        for v in sorted(validators):
            for guarded in (True, False):
                pick = _choose(cands, v, guarded)
                if pick is not None:
                    cell[f"by:{v}" + ("" if guarded else " (no guard)")].append(acc[pick])
        for name, c in cands.items():
            if name == SO:
                continue
            cell[name].append(acc[name])
            cell[f"{name} guarded"].append(acc[name] if c.get("kept") else acc[SO])
            fired = {rule for rule, f in (c.get("guard_rules") or {}).items() if f}
            cell[f"{name} guarded without the gap rule"].append(acc[SO] if fired - {"gap"} else acc[name])
            gain = acc[name] - acc[SO]
            for rule in fired:
                rules[rule]["fired"] += 1
                rules[rule]["right"] += gain < 0
                rules[rule]["net_points"] += -gain  # what rejecting it gained
                if fired == {rule}:  # rejections no other rule made: what the rule itself decides
                    rules[rule]["alone"] += 1
                    rules[rule]["alone_right"] += gain < 0
                    rules[rule]["alone_net"] += -gain
    return cells, rules


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results_jsonl", nargs="+")
    p.add_argument("--candidates", default=None, help="replay with only these candidates (comma-separated)")
    p.add_argument("--ignore-rules", default="", help="guard rules to replay as off (comma-separated, e.g. gap)")
    args = p.parse_args()
    rows = [json.loads(line) for f in args.results_jsonl for line in Path(f).read_text().splitlines() if line.strip()]
    cells, rules = replay(rows, set(args.candidates.split(",")) if args.candidates else None,
                          frozenset(r for r in args.ignore_rules.split(",") if r))
    arms = sorted({arm for cell in cells.values() for arm in cell})
    first = [SO, "auto", "oracle"]
    arms = first + [a for a in arms if a not in first]
    print("| arm | " + " | ".join(f"{f} {s}" for f, s in cells) + " | mean |")
    print("|---|" + "---:|" * (len(cells) + 1))
    for arm in arms:
        vals = [statistics.mean(c[arm]) if c.get(arm) else None for c in cells.values()]
        shown = [f"{v:.1f}" if v is not None else "–" for v in vals]
        known = [v for v in vals if v is not None]
        mean = f"{statistics.mean(known):.1f}" if len(known) == len(vals) else "–"
        print(f"| {arm} | " + " | ".join(shown) + f" | {mean} |")
    print("\n| guard rule | fired | rightly | net points per firing | fired alone | rightly | net points, total |"
          "\n|---|---:|---:|---:|---:|---:|---:|")
    for rule, n in sorted(rules.items()):
        print(f"| {rule} | {int(n['fired'])} | {int(n['right'])} | {n['net_points'] / n['fired']:+.2f} | "
              f"{int(n['alone'])} | {int(n['alone_right'])} | {n['alone_net']:+.1f} |")
    times = [(c["seconds"], r["r_auto"]["candidates"][SO]["seconds"]) for r in rows if r.get("r_auto")
             for c in [{"seconds": r.get("r_seconds")}] if c["seconds"] and r["r_auto"]["candidates"][SO]["seconds"]]
    if times:
        ratios = [t / s for t, s in times]
        print(f"\nauto's time / its source-only candidate's: median {statistics.median(ratios):.1f}x "
              f"(range {min(ratios):.1f}-{max(ratios):.1f}x, {len(ratios)} runs)")


if __name__ == "__main__":
    main()

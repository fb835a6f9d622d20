"""A grid of runs chosen among without target labels: ``transferkit sweep``.

Every combination of the ``--over`` values is trained as its own run (``<output_dir>/<name>/<i>-<values>``),
its outputs on the source validation split and the unlabelled target are scored by a label-free validator
(:mod:`transferkit.measure.selection`), collapsed candidates are rejected, and the best remaining one is
chosen. Target labels, where the target has them, are used afterwards and only to *report* which candidate
they would have chosen and how much accuracy the label-free choice left on the table.

Example:
    >>> expand_grid(["method=dann,mcc", "lambda=0.1,1"])[:2]
    [{'adapt.method': 'dann', 'adapt.weight': 0.1}, {'adapt.method': 'dann', 'adapt.weight': 1}]
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from transferkit.config import RunConfig, parse_config, parse_override
from transferkit.errors import ConfigError
from transferkit.runs import RunDir, atomic_write_text

ALIASES = {"method": "adapt.method", "lambda": "adapt.weight", "lr": "train.lr", "epochs": "train.epochs",
           "strategy": "finetune.strategy", "backbone": "model.backbone"}


def expand_grid(over: list[str]) -> list[dict[str, Any]]:
    """``["method=dann,mcc", "lambda=0.1,1"]`` -> one override dict per combination (first key outermost)."""
    axes = []
    for item in over:
        if "=" not in item:
            raise ConfigError(f"--over takes key=v1,v2,... (e.g. method=dann,mcc), got {item!r}")
        key, values = item.split("=", 1)
        key = ALIASES.get(key.strip(), key.strip())
        parsed = [parse_override(f"{key}={v.strip()}")[1] for v in values.split(",") if v.strip()]
        if not parsed:
            raise ConfigError(f"--over {key}: no values")
        axes.append([(key, v) for v in parsed])
    return [dict(combo) for combo in itertools.product(*axes)]


@dataclass
class SweepRow:
    name: str
    overrides: dict[str, Any]
    score: float
    collapsed: str  # the collapse check's reason, "" if it passed
    target_accuracy: float | None  # mean over seeds, when the target has labels (reported only)


def run_sweep(
    base: RunConfig, over: list[str], validator: str, *, overwrite: bool = False, progress: bool = True,
) -> dict[str, Any]:
    """Train every combination, score each by ``validator``, and choose (see the module docstring)."""
    from transferkit.experiment import candidate_outputs, fit
    from transferkit.measure.selection import VALIDATORS, collapse_check

    if validator not in VALIDATORS:
        raise ConfigError(f"unknown validator {validator!r}; choose from {sorted(VALIDATORS)}")
    grid = expand_grid(over)
    root = RunDir(base.run_path)
    root.prepare(overwrite=overwrite)
    rows = []
    for i, overrides in enumerate(grid):
        label = "-".join(re.sub(r"[^A-Za-z0-9._-]", "", f"{k.split('.')[-1]}{v}") for k, v in overrides.items())
        raw = base.model_dump(mode="json")
        raw.update(name=f"{i:02d}-{label}", output_dir=str(root.path))
        raw["adapt"]["guard"] = False  # the sweep itself is the selection
        cfg = parse_config(_apply(raw, overrides), source="--over")
        report = fit(cfg, progress=progress)
        scores, reasons = [], []
        for seed in cfg.seeds:
            cand = candidate_outputs(cfg, seed, need_train_features=validator in ("iwcv", "dev"))
            scores.append(VALIDATORS[validator][0](cand))
            check = collapse_check(cand.target_logits)
            if check.collapsed:
                reasons.append(f"seed {seed}: {check.reason}")
        target = report["summary"].get("target", {}).get("accuracy")
        rows.append(SweepRow(cfg.name, overrides, float(np.mean(scores)), "; ".join(reasons),
                             None if target is None else target["mean"]))

    allowed = [r for r in rows if not r.collapsed]
    chosen = max(allowed, key=lambda r: r.score) if allowed else None
    result: dict[str, Any] = {
        "validator": validator, "over": over,
        "rows": [r.__dict__ for r in rows],
        "chosen": chosen.name if chosen else None,
        "note": "chosen by the label-free validator among candidates whose target predictions did not collapse",
    }
    labelled = [r for r in rows if r.target_accuracy is not None]
    if labelled:
        oracle = max(labelled, key=lambda r: r.target_accuracy or 0.0)
        result["with_target_labels"] = {
            "would_choose": oracle.name,
            "accuracy_of_choice": chosen.target_accuracy if chosen else None,
            "accuracy_of_best": oracle.target_accuracy,
            "gap": None if chosen is None or chosen.target_accuracy is None
            else oracle.target_accuracy - chosen.target_accuracy,
            "note": "target labels are used here only to report; they chose nothing",
        }
    atomic_write_text(root.path / "sweep.json", json.dumps(result, indent=2))
    return result


def _apply(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    for dotted, value in overrides.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for p in parents:
            if not isinstance(node.get(p), dict):
                raise ConfigError(f"--over: {dotted!r} is not a config field")
            node = node[p]
        if leaf not in node:
            raise ConfigError(f"--over: {dotted!r} is not a config field")
        node[leaf] = value
    return raw

"""A grid of runs chosen among without target labels: ``transferkit sweep``.

Every combination of the ``--over`` values is trained as its own run (``<output_dir>/<name>/<i>-<values>``),
its outputs on the source validation split and the unlabelled target are scored by a label-free validator
(:mod:`transferkit.measure.selection`), collapsed candidates are rejected, and the best remaining one is
chosen. Target labels, where the target has them, are used afterwards and only to *report* which candidate
they would have chosen and how much accuracy the label-free choice left on the table.

A value ``low:high`` (or ``low:high:log``) makes an axis continuous: the sweep then asks Optuna's TPE sampler
(seeded, ``trials`` runs) for the settings instead of walking a grid; a collapsed candidate is told to Optuna as
pruned so that it steers away from it. Integer fields get integer ranges (``epochs=2:10``).

Example:
    >>> expand_grid(["method=dann,mcc", "lambda=0.1,1"])[:2]
    [{'adapt.method': 'dann', 'adapt.weight': 0.1}, {'adapt.method': 'dann', 'adapt.weight': 1}]
    >>> parse_axes(["lambda=0.01:1:log"])
    [('adapt.weight', Range(low=0.01, high=1.0, log=True, integer=False))]
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from transferkit.config import RunConfig, parse_config, parse_override, run_name_problem
from transferkit.errors import ConfigError
from transferkit.experiment import candidate_outputs, fit
from transferkit.measure.selection import VALIDATORS, collapse_check
from transferkit.pipeline.model import check_names
from transferkit.runs import RunDir, atomic_write_text

ALIASES = {"method": "adapt.method", "lambda": "adapt.weight", "lr": "train.lr", "epochs": "train.epochs",
           "strategy": "finetune.strategy", "backbone": "model.backbone"}


@dataclass(frozen=True)
class Range:
    """A continuous (or integer) axis ``low:high[:log]``, searched by Optuna."""

    low: float
    high: float
    log: bool = False
    integer: bool = False

    def suggest(self, trial: Any, key: str) -> float | int:
        if self.integer:
            return int(trial.suggest_int(key, int(self.low), int(self.high), log=self.log))
        return float(trial.suggest_float(key, self.low, self.high, log=self.log))


def _parse_range(key: str, text: str) -> Range:
    parts = [p.strip() for p in text.split(":")]
    log = parts[-1] == "log"
    if log:
        parts = parts[:-1]
    if len(parts) != 2:
        raise ConfigError(f"--over {key}: a range is low:high or low:high:log, got {text!r}")
    try:
        low, high = float(parts[0]), float(parts[1])
    except ValueError:
        raise ConfigError(f"--over {key}: range bounds must be numbers, got {text!r}") from None
    if not low < high:
        raise ConfigError(f"--over {key}: a range needs low < high, got {text!r}")
    if log and low <= 0:
        raise ConfigError(f"--over {key}: a log range needs low > 0, got {text!r}")
    integer = all(re.fullmatch(r"[+-]?\d+", p) for p in parts)
    return Range(low, high, log, integer)


def parse_axes(over: list[str]) -> list[tuple[str, list[Any] | Range]]:
    """``key=v1,v2`` -> (field, values); ``key=low:high[:log]`` -> (field, Range)."""
    axes: list[tuple[str, list[Any] | Range]] = []
    for item in over:
        if "=" not in item:
            raise ConfigError(f"--over takes key=v1,v2,... or key=low:high[:log] (e.g. method=dann,mcc), got {item!r}")
        key, values = item.split("=", 1)
        key = ALIASES.get(key.strip(), key.strip())
        if ":" in values and "," not in values:
            axes.append((key, _parse_range(key, values)))
            continue
        parsed = [parse_override(f"{key}={v.strip()}")[1] for v in values.split(",") if v.strip()]
        if not parsed:
            raise ConfigError(f"--over {key}: no values")
        axes.append((key, parsed))
    return axes


def expand_grid(over: list[str]) -> list[dict[str, Any]]:
    """``["method=dann,mcc", "lambda=0.1,1"]`` -> one override dict per combination (first key outermost)."""
    return expand_grid_axes(parse_axes(over))


def expand_grid_axes(axes: list[tuple[str, list[Any] | Range]]) -> list[dict[str, Any]]:
    """:func:`expand_grid` on parsed axes."""
    ranged = [k for k, v in axes if isinstance(v, Range)]
    if ranged:
        raise ConfigError(f"--over {', '.join(ranged)}: a range is searched with trials, not expanded into a grid")
    return [dict(combo) for combo in itertools.product(*[[(k, v) for v in vs] for k, vs in axes])]


@dataclass
class SweepRow:
    name: str
    overrides: dict[str, Any]
    score: float
    collapsed: str  # the collapse check's reason, "" if it passed
    target_accuracy: float | None  # mean over seeds, when the target has labels (reported only)


def run_sweep(
    base: RunConfig, over: list[str], validator: str, *, trials: int | None = None, seed: int = 0,
    overwrite: bool = False, progress: bool = True,
) -> dict[str, Any]:
    """Train every combination (or ``trials`` Optuna suggestions when an axis is a range), score each by
    ``validator``, and choose (see the module docstring)."""
    if validator not in VALIDATORS:
        raise ConfigError(f"unknown validator {validator!r}; choose from {sorted(VALIDATORS)}")
    axes = parse_axes(over)
    searched = any(isinstance(v, Range) for _, v in axes)
    if trials is not None and trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {trials}")
    if searched:
        _optuna()  # a missing package fails before anything is written
    elif trials is not None:
        raise ConfigError("--trials applies to a search over a range (key=low:high); this sweep is a grid")
    for axis_values in itertools.product(*[[v.low, v.high] if isinstance(v, Range) else v for _, v in axes]):
        # every value is checked against the config before the sweep folder exists: bad input writes nothing
        over_cfg = parse_config(_apply(base.model_dump(mode="json"),
                                       dict(zip([k for k, _ in axes], axis_values, strict=True))), source="--over")
        check_names(over_cfg, source="--over")
    _check_candidate_names(axes, (trials or 8) if searched else None)
    root = RunDir(base.run_path)
    root.prepare(overwrite=overwrite)

    def candidate(i: int, overrides: dict[str, Any]) -> SweepRow:
        return _train_and_score(base, root, i, overrides, validator, progress)

    if searched:
        rows = _search(axes, candidate, trials or 8, seed)
    else:
        rows = [candidate(i, overrides) for i, overrides in enumerate(expand_grid_axes(axes))]

    allowed = [r for r in rows if not r.collapsed]
    chosen = max(allowed, key=lambda r: r.score) if allowed else None
    result: dict[str, Any] = {
        "validator": validator, "over": over, "search": "optuna-tpe" if searched else "grid",
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


def _train_and_score(
    base: RunConfig, root: RunDir, i: int, overrides: dict[str, Any], validator: str, progress: bool
) -> SweepRow:
    """Train one candidate as its own run under the sweep folder and score it without target labels."""
    raw = base.model_dump(mode="json")
    raw.update(name=candidate_name(i, overrides), output_dir=str(root.path))
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
    return SweepRow(cfg.name, overrides, float(np.mean(scores)), "; ".join(reasons),
                    None if target is None else target["mean"])


def candidate_name(i: int, overrides: dict[str, Any]) -> str:
    """The run name of candidate ``i``: its index and its values, e.g. ``00-methoddann-weight0.1``."""
    label = "-".join(re.sub(r"[^A-Za-z0-9._-]", "", f"{k.split('.')[-1]}{_short(v)}") for k, v in overrides.items())
    return f"{i:02d}-{label}"


# The longest label a float of a range can give (`.3g`); an integer range's is its longer bound's.
_WIDEST_FLOAT = -1.23e-100  # the longest a 3-significant-digit float prints: 10 characters


def _check_candidate_names(axes: list[tuple[str, list[Any] | Range]], trials: int | None) -> None:
    """Every candidate's run name is checked before the first one trains (a 110-character value used to fail after
    the first candidate had trained, leaving no sweep.json). A search's names are checked with each range at its
    widest value and each listed value, at the last trial's index."""
    keys = [k for k, _ in axes]
    if trials is None:
        combos = [(i, dict(combo)) for i, combo in enumerate(expand_grid_axes(axes))]
    else:
        widest = [[_widest(v)] if isinstance(v, Range) else v for _, v in axes]
        combos = [(trials - 1, dict(zip(keys, values, strict=True))) for values in itertools.product(*widest)]
    for i, overrides in combos:
        name = candidate_name(i, overrides)
        problem = run_name_problem(name)
        if problem is not None:
            values = ", ".join(f"{k}={str(v)[:40]}" for k, v in overrides.items())
            shown = repr(name) if len(name) <= 60 else f"{name[:60]!r}... ({len(name)} characters)"
            raise ConfigError(f"--over {values}: the candidate's run name {shown} cannot be a folder: {problem}; "
                              "use shorter values or fewer characters outside A-Z, 0-9, '.', '_', '-' (the run name "
                              "holds every value)")


def _widest(axis: Range) -> Any:
    if axis.integer:
        return max(int(axis.low), int(axis.high), key=lambda v: len(str(v)))
    return _WIDEST_FLOAT


def _short(value: Any) -> Any:
    return f"{value:.3g}" if isinstance(value, float) else value


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise ConfigError(
            "a range in --over (key=low:high) is searched with Optuna, which is not installed: "
            "pip install 'transferkit[tune]' (or give a list of values instead)"
        ) from None
    return optuna


def _search(axes: list[tuple[str, list[Any] | Range]], candidate: Any, trials: int, seed: int) -> list[SweepRow]:
    """Optuna's TPE sampler (seeded) proposes ``trials`` settings; a collapsed candidate is told as pruned."""
    optuna = _optuna()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    rows = []
    for i in range(trials):
        trial = study.ask()
        overrides = {k: v.suggest(trial, k) if isinstance(v, Range) else trial.suggest_categorical(k, v)
                     for k, v in axes}
        row = candidate(i, overrides)
        rows.append(row)
        if row.collapsed:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, row.score)
    return rows


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

"""The default training budget: optimiser steps that follow the data, cut into at most 20 epochs; explicit epochs or
steps win; a guard's twin trains as long as its adapted run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from transferkit.config import parse_config
from transferkit.experiment import fit
from transferkit.train.budget import Budget, plan_budget


@pytest.mark.parametrize(("source_batches", "heavy", "total", "epochs", "epoch_len", "last"), [
    (1, False, 500, 20, 25, 25),  # 40 items: the floor, each epoch 25 passes
    (29, False, 580, 20, 29, 29),  # 1,800 items: 20 passes
    (938, False, 5000, 6, 938, 5000 - 5 * 938),  # 60,000 items: the ceiling; the last epoch is cut
    (1, True, 200, 20, 10, 10),  # a large pretrained network on little data: a lower floor
    (500, True, 2000, 4, 500, 500),  # ... and a lower ceiling
])
def test_automatic_budget_by_hand(source_batches: int, heavy: bool, total: int, epochs: int, epoch_len: int,
                                  last: int) -> None:
    b = plan_budget(epochs=None, steps=None, source_batches=source_batches, run_batches=source_batches,
                    trainable_parameters=10**8 if heavy else 10**5)
    assert (b.total, b.epochs, b.epoch_len, b.epoch_steps(b.epochs - 1)) == (total, epochs, epoch_len, last)
    assert sum(b.epoch_steps(e) for e in range(b.epochs)) == b.total
    assert b.rule.startswith("auto")


def test_the_longer_target_loader_makes_epochs_longer_not_the_run() -> None:
    src_only = plan_budget(epochs=None, steps=None, source_batches=3, run_batches=3)
    adapted = plan_budget(epochs=None, steps=None, source_batches=3, run_batches=40)
    assert src_only.total == adapted.total == 500
    assert adapted.epoch_len == 40 and adapted.epochs == 13 and adapted.epoch_steps(12) == 20


def test_explicit_epochs_and_steps_win() -> None:
    assert plan_budget(epochs=3, steps=None, source_batches=10, run_batches=12) == Budget(36, 12, 3, "train.epochs")
    b = plan_budget(epochs=None, steps=100, source_batches=10, run_batches=12, grad_accum_steps=2)
    assert (b.total, b.epoch_len, b.epochs, b.rule) == (200, 12, 17, "train.steps")


def _toy(path: Path, n: int, shift: float = 0.0, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.normal(size=(n, 4)).astype(np.float32) + 2.0 * y[:, None] + shift
    np.savez(path, x_train=x, y_train=y, x_test=x, y_test=y)
    return path


def test_a_default_run_on_a_tiny_source_trains_the_floor_without_a_validation_split(tmp_path: Path) -> None:
    source = str(_toy(tmp_path / "s.npz", 40))
    cfg = parse_config({"name": "tiny", "output_dir": str(tmp_path), "data": {"source": source},
                        "model": {"backbone": "mlp", "backbone_kwargs": {"hidden": 8, "depth": 1}}})
    report = fit(cfg, progress=False)
    seed = report["per_seed"][0]
    assert seed["fit"]["steps"] == 500 and "auto" in seed["fit"]["budget"]
    assert "too few to hold out 10 per class" in report["selection"]
    records = [json.loads(line) for line in (tmp_path / "tiny" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 20 and records[-1]["step"] == 500


def test_a_default_run_with_enough_items_per_class_holds_out_ten_percent(tmp_path: Path) -> None:
    source = str(_toy(tmp_path / "s.npz", 220))
    cfg = parse_config({"name": "mid", "output_dir": str(tmp_path), "data": {"source": source},
                        "model": {"backbone": "mlp", "backbone_kwargs": {"hidden": 8, "depth": 1}},
                        "train": {"steps": 30}})
    report = fit(cfg, progress=False)
    assert report["selection"].startswith("best source-validation accuracy")
    assert report["per_seed"][0]["fit"]["steps"] == 30


@pytest.mark.parametrize("train", [{}, {"epochs": 2}])
def test_the_guards_twin_trains_as_many_steps_as_the_adapted_run(tmp_path: Path, train: dict[str, int]) -> None:
    source, target = _toy(tmp_path / "s.npz", 40), _toy(tmp_path / "t.npz", 400, shift=0.5, seed=1)
    data = {"source": str(source), "target": str(target)}
    cfg = parse_config({"name": "g", "output_dir": str(tmp_path), "data": data,
                        "model": {"backbone": "mlp", "backbone_kwargs": {"hidden": 8, "depth": 1}},
                        "adapt": {"method": "dann"}, "train": {**train, "checkpoint_every_minutes": None}})
    fit(cfg, progress=False)
    records = [json.loads(line) for line in (tmp_path / "g" / "metrics.jsonl").read_text().splitlines()]
    last = {r["phase"]: r["step"] for r in records}
    assert last["train"] == last["source-only-train"]
    assert last["train"] == (500 if not train else 2 * 7)  # 400 target items: 7 batches a pass

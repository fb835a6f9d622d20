"""Joint and semi-supervised transfer (issue 8, parts 1-2): L = L_s + λ_t·L_t on K labelled target items per class,
with or without an adaptation method on the unlabelled rest. One engine: L_t is one more loss term."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import invoke_ok, mlp_config, save_splits, two_blobs
from transferkit.config import RunConfig, parse_config
from transferkit.errors import ConfigError, DataError
from transferkit.experiment import fit, load_run_data
from transferkit.runs import read_jsonl
from transferkit.train.engine import StepOutputs, target_cross_entropy


def test_target_cross_entropy_hand_computed() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    out = StepOutputs(torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), None, None, 0.0,
                      labelled_logits=logits, labelled_labels=torch.tensor([0, 1]))
    expected = (math.log(1 + math.exp(-2.0)) + math.log(1 + math.exp(-1.0))) / 2
    term = target_cross_entropy(weight=0.5)
    assert float(term.fn(out)) == pytest.approx(expected) and term.weight_at(0.3) == 0.5
    assert not term.global_batch  # a mean over items: exact per process under accelerate launch
    with pytest.raises(ConfigError, match="labelled target items"):
        term.fn(StepOutputs(torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), None, None, 0.0))


def _domain(path: Path, moved: bool, seed: int) -> Path:
    """Two Gaussian classes at x = -1.5 (a) and x = 1.5 (b). The moved domain sits 4 higher with the classes
    swapped: the domains never overlap, but the source's boundary gets every target item wrong, and only target
    labels can tell (a conditional shift that no unsupervised alignment can undo)."""
    x, y = two_blobs(400, seed, noise=0.4, shift=(0.0, 4.0 if moved else 0.0), swap=moved)
    return save_splits(path, x, y, 300, ("a", "b"))


def _swapped_cfg(tmp_path: Path, name: str, **over: object) -> RunConfig:
    """An MLP run from the source to the swapped, moved target; ``over``: dotted overrides."""
    src, tgt = _domain(tmp_path / "src.npz", False, 0), _domain(tmp_path / "tgt.npz", True, 1)
    # standardize none: per-domain standardisation would hide the domains' offset, all that tells them apart
    return mlp_config(tmp_path / "runs", name, str(src), str(tgt),
                      mlp={"hidden": 32, "depth": 1, "dropout": 0.0, "standardize": "none"},
                      train={"epochs": 15, "lr": 0.01, "device": "cpu"}, adapt={"guard": False}, **over)


def _target_accuracy(report: dict) -> float:
    return report["summary"]["target"]["accuracy"]["mean"]


def test_a_few_target_labels_fix_a_shift_that_source_only_misses(tmp_path: Path) -> None:
    source_only = _target_accuracy(fit(_swapped_cfg(tmp_path, "none"), progress=False))
    joint = fit(_swapped_cfg(tmp_path, "joint", **{"data.target_labels_per_class": 5}), progress=False)
    semi = fit(_swapped_cfg(tmp_path, "semi", **{"data.target_labels_per_class": 5, "adapt.method": "dann"}),
               progress=False)
    print(f"target accuracy: source-only {source_only:.3f}, joint {_target_accuracy(joint):.3f}, "
          f"semi-supervised DANN {_target_accuracy(semi):.3f}")
    assert source_only < 0.6  # the shift is real: the source's boundary does not carry over
    assert _target_accuracy(joint) > max(0.9, source_only + 0.3)
    assert _target_accuracy(semi) > max(0.9, source_only + 0.3)
    records = read_jsonl(tmp_path / "runs" / "semi" / "metrics.jsonl")
    assert {"loss/source_ce", "loss/dann", "loss/target_ce"} <= set(records[0])
    assert "5 labelled target item(s) per class" in joint["per_seed"][0]["selection"]


def test_the_labelled_few_are_chosen_by_seed_and_left_out_of_the_unlabelled_rest(tmp_path: Path) -> None:
    cfg = _swapped_cfg(tmp_path, "x", **{"data.target_labels_per_class": 4, "adapt.method": "dann"})
    a, b, c = load_run_data(cfg, 0), load_run_data(cfg, 0), load_run_data(cfg, 1)
    assert a.target_labelled is not None and a.target_train is not None
    assert a.target_labelled.class_counts() == {"a": 4, "b": 4}
    assert np.array_equal(a.target_labelled.inputs, b.target_labelled.inputs)  # reproducible by seed
    assert not np.array_equal(a.target_labelled.inputs, c.target_labelled.inputs)
    assert len(a.target_train) == 300 - 8 and not a.target_train.is_labelled
    rest = {tuple(r) for r in np.asarray(a.target_train.inputs).round(6)}
    assert not any(tuple(r) in rest for r in np.asarray(a.target_labelled.inputs).round(6))


def test_joint_training_without_a_method_sees_no_unlabelled_target(tmp_path: Path) -> None:
    data = load_run_data(_swapped_cfg(tmp_path, "x", **{"data.target_labels_per_class": 2}), 0)
    assert data.target_train is None and data.target_labelled is not None and len(data.target_labelled) == 4


@pytest.mark.parametrize(
    ("over", "error", "pattern"),
    [
        ({"data.target_labels_per_class": 1000}, DataError,
         r"data.target_labels_per_class = 1000: .*class 'a' has \d+ items, fewer than 1000"),
        ({"data.target_labels_per_class": 2, "data.target": None}, ConfigError, r"needs a target domain"),
        ({"data.target_labels_per_class": 2, "data.eval_split": "train"}, ConfigError, r"score on another split"),
        ({"data.target_labels_per_class": 0}, ConfigError, r"data\.target_labels_per_class"),
    ],
    ids=["more-than-a-class-has", "no-target", "scored-on-the-labelled-split", "zero"],
)
def test_bad_labelled_target_settings(tmp_path: Path, over: dict, error: type, pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        load_run_data(_swapped_cfg(tmp_path, "bad", **over), 0)
    assert not (tmp_path / "runs" / "bad").exists()


def test_unlabelled_target_cannot_give_labelled_items(tmp_path: Path) -> None:
    src = _domain(tmp_path / "src.npz", False, 0)
    tgt = tmp_path / "unlabelled.npz"
    np.savez(tgt, x_train=np.zeros((10, 2), np.float32), x_test=np.zeros((4, 2), np.float32))
    cfg = parse_config({"name": "u", "output_dir": str(tmp_path / "runs"), "model": {"backbone": "mlp"},
                        "data": {"source": str(src), "target": str(tgt), "target_labels_per_class": 2}})
    with pytest.raises(DataError, match=r"has no labels in its 'train' split"):
        fit(cfg, progress=False)
    assert not (tmp_path / "runs" / "u").exists()


def test_cli_target_labels_per_class(tmp_path: Path) -> None:
    src, tgt = _domain(tmp_path / "src.npz", False, 0), _domain(tmp_path / "tgt.npz", True, 1)
    invoke_ok("fit", "--source", src, "--target", tgt, "--backbone", "mlp", "--epochs", "2", "--target-labels", "3",
              "--method", "mcc", "--name", "cli", "--output-dir", tmp_path / "runs", "--no-progress",
              "--set", "train.device=cpu")
    assert "target_labels_per_class: 3" in (tmp_path / "runs" / "cli" / "config.yaml").read_text()


def test_target_weight_follows_its_schedule(tmp_path: Path) -> None:
    from transferkit.experiment import build_model, loss_terms

    cfg = _swapped_cfg(tmp_path, "sched", **{"data.target_labels_per_class": 2, "adapt.target_weight": 0.5,
                                     "adapt.target_schedule": "ramp"})
    terms = {t.name: t for t in loss_terms(cfg, build_model(cfg, load_run_data(cfg, 0)))}
    ramp = terms["target_ce"]
    assert ramp.weight_at(0.0) == 0.0 and ramp.weight_at(1.0) == pytest.approx(0.5 * (2 / (1 + math.exp(-10)) - 1))
    flat = parse_config(cfg.model_dump(mode="json"), {"adapt.target_schedule": "constant"})
    assert {t.name: t for t in loss_terms(flat, build_model(flat, load_run_data(flat, 0)))}[
        "target_ce"].weight_at(0.0) == 0.5

"""Multi-task heads and regression (issue 8, parts 4-5): each loss and metric against a hand-computed value, a fast
synthetic run per capability, and the bad inputs the issue names (colliding head names, NaN regression targets)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import invoke_ok, mlp_config
from transferkit.config import HeadConfig, RunConfig, parse_config
from transferkit.data import load_data
from transferkit.errors import ConfigError, DataError
from transferkit.experiment import fit
from transferkit.models.heads import TransferModel
from transferkit.tasks import (
    Task,
    UncertaintyWeights,
    attach_targets,
    build_tasks,
    multilabel_metrics,
    regression_metrics,
    task_loss,
)


# -- losses and metrics by hand ---------------------------------------------------------------------
def test_regression_loss_is_mse_on_standardised_targets() -> None:
    task = Task("r", "regression", "v", outputs=1, loss="mse", offset=(2.0,), scale=(4.0,))
    out = torch.tensor([[0.5], [-1.0]])
    y = torch.tensor([4.0, 2.0])  # standardised: 0.5, 0.0
    assert float(task_loss(task, out, y)) == pytest.approx(((0.5 - 0.5) ** 2 + (-1.0 - 0.0) ** 2) / 2)
    huber = Task("r", "regression", "v", outputs=1, loss="huber", huber_delta=0.5, offset=(0.0,), scale=(1.0,))
    # |d| = 2 > δ: δ(|d| - δ/2) = 0.5 * 1.75; |d| = 0.2: d²/2 = 0.02
    assert float(task_loss(huber, torch.tensor([[2.0], [0.2]]), torch.tensor([0.0, 0.0]))) == pytest.approx(
        (0.875 + 0.02) / 2)
    assert float(task.decode(torch.tensor([[0.5]]))) == pytest.approx(4.0)


def test_classification_loss_leaves_out_unknown_classes_and_weights_items() -> None:
    task = Task("c", "classification", "group", ("a", "b"), 2)
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    y = torch.tensor([0, 1, -1])  # the third item's class is not one the head knows
    expected = (math.log(1 + math.exp(-2.0)) + math.log(1 + math.exp(-1.0))) / 2
    assert float(task_loss(task, logits, y)) == pytest.approx(expected)
    w = torch.tensor([3.0, 1.0, 1.0])
    weighted = (3 * math.log(1 + math.exp(-2.0)) + math.log(1 + math.exp(-1.0))) / 4
    assert float(task_loss(task, logits, y, weights=w)) == pytest.approx(weighted)
    # the head on the labels leaves unknown items out too: that a training set has every label is checked once,
    # by Engine.fit, not read back from the device every step
    label_task = Task("label", "classification", "label", ("a", "b"), 2)
    assert float(task_loss(label_task, logits, y)) == pytest.approx(expected)


def test_multilabel_loss_and_metrics_by_hand() -> None:
    task = Task("m", "multilabel", "tags", ("x", "y"), 2, loss="bce")
    logits = torch.tensor([[0.0, 0.0]])
    assert float(task_loss(task, logits, torch.tensor([[1.0, 0.0]]))) == pytest.approx(math.log(2))
    m = multilabel_metrics(torch.tensor([[3.0, -3.0], [3.0, 3.0]]), torch.tensor([[1, 0], [1, 0]]), ["x", "y"])
    # predictions {x}, {x, y}; truth {x}, {x}: tp 2, fp 1, fn 0 -> micro-F1 4/5; exact match 1/2
    assert m["micro_f1"] == pytest.approx(0.8) and m["exact_match"] == pytest.approx(0.5)


def test_regression_metrics_by_hand() -> None:
    m = regression_metrics(torch.tensor([1.0, 2.0, 4.0]), torch.tensor([1.0, 3.0, 3.0]))
    assert m["mae"] == pytest.approx(2 / 3) and m["rmse"] == pytest.approx(math.sqrt(2 / 3))
    # R² = 1 - SS_res / SS_tot = 1 - 2 / (8/3)
    assert m["r2"] == pytest.approx(1 - 2 / (8 / 3)) and m["n"] == 3


def test_uncertainty_weighting_by_hand() -> None:
    w = UncertaintyWeights(["a", "b"])
    with torch.no_grad():
        w.log_vars.copy_(torch.tensor([0.0, math.log(4.0)]))
    # exp(-0)·2 + 0 + exp(-log 4)·8 + log 4
    assert float(w([torch.tensor(2.0), torch.tensor(8.0)]).detach()) == pytest.approx(2 + 2 + math.log(4.0))
    assert w.weights() == pytest.approx({"a": 1.0, "b": 0.25})
    started = UncertaintyWeights(["a", "b"], [2.0, 0.5])  # each head starts at its fixed weight
    assert started.weights() == pytest.approx({"a": 2.0, "b": 0.5})
    # exp(-s)·L + s with s = -log w: 2·3 - log 2 + 0.5·4 - log 0.5
    assert float(started([torch.tensor(3.0), torch.tensor(4.0)]).detach()) == pytest.approx(6 + 2 - math.log(2)
                                                                                             - math.log(0.5))
    from transferkit.tasks import head_loss_terms

    zero = [Task("a", "classification", "label", ("x", "y"), 2), Task("b", "regression", "v", weight=0.0)]
    with pytest.raises(ConfigError, match=r"must be > 0 \(head 'b'\)"):
        head_loss_terms(zero, "uncertainty")
    assert [t.name for t in head_loss_terms(zero, "fixed")] == ["task/a", "task/b"]  # weight 0 is fine when fixed


# -- data -----------------------------------------------------------------------------------------------
def _table(path: Path, shift: float, seed: int, nan: bool = False, groups: tuple[str, ...] = ("p", "q")) -> Path:
    """Two classes on x0; ``value`` = 2·x1 + 1 (regression); ``tags`` two 0/1 labels; ``group`` a second
    classification (from x1's sign). The shifted domain moves x by ``shift``."""
    rng = np.random.default_rng(seed)
    n = 400
    y = rng.integers(0, 2, n)
    x = np.stack([np.where(y == 1, 1.5, -1.5), rng.normal(0, 1, n)], 1) + rng.normal(0, 0.3, (n, 2))
    value = 2 * x[:, 1] + 1
    if nan:
        value[[3, 7]] = np.nan
    tags = np.stack([y, (x[:, 1] > 0)], 1).astype(np.float32)
    group = np.where(x[:, 1] > 0, groups[0], groups[1])
    x = (x + shift).astype(np.float32)
    np.savez(path, x_train=x[:300], y_train=y[:300], value_train=value[:300], tags_train=tags[:300],
             group_train=group[:300], x_test=x[300:], y_test=y[300:], value_test=value[300:], tags_test=tags[300:],
             group_test=group[300:], classes=np.array(["a", "b"]))
    return path


def _heads_cfg(tmp_path: Path, name: str, heads: list[dict], **over: object) -> RunConfig:
    """An MLP run with ``heads`` from the table to its shifted copy; ``over``: dotted overrides."""
    src, tgt = _table(tmp_path / "src.npz", 0.0, 0), _table(tmp_path / "tgt.npz", 0.5, 1)
    return mlp_config(tmp_path / "runs", name, str(src), str(tgt), mlp={"hidden": 32, "depth": 1, "dropout": 0.0},
                      model={"heads": heads}, train={"epochs": 8, "lr": 0.03, "device": "cpu"},
                      adapt={"guard": False}, **over)


def test_build_tasks_reads_fields_and_refuses_bad_ones(tmp_path: Path) -> None:
    ds = load_data(str(_table(tmp_path / "t.npz", 0.0, 0)), "train")
    tasks = build_tasks([HeadConfig(name="y"), HeadConfig(name="v", kind="regression", field="value"),
                         HeadConfig(name="g", kind="classification", field="group"),
                         HeadConfig(name="m", kind="multilabel", field="tags")], ds)
    assert [(t.kind, t.outputs) for t in tasks] == [("classification", 2), ("regression", 1),
                                                   ("classification", 2), ("multilabel", 2)]
    assert tasks[1].offset[0] == pytest.approx(float(np.mean(ds.meta["value"])))
    assert tasks[2].classes == ("p", "q")
    item = attach_targets(ds, tasks)[0]
    assert set(item["t"]) == {"task:v", "task:g", "task:m"}
    with pytest.raises(DataError, match=r"does not have per item.*group, tags, value"):
        build_tasks([HeadConfig(name="s", kind="regression", field="stars")], ds)
    with pytest.raises(ConfigError, match="must be a classification head"):
        build_tasks([HeadConfig(name="s", kind="regression", field="label")], ds)
    nan = load_data(str(_table(tmp_path / "nan.npz", 0.0, 0, nan=True)), "train")
    with pytest.raises(DataError, match=r"NaN or Inf at 2 item\(s\) \(indices 3, 7\)"):
        build_tasks([HeadConfig(name="v", kind="regression", field="value")], nan)


def test_colliding_head_names_and_wrong_losses_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'y' is used more than once"):
        _heads_cfg(tmp_path, "c", [{"name": "y"}, {"name": "y", "kind": "regression", "field": "value"}])
    with pytest.raises(ConfigError, match="regression head takes loss"):
        _heads_cfg(tmp_path, "c", [{"name": "v", "kind": "regression", "field": "value", "loss": "bce"}])


def test_unlabelled_drops_every_head_target(tmp_path: Path) -> None:
    ds = load_data(str(_table(tmp_path / "t.npz", 0.0, 0)), "train")
    tasks = build_tasks([HeadConfig(name="v", kind="regression", field="value")], ds)
    blind = attach_targets(ds, tasks).unlabelled()
    assert "t" not in blind[0] and not any(k.startswith("task:") for k in blind.meta)
    assert not {"value", "tags", "group"} & set(blind.meta)  # the raw per-item fields go too
    assert "t" not in attach_targets(blind, tasks)[0]  # nothing left to attach to an unlabelled split


# -- end to end ------------------------------------------------------------------------------------------
def test_multi_task_run_scores_every_head_and_reloads(tmp_path: Path) -> None:
    heads = [{"name": "y"}, {"name": "v", "kind": "regression", "field": "value", "weight": 0.5},
             {"name": "g", "kind": "classification", "field": "group"},
             {"name": "m", "kind": "multilabel", "field": "tags"}]
    report = fit(_heads_cfg(tmp_path, "mt", heads), progress=False)
    ev = report["per_seed"][0]["evaluations"]
    assert ev["source"]["accuracy"] > 0.9  # the primary head: classification as before
    h = ev["source"]["heads"]
    assert set(h) == {"y", "v", "g", "m"} and h["y"]["accuracy"] == ev["source"]["accuracy"]
    assert h["v"]["kind"] == "regression" and h["v"]["r2"] > 0.5  # value = 2·x1 + 1 is learnable
    assert h["g"]["accuracy"] > 0.8 and h["m"]["micro_f1"] > 0.8
    run = tmp_path / "runs" / "mt"
    md = (run / "report.md").read_text()
    assert "## Heads" in md and "| source | v | regression |" in md
    assert "Every head" in (run / "report.html").read_text()
    model = TransferModel.load(run / "model.safetensors")
    assert [t.name for t in model.tasks] == ["y", "v", "g", "m"] and set(model.aux_heads) == {"v", "g", "m"}


def test_uncertainty_weighted_heads_train_their_weights(tmp_path: Path) -> None:
    heads = [{"name": "y"}, {"name": "v", "kind": "regression", "field": "value"}]
    report = fit(_heads_cfg(tmp_path, "uw", heads, **{"model.head_weighting": "uncertainty"}), progress=False)
    from transferkit.runs import read_jsonl

    records = read_jsonl(tmp_path / "runs" / "uw" / "metrics.jsonl")
    assert "loss/tasks" in records[-1] and "loss/task/y" not in records[-1]
    learnt = report["per_seed"][0]["fit"]["head_weights"]  # the selected epoch's exp(-s_i), in the report
    assert set(learnt) == {"y", "v"} and all(w > 0 and w != 1.0 for w in learnt.values())
    assert f"y {learnt['y']:.2f}, v {learnt['v']:.2f}" in (tmp_path / "runs" / "uw" / "report.md").read_text()
    assert "Learnt head weights" in (tmp_path / "runs" / "uw" / "report.html").read_text()


def test_regression_primary_with_feature_alignment(tmp_path: Path) -> None:
    heads = [{"name": "v", "kind": "regression", "field": "value", "loss": "huber"}]
    report = fit(_heads_cfg(tmp_path, "reg", heads, **{"adapt.method": "coral", "adapt.guard": True}), progress=False)
    seed = report["per_seed"][0]
    ev = seed["evaluations"]
    assert set(ev) == {"source", "target"} and ev["target"]["mae"] < 1.0 and "accuracy" not in ev["target"]
    assert seed["fit"]["best_val_mae"] is not None and "MAE" in report["selection"]
    assert "guard" not in seed and "did not run" in seed["guard_note"]  # the guard reads class predictions
    assert report["summary"]["target"]["mae"]["values"] == [ev["target"]["mae"]]
    assert "| MAE | RMSE | R² |" in (tmp_path / "runs" / "reg" / "report.md").read_text()


def test_regression_primary_refuses_methods_that_read_class_predictions(tmp_path: Path) -> None:
    heads = [{"name": "v", "kind": "regression", "field": "value"}]
    with pytest.raises(ConfigError, match=r"reads class predictions.*dan, coral, dann"):
        fit(_heads_cfg(tmp_path, "r2", heads, **{"adapt.method": "mcc"}), progress=False)
    assert not (tmp_path / "runs" / "r2").exists()  # refused before anything was written


def test_cli_fit_evaluate_predict_with_heads(tmp_path: Path) -> None:
    import csv

    import yaml
    cfg = _heads_cfg(tmp_path, "cli", [{"name": "v", "kind": "regression", "field": "value"},
                                 {"name": "g", "kind": "classification", "field": "group"}])
    path = tmp_path / "heads.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    output = invoke_ok("fit", "-c", path, "--epochs", "3", "--no-progress")
    assert "MAE" in output and "R²" in output
    run = tmp_path / "runs" / "cli"
    output = invoke_ok("evaluate", run, "--data", tmp_path / "tgt.npz", "--split", "test")
    assert "head g (classification)" in output and "head v (regression)" in output
    out = tmp_path / "preds.csv"
    invoke_ok("predict", run, "--data", tmp_path / "tgt.npz", "--out", out)
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 100 and set(rows[0]) == {"index", "input", "v", "g", "g_confidence"}
    assert rows[0]["g"] in ("p", "q") and float(rows[0]["v"]) == float(rows[0]["v"])


def test_regression_only_data_without_classes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 2)).astype(np.float32)
    path = tmp_path / "reg.npz"
    np.savez(path, x_train=x[:240], value_train=3 * x[:240, 0], x_test=x[240:], value_test=3 * x[240:, 0])
    cfg = parse_config({"name": "r", "output_dir": str(tmp_path / "runs"), "data": {"source": str(path)},
                        "model": {"backbone": "mlp", "backbone_kwargs": {"hidden": 16, "depth": 1, "dropout": 0.0},
                                  "heads": [{"name": "v", "kind": "regression", "field": "value"}]},
                        "train": {"epochs": 10, "lr": 0.03, "device": "cpu"}})
    report = fit(cfg, progress=False)
    assert report["summary"]["source"]["r2"]["values"][0] > 0.8


def test_a_primary_head_on_another_field_skips_the_guard_and_refuses_few_labels(tmp_path: Path) -> None:
    heads = [{"name": "g", "kind": "classification", "field": "group"}, {"name": "y"}]
    report = fit(_heads_cfg(tmp_path, "g", heads, **{"adapt.method": "dann", "adapt.guard": True, "train.epochs": 2}),
                 progress=False)
    seed = report["per_seed"][0]
    assert "guard" not in seed and "'group'" in seed["guard_note"]
    assert report["classes"] == ["p", "q"] and seed["evaluations"]["source"]["heads"]["y"]["n"] == 100
    with pytest.raises(ConfigError, match="classification head on `label`"):
        fit(_heads_cfg(tmp_path, "g2", heads, **{"data.target_labels_per_class": 2}), progress=False)


def test_lp_ft_trains_every_head_in_its_linear_probe_phase(tmp_path: Path) -> None:
    from transferkit.runs import read_jsonl

    heads = [{"name": "y"}, {"name": "v", "kind": "regression", "field": "value"}]
    fit(_heads_cfg(tmp_path, "lpft", heads, **{"finetune.strategy": "lp-ft", "finetune.lp_epochs": 1, "train.epochs": 1,
                                         "adapt.method": "dan"}), progress=False)
    records = read_jsonl(tmp_path / "runs" / "lpft" / "metrics.jsonl")
    lp = next(r for r in records if r["phase"] == "lp")
    ft = next(r for r in records if r["phase"] == "ft")
    assert {"loss/task/y", "loss/task/v"} <= set(lp) and "loss/dan" not in lp  # nothing to align in lp
    assert {"loss/task/y", "loss/task/v", "loss/dan"} <= set(ft)


def test_init_from_keeps_a_regression_heads_predictions(tmp_path: Path) -> None:
    from transferkit.experiment import build_model, load_run_data

    heads = [{"name": "v", "kind": "regression", "field": "value"}]
    first = _heads_cfg(tmp_path, "pre", heads, **{"train.epochs": 2})
    fit(first, progress=False)
    old = TransferModel.load(tmp_path / "runs" / "pre" / "model.safetensors").eval()
    # the target's values have another mean and spread, so its head is standardised differently
    second = parse_config(first.model_dump(mode="json"), {
        "name": "ft", "data.source": str(tmp_path / "tgt.npz"),
        "model.init_from": str(tmp_path / "runs" / "pre" / "model.safetensors")})
    new = build_model(second, load_run_data(second, 0)).eval()
    assert new.tasks[0].offset != old.tasks[0].offset
    x = torch.randn(5, 2)
    with torch.no_grad():
        before, after = old.tasks[0].decode(old(x)[1]), new.tasks[0].decode(new(x)[1])
    assert torch.allclose(before, after, atol=1e-4)


def test_a_target_class_the_source_lacks_is_counted_not_scored(tmp_path: Path) -> None:
    from transferkit.tasks import task_metrics

    task = Task("g", "classification", "group", ("p", "q"), 2)
    m = task_metrics(task, torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]]), torch.tensor([0, -1, 1]))
    assert m["n"] == 2 and m["unknown"] == 1 and m["accuracy"] == pytest.approx(0.5)
    assert "unknown" not in task_metrics(task, torch.tensor([[2.0, 0.0]]), torch.tensor([0]))

    cfg = _heads_cfg(tmp_path, "gr", [{"name": "y"}, {"name": "g", "kind": "classification", "field": "group"}],
               **{"train.epochs": 2})
    _table(tmp_path / "tgt.npz", 0.5, 1, groups=("p", "r"))  # the target's second group is one the source lacks
    ev = fit(cfg, progress=False)["per_seed"][0]["evaluations"]
    g = ev["target"]["heads"]["g"]
    assert g["unknown"] > 0 and g["n"] + g["unknown"] == ev["target"]["n"]
    assert "unknown" not in ev["source"]["heads"]["g"]
    md = (tmp_path / "runs" / "gr" / "report.md").read_text()
    assert f"{g['n']} (+{g['unknown']} of a class the source lacks, not scored)" in md

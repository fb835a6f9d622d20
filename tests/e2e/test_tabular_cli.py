"""``transferkit fit`` on feature files (Parquet, svmlight) with an MLP and an adaptation method, from a YAML
config or flags alone: no Python code between the user's files and a run directory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.datasets import dump_svmlight_file

from helpers import invoke

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
D = 6


def _domain(rng: np.random.Generator, n: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    """Two separable classes; the target domain is the source moved by ``shift`` (a covariate shift)."""
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, D)) + 4.0 * y[:, None] + shift
    return x, y


def _write_config(path: Path, **sections: dict) -> Path:
    base = {
        "name": "tab", "output_dir": str(path.parent / "runs"), "seeds": [0],
        "model": {"backbone": "mlp", "backbone_kwargs": {"hidden": 64}},
        "train": {"epochs": 5, "lr": 0.01, "device": "cpu"},
    }
    path.write_text(yaml.safe_dump({**base, **sections}))
    return path


def _report(run: Path) -> dict:
    for name in ("config.yaml", "metrics.jsonl", "model.safetensors", "report.json", "report.md"):
        assert (run / name).is_file(), name
    return json.loads((run / "report.json").read_text())


def test_fit_yaml_on_a_parquet_source_target_pair(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for name, shift in (("source", 0.0), ("target", 0.7)):
        xtr, ytr = _domain(rng, 160, shift)
        xte, yte = _domain(rng, 80, shift)
        x, y = np.concatenate([xtr, xte]), np.concatenate([ytr, yte])
        columns = {f"f{j}": x[:, j] for j in range(D)}
        columns["label"] = np.where(y == 1, "pos", "neg")
        columns["split"] = ["train"] * len(xtr) + ["test"] * len(xte)
        pq.write_table(pa.table(columns), tmp_path / f"{name}.parquet")
    config = _write_config(
        tmp_path / "run.yaml",
        data={"source": str(tmp_path / "source.parquet"), "target": str(tmp_path / "target.parquet"),
              "val_fraction": 0.0},
        adapt={"method": "dann"},
    )
    code, out = invoke("fit", "-c", config, "--no-progress")
    assert code == 0, out
    report = _report(tmp_path / "runs" / "tab")
    assert report["method"] == "dann" and report["classes"] == ["neg", "pos"]
    evals = report["evaluations"]
    assert {"source", "target", "target_adapted", "target_source_only"} <= set(evals)
    assert evals["target"]["accuracy"] > 0.8  # separable toy task
    assert "guard" in report and report["guard"]["keep"] in ("adapted", "source-only")
    saved = yaml.safe_load((tmp_path / "runs" / "tab" / "config.yaml").read_text())
    assert saved["adapt"]["method"] == "dann" and saved["data"]["source"].endswith("source.parquet")


def test_fit_flags_on_one_parquet_file_holding_two_domains(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    xs, ys = _domain(rng, 150, 0.0)
    xt, yt = _domain(rng, 150, 0.5)
    x, y = np.concatenate([xs, xt]), np.concatenate([ys, yt])
    columns = {f"f{j}": x[:, j].astype(np.float32) for j in range(D)}
    columns["sentiment"] = y
    columns["site"] = ["books"] * len(xs) + ["dvd"] * len(xt)
    path = tmp_path / "reviews.parquet"
    pq.write_table(pa.table(columns), path)
    code, out = invoke(
        "fit", "--source", f"{path}?label=sentiment&domain_column=site&domain=books",
        "--target", f"{path}?label=sentiment&domain_column=site&domain=dvd", "--backbone", "mlp",
        "--method", "dan", "--epochs", "3", "--lr", "0.01", "--set", "adapt.guard=false",
        "--set", "data.val_fraction=0", "--name", "two", "--output-dir", tmp_path / "runs", "--no-progress",
    )
    assert code == 0, out
    report = _report(tmp_path / "runs" / "two")
    assert report["evaluations"]["target"]["accuracy"] > 0.8


def _svmlight_pair(tmp_path: Path) -> None:
    """``src_{train,test}.svmlight`` and ``tgt_{train,test}.svmlight``; the target never uses the last feature,
    so read without ``n_features`` its files would come out one feature narrower than the source's."""
    rng = np.random.default_rng(2)
    for name, shift in (("src", 0.0), ("tgt", 0.6)):
        for split, n in (("train", 160), ("test", 80)):
            x, y = _domain(rng, n, shift)
            if name == "tgt":
                x[:, -1] = 0.0
            dump_svmlight_file(x, 2 * y - 1, str(tmp_path / f"{name}_{split}.svmlight"), zero_based=True)


def test_fit_yaml_on_svmlight_files_one_per_split(tmp_path: Path) -> None:
    _svmlight_pair(tmp_path)
    options = f"?n_features={D}&zero_based=true"
    config = _write_config(
        tmp_path / "run.yaml",
        data={"source": str(tmp_path / "src_{split}.svmlight") + options,
              "target": str(tmp_path / "tgt_{split}.svmlight") + options, "val_fraction": 0.0},
        adapt={"method": "coral", "guard": False},
    )
    code, out = invoke("fit", "-c", config, "--no-progress")
    assert code == 0, out
    report = _report(tmp_path / "runs" / "tab")
    target = report["evaluations"]["target"]
    assert target["n"] == 80 and target["accuracy"] > 0.8  # scored on tgt_test, adapted on tgt_train
    assert report["classes"] == ["-1", "1"]


def test_fit_refuses_svmlight_widths_that_differ_before_the_run_dir(tmp_path: Path) -> None:
    _svmlight_pair(tmp_path)
    code, out = invoke(
        "fit", "--source", tmp_path / "src_train.svmlight", "--target", tmp_path / "tgt_train.svmlight",
        "--backbone", "mlp", "--method", "dann", "--epochs", "1", "--set", "adapt.guard=false",
        "--name", "bad", "--output-dir", tmp_path / "runs", "--no-progress",
    )
    assert code == 2
    assert "feature widths differ" in out and "n_features=6" in out
    assert not (tmp_path / "runs" / "bad").exists()


def test_amazon_features_example_runs(data_root: Path, tmp_path: Path) -> None:
    """The shipped example, cut to 3 epochs and no guard twin (needs the benchmark root; skipped without it)."""
    code, out = invoke(
        "fit", "-c", EXAMPLES / "amazon_features_dann.yaml", "--epochs", "3", "--set", f"data.root={data_root}",
        "--set", "adapt.guard=false", "--output-dir", tmp_path, "--no-progress",
    )
    assert code == 0, out
    report = _report(tmp_path / "amazon-books-to-dvd-dann")
    assert report["evaluations"]["target"]["accuracy"] > 0.6  # 2 classes, balanced: chance is 0.5

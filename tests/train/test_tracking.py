"""Experiment tracking: what `fit --log-to csv,tensorboard,mlflow` logged is read back from each tool's own files."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from transferkit.cli import app
from transferkit.errors import ConfigError
from transferkit.runs import RunDir, read_jsonl
from transferkit.train.tracking import TrackerGroup, check_trackers


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("tracked")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 160)
    x = (rng.normal(size=(160, 6)) + 1.5 * y[:, None]).astype(np.float32)
    data = tmp / "toy.npz"
    np.savez(data, x_train=x[:120], y_train=y[:120], x_test=x[120:], y_test=y[120:], classes=np.array(["neg", "pos"]))
    result = CliRunner().invoke(app, [
        "fit", "--source", str(data), "--target", str(data), "--method", "dann", "--backbone", "mlp", "--epochs", "3",
        "--name", "tracked", "--output-dir", str(tmp / "runs"), "--no-progress", "--set", "train.device=cpu",
        "--set", "data.val_fraction=0.1", "--log-to", "csv,tensorboard,mlflow",
    ])
    assert result.exit_code == 0, result.output
    return tmp / "runs" / "tracked"


def test_csv_holds_every_epoch_record(tracked_run: Path) -> None:
    with (tracked_run / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    records = read_jsonl(tracked_run / "metrics.jsonl")
    # 3 epochs of DANN, then the guard's source-only twin: as many steps (both domains have 2 batches a pass here)
    assert len(rows) == len(records) == 3 + 3
    assert [r["phase"] for r in rows] == [r["phase"] for r in records]
    assert float(rows[0]["train_loss"]) == pytest.approx(records[0]["train_loss"])


def test_tensorboard_events_hold_the_scalars(tracked_run: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tracked_run / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"train/train_loss", "train/val_acc", "train/loss/dann", "source-only-train/train_loss"} <= set(tags)
    losses = [e.value for e in events.Scalars("train/train_loss")]
    expected = [r["train_loss"] for r in read_jsonl(tracked_run / "metrics.jsonl") if r["phase"] == "train"]
    assert losses == pytest.approx(expected)
    assert "eval/target/accuracy" in tags and "eval/source/accuracy" in tags


def test_mlflow_store_holds_params_metrics_and_artifacts(tracked_run: Path) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tracked_run.parent.resolve() / 'mlflow.db'}")
    run_id = (tracked_run / "mlflow_run_id.txt").read_text().strip()
    run = client.get_run(run_id)
    assert run.info.run_name == "tracked" and run.info.status == "FINISHED"
    assert run.data.params["adapt.method"] == "dann" and run.data.params["train.epochs"] == "3"
    history = client.get_metric_history(run_id, "train/val_acc")
    assert [m.step for m in history] == [r["step"] for r in read_jsonl(tracked_run / "metrics.jsonl")
                                         if r["phase"] == "train"]
    assert 0.0 <= run.data.metrics["eval/target/accuracy"] <= 1.0
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"report.json", "report.md", "config.yaml", "plots"} <= artifacts


def test_unknown_tracker_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown tracker"):
        check_trackers(["tensorbord"])
    result = CliRunner().invoke(app, ["fit", "--source", "x.npz", "--log-to", "wandb"])
    assert result.exit_code == 2 and "tracking.log_to" in result.output


def test_a_failing_tracker_warns_once_and_training_goes_on(tmp_path: Path) -> None:
    class Broken:
        def log_epoch(self, record: dict) -> None:
            raise OSError("database is locked")

    group = TrackerGroup([("mlflow", Broken())])  # type: ignore[list-item]
    with pytest.warns(RuntimeWarning, match="tracking 'mlflow' stopped: OSError: database is locked"):
        group.log_epoch({"phase": "train", "step": 1, "train_loss": 0.1})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        group.log_epoch({"phase": "train", "step": 2, "train_loss": 0.1})  # dropped: no second warning


def test_mlflow_telemetry_is_off_and_a_resume_continues_the_mlflow_run(tracked_run: Path) -> None:
    import os

    from transferkit.train.tracking import MlflowTracker

    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"  # set by the tracker: no usage data leaves the machine
    again = MlflowTracker(RunDir(tracked_run), "tracked", None, "transferkit", tracked_run.parent)
    assert again.run_id == (tracked_run / "mlflow_run_id.txt").read_text().strip()
    again.close()

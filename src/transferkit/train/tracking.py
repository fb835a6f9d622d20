"""Experiment tracking: each run's config, per-epoch metrics and final report go to CSV, TensorBoard and MLflow.

``metrics.jsonl`` in the run directory stays the source of truth; trackers are copies for the tools people
already watch. A tracker that fails (a locked database, a full disk, a server that went away) warns once and
stops; it never ends a training.

- ``csv``: ``metrics.csv`` beside ``metrics.jsonl`` (one row per epoch and phase), rewritten atomically.
- ``tensorboard``: event files under ``<run>/tensorboard`` (``tensorboard --logdir runs``), scalars tagged
  ``<phase>/<metric>``, the config and the Markdown report as text, final scores as ``eval/<split>/<metric>``.
- ``mlflow``: one MLflow run per transferkit run (per seed with several seeds) in a local store,
  ``sqlite:///<output_dir>/mlflow.db`` with artifacts under ``<output_dir>/mlartifacts`` (no server:
  ``mlflow ui --backend-store-uri sqlite:///runs/mlflow.db``), or any tracking URI (``tracking.mlflow_uri``,
  a server included). A folder (``./mlruns``, ``file:///...``) is MLflow's file store, which MLflow 3 keeps only
  behind ``MLFLOW_ALLOW_FILE_STORE``: naming a folder is that choice, so transferkit sets it (unless it is set
  already). Params are the flattened config; the report files are logged as artifacts. A resumed run
  continues the same MLflow run. MLflow's usage telemetry is switched off (``MLFLOW_DISABLE_TELEMETRY``).

:func:`check_tracking` checks the settings before the run folder exists (a missing package, a store path that is
a file); a tracker that still cannot open warns and the run goes on without it.

Example:
    >>> from transferkit.runs import RunDir
    >>> group = open_trackers(["csv"], RunDir(getfixture("tmp_path")), run_name="doc", config={"train": {"lr": 0.1}})
    >>> group.log_epoch({"phase": "train", "epoch": 0, "step": 4, "train_loss": 0.5})
    >>> group.close()
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from transferkit.errors import ConfigError
from transferkit.runs import RunDir, atomic_write_text, read_jsonl

TRACKERS = ("csv", "tensorboard", "mlflow")
_ARTIFACTS = ("config.yaml", "report.json", "report.md", "report.html", "metrics.jsonl", "metrics.csv")


class Tracker(Protocol):
    def log_config(self, config: dict[str, Any]) -> None: ...
    def log_epoch(self, record: dict[str, Any]) -> None: ...
    def log_report(self, report: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


def _numbers(record: dict[str, Any]) -> dict[str, float]:
    """The numeric fields of an epoch record (bools and bookkeeping left out), finite values only."""
    skip = {"phase", "seed", "epoch", "step", "best"}
    return {k: float(v) for k, v in record.items()
            if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return out


def _scores(report: dict[str, Any]) -> dict[str, float]:
    """``{"target/accuracy": 0.91, ...}`` from a seed's report (``evaluations``) or an aggregate one (``summary``)."""
    out: dict[str, float] = {}
    for role, metrics in (report.get("evaluations") or {}).items():
        for name in ("accuracy", "macro_f1", "ece", "mae", "rmse", "r2", "micro_f1", "exact_match"):
            if isinstance(metrics.get(name), (int, float)):
                out[f"{role}/{name}"] = float(metrics[name])
    return out


class CsvTracker:
    """``metrics.csv``: ``metrics.jsonl`` as a table, rewritten after every epoch (so a resumed run stays right)."""

    def __init__(self, run: RunDir) -> None:
        self.run = run

    def log_config(self, config: dict[str, Any]) -> None:
        pass  # config.yaml is already there

    def log_epoch(self, record: dict[str, Any]) -> None:
        records = read_jsonl(self.run.metrics)  # the engine appended ``record`` already
        columns: list[str] = []
        for r in records:
            columns += [k for k in r if k not in columns]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
        atomic_write_text(self.run.path / "metrics.csv", buf.getvalue())

    def log_report(self, report: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardTracker:
    def __init__(self, run: RunDir) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise ConfigError(
                "tracking 'tensorboard' needs the tensorboard package: pip install 'transferkit[track]'"
            ) from exc
        self.writer = SummaryWriter(log_dir=str(run.path / "tensorboard"))
        self.run = run

    def log_config(self, config: dict[str, Any]) -> None:
        import yaml

        self.writer.add_text("config", "```yaml\n" + yaml.safe_dump(config, sort_keys=False) + "```")

    def log_epoch(self, record: dict[str, Any]) -> None:
        phase = record.get("phase", "train")
        for key, value in _numbers(record).items():
            self.writer.add_scalar(f"{phase}/{key}", value, global_step=int(record.get("step", 0)))
        self.writer.flush()

    def log_report(self, report: dict[str, Any]) -> None:
        for key, value in _scores(report).items():
            self.writer.add_scalar(f"eval/{key}", value, global_step=0)
        if self.run.report_md.exists():
            self.writer.add_text("report", self.run.report_md.read_text(encoding="utf-8"))
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class MlflowTracker:
    """Through ``MlflowClient`` (no global active run): several trackers can be open in one process."""

    ID_FILE = "mlflow_run_id.txt"

    def __init__(self, run: RunDir, run_name: str, uri: str | None, experiment: str, output_dir: Path) -> None:
        # MLflow 3 sends usage telemetry to the internet by default; transferkit stays offline unless told otherwise
        # (a user who sets the variable themselves decides).
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as exc:
            raise ConfigError("tracking 'mlflow' needs the mlflow package: pip install 'transferkit[track]'") from exc
        output_dir = Path(output_dir).resolve()
        local = uri is None
        if uri is not None and file_store_path(uri) is not None and not os.environ.get("MLFLOW_ALLOW_FILE_STORE"):
            os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # a folder was asked for (see the module docstring)
        self.uri = uri or f"sqlite:///{output_dir / 'mlflow.db'}"
        self.client = MlflowClient(tracking_uri=self.uri)
        found = self.client.get_experiment_by_name(experiment)
        if found is not None:
            experiment_id = found.experiment_id
        else:
            location = (output_dir / "mlartifacts").as_uri() if local else None
            experiment_id = self.client.create_experiment(experiment, artifact_location=location)
        self.run = run
        id_file = run.path / self.ID_FILE
        previous = id_file.read_text(encoding="utf-8").strip() if id_file.exists() else None
        if previous and self._exists(previous):
            self.run_id = previous  # a resumed run continues its MLflow run
            self.client.update_run(previous, status="RUNNING")
        else:
            self.run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id
            atomic_write_text(id_file, self.run_id + "\n")

    def _exists(self, run_id: str) -> bool:
        try:
            self.client.get_run(run_id)
        except Exception:  # MlflowException: the store was deleted or is another one
            return False
        return True

    def log_config(self, config: dict[str, Any]) -> None:
        from mlflow.entities import Param

        logged = self.client.get_run(self.run_id).data.params
        params = [Param(k, v[:6000]) for k, v in _flatten(config).items() if k not in logged]
        for i in range(0, len(params), 100):  # MLflow's batch limit
            self.client.log_batch(self.run_id, params=params[i : i + 100])

    def log_epoch(self, record: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        step, phase = int(record.get("step", 0)), record.get("phase", "train")
        stamp = _now_ms()
        metrics = [Metric(f"{phase}/{k}", v, stamp, step) for k, v in _numbers(record).items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def log_report(self, report: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        stamp = _now_ms()
        scores = [Metric(f"eval/{k}", v, stamp, 0) for k, v in _scores(report).items()]
        self.client.log_batch(self.run_id, metrics=scores)
        for name in _ARTIFACTS:
            if (self.run.path / name).exists():
                self.client.log_artifact(self.run_id, str(self.run.path / name))
        for png in sorted(self.run.path.glob("*.png")):
            self.client.log_artifact(self.run_id, str(png), artifact_path="plots")

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def _open_one(kind: str, run: RunDir, run_name: str, mlflow_uri: str | None, experiment: str,
              output_dir: str | Path | None) -> Tracker:
    if kind == "csv":
        return CsvTracker(run)
    if kind == "tensorboard":
        return TensorBoardTracker(run)
    return MlflowTracker(run, run_name, mlflow_uri, experiment,
                         Path(output_dir) if output_dir is not None else run.path.parent)


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


class TrackerGroup:
    """The trackers of one run directory. Each call goes to every tracker; one that raises is warned about once and
    dropped, so tracking never ends a training."""

    def __init__(self, trackers: Iterable[tuple[str, Tracker]]) -> None:
        self.trackers = list(trackers)

    def _each(self, method: str, *args: Any) -> None:
        for name, tracker in list(self.trackers):
            try:
                getattr(tracker, method)(*args)
            except Exception as exc:  # any backend failure: keep training, say so once
                warnings.warn(f"tracking {name!r} stopped: {type(exc).__name__}: {exc}", RuntimeWarning, stacklevel=3)
                self.trackers.remove((name, tracker))

    def log_config(self, config: dict[str, Any]) -> None:
        self._each("log_config", config)

    def log_epoch(self, record: dict[str, Any]) -> None:
        self._each("log_epoch", record)

    def log_report(self, report: dict[str, Any]) -> None:
        self._each("log_report", report)

    def close(self) -> None:
        self._each("close")


def check_trackers(kinds: Iterable[str]) -> list[str]:
    """Known names, each once, in a fixed order; a ConfigError names an unknown one."""
    kinds = [k.strip() for k in kinds if k.strip()]
    unknown = sorted(set(kinds) - set(TRACKERS))
    if unknown:
        raise ConfigError(f"tracking.log_to: unknown tracker(s) {unknown}; choose from {', '.join(TRACKERS)}")
    return [k for k in TRACKERS if k in kinds]


def file_store_path(uri: str) -> Path | None:
    """The folder of an MLflow file store (a plain path or a ``file:`` URI), or None for any other URI."""
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    parsed = urlparse(uri)
    scheme = parsed.scheme.lower()
    if scheme == "file":
        return Path(url2pathname(parsed.path))
    if scheme == "" or (len(scheme) == 1 and uri[1:3] in (":\\", ":/")):  # a path (a Windows drive letter too)
        return Path(uri)
    return None


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///PATH`` URI (None for an in-memory or another URI)."""
    if not uri.lower().startswith("sqlite:///"):
        return None
    rest = uri[len("sqlite:///"):]
    return Path(rest) if rest and rest != ":memory:" else None


def check_tracking(kinds: Iterable[str], mlflow_uri: str | None = None) -> list[str]:
    """Check the tracking settings before the run folder is created: known names, each tracker's package installed,
    and a local MLflow store that can be one (a folder that is not a file; a database that is a regular file).
    Returns the trackers, as :func:`check_trackers`."""
    import importlib.util

    checked = check_trackers(kinds)
    for kind, package in (("tensorboard", "tensorboard"), ("mlflow", "mlflow")):
        if kind in checked and importlib.util.find_spec(package) is None:
            raise ConfigError(f"tracking {kind!r} needs the {package} package: pip install 'transferkit[track]'")
    if "mlflow" in checked and mlflow_uri is not None:
        _check_local_store(mlflow_uri)
    return checked


def _check_local_store(uri: str) -> None:
    folder, database = file_store_path(uri), _sqlite_path(uri)
    if folder is not None and folder.exists() and not folder.is_dir():
        raise ConfigError(f"tracking.mlflow_uri {uri!r} is a file, not a folder: an MLflow file store is a folder; "
                          "give a folder or sqlite:///PATH.db")
    if database is not None and database.exists() and not database.is_file():
        raise ConfigError(f"tracking.mlflow_uri {uri!r}: {database} is not a regular file; give the path of an "
                          "MLflow database file (sqlite:///PATH.db)")


def open_trackers(
    kinds: Iterable[str], run: RunDir, *, run_name: str, config: dict[str, Any] | None = None,
    mlflow_uri: str | None = None, experiment: str = "transferkit", output_dir: str | Path | None = None,
) -> TrackerGroup:
    """Open the trackers ``kinds`` for ``run`` and log ``config`` to them."""
    opened: list[tuple[str, Tracker]] = []
    for kind in check_trackers(kinds):
        try:
            opened.append((kind, _open_one(kind, run, run_name, mlflow_uri, experiment, output_dir)))
        except ConfigError:
            raise  # a missing package: the user's to fix (check_tracking says so before the run starts)
        except Exception as exc:  # a store that cannot open (MLflow refuses it, a server is down): warn, go on
            why = " ".join(str(exc).split())[:300]  # one line: MLflow's messages hold newlines
            warnings.warn(f"tracking {kind!r} could not start: {type(exc).__name__}: {why}", RuntimeWarning,
                          stacklevel=2)
    group = TrackerGroup(opened)
    if config is not None:
        group.log_config(config)
    return group

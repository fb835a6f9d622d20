"""Score a finished run's model on labelled data and keep the result beside the run: ``transferkit evaluate``.

Example (a run folder written by :func:`transferkit.fit`)::

    metrics, path = evaluate_run("runs/mnist-lenet", "digits-uci", "test")
    metrics["accuracy"], path   # (0.71..., PosixPath('runs/mnist-lenet/evaluations/digits-uci-test.json'))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transferkit.data import load_data
from transferkit.data.domain import DomainDataset
from transferkit.errors import DataError
from transferkit.evaluate.predict import score
from transferkit.evaluate.run_files import evaluations_folder
from transferkit.models.heads import TransferModel
from transferkit.runs import RunDir, atomic_write_json
from transferkit.tasks import attach_targets


def evaluate_run(
    run: str | Path, data: str, split: str = "test", *, seed: int | None = None, batch_size: int = 256,
    progress: bool = True,
) -> tuple[dict[str, Any], Path]:
    """The metrics of the run's model (``seed``'s, for a multi-seed run) on ``data``'s ``split``, also written to
    ``RUN/evaluations/<data>-<split>.json``.

    Raises:
        DataError: the data lacks what the model's primary head predicts (labels, or a regression target), or its
            classes differ from the model's; ``transferkit predict`` is for data without targets.
    """
    rd = RunDir(Path(run))
    model = TransferModel.load(rd.find_model(seed))
    ds = model.prepare(load_data(data, split))
    _check_scorable(model, ds, f"{data!r} ({split})")
    metrics = score(model, attach_targets(ds, model.tasks), batch_size=batch_size, progress=progress)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{Path(data).name}-{split}")
    return metrics, atomic_write_json(evaluations_folder(rd.path) / f"{safe}.json", metrics)


def _check_scorable(model: TransferModel, ds: DomainDataset, what: str) -> None:
    primary = model.tasks[0]
    if primary.field == "label" and not ds.is_labelled:
        raise DataError(f"{what} has no labels; use `transferkit predict` for unlabelled data")
    if primary.field != "label" and primary.field not in ds.meta:
        raise DataError(f"{what} has no {primary.field!r} for the primary head {primary.name!r}; use "
                        "`transferkit predict` for data without it")
    label_task = next((t for t in model.tasks if t.field == "label"), None)
    if label_task is not None and ds.is_labelled:
        classes = list(label_task.classes)
        if list(ds.classes) != classes:
            raise DataError(
                f"the model predicts classes {classes[:10]}, but {ds.domain!r} has classes {ds.classes[:10]}; "
                "evaluate on data with the same label set"
            )

"""Run a trained model over a dataset (inference mode, batched) and score it."""

from __future__ import annotations

from typing import Any

import torch

from transferkit.data.domain import DomainDataset, collate
from transferkit.errors import DataError
from transferkit.evaluate.metrics import classification_metrics
from transferkit.features import pick_device
from transferkit.models.heads import TransferModel
from transferkit.tasks import batch_targets, task_metrics
from transferkit.ui import make_progress


def predict_logits(
    model: TransferModel,
    dataset: DomainDataset,
    *,
    batch_size: int = 256,
    num_workers: int = 0,
    device: str = "auto",
    progress: bool = False,
    preprocessed: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``(N, C)`` and labels ``(N,)`` (-1 when unlabelled), in dataset order."""
    _, logits, labels = predict_outputs(
        model, dataset, batch_size=batch_size, num_workers=num_workers, device=device, progress=progress,
        preprocessed=preprocessed,
    )
    return logits, labels


@torch.inference_mode()
def predict_outputs(
    model: TransferModel,
    dataset: DomainDataset,
    *,
    batch_size: int = 256,
    num_workers: int = 0,
    device: str = "auto",
    progress: bool = False,
    preprocessed: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Features (what the head sees), logits and labels (-1 when unlabelled), in dataset order.

    ``preprocessed=True``: ``dataset`` already applies this model's preprocessing (e.g. a
    :meth:`~transferkit.data.domain.DomainDataset.precomputed` copy shared by models of one architecture).
    """
    dev = pick_device(device)
    ds = dataset if preprocessed or model.transform is None else dataset.with_transform(model.transform)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                         collate_fn=collate)
    was_training = model.training
    model.eval().to(dev)
    feats, outs, ys = [], [], []
    try:
        with make_progress(progress) as bar:
            task = bar.add_task(f"predict {dataset.domain}", total=len(ds), stats="")
            for batch in loader:
                f, logits = model(batch["x"].to(dev))
                feats.append(f.float().cpu())
                outs.append(logits.float().cpu())
                ys.append(batch["y"])
                bar.update(task, advance=len(batch["y"]))
    finally:
        model.train(was_training)
    return torch.cat(feats), torch.cat(outs), torch.cat(ys)


@torch.inference_mode()
def predict_heads(
    model: TransferModel, dataset: DomainDataset, *, batch_size: int = 256, num_workers: int = 0,
    device: str = "auto", preprocessed: bool = False, progress: bool = False,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Every head's outputs (raw: logits, standardised regression values) and the targets the dataset holds for
    them, by task name, in dataset order."""
    dev = pick_device(device)
    ds = dataset if preprocessed or model.transform is None else dataset.with_transform(model.transform)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                         collate_fn=collate)
    was_training = model.training
    model.eval().to(dev)
    outs: dict[str, list[torch.Tensor]] = {}
    targets: dict[str, list[torch.Tensor]] = {}
    try:
        with make_progress(progress) as bar:
            task = bar.add_task(f"predict {dataset.domain}", total=len(ds), stats="")
            for batch in loader:
                f, primary = model(batch["x"].to(dev))
                for name, o in model.head_outputs(f, primary).items():
                    outs.setdefault(name, []).append(o.float().cpu())
                for name, t in batch_targets(batch, model.tasks).items():
                    targets.setdefault(name, []).append(t)
                bar.update(task, advance=len(batch["y"]))
    finally:
        model.train(was_training)
    return {k: torch.cat(v) for k, v in outs.items()}, {k: torch.cat(v) for k, v in targets.items()}


def score(model: TransferModel, dataset: DomainDataset, **kwargs: Any) -> dict[str, Any]:
    """Metrics of ``model`` on a labelled ``dataset``: its primary head's (classification, regression or multi-label
    ones) and, with several heads, every head's under ``heads``."""
    tasks = getattr(model, "tasks", [])
    if len(tasks) <= 1 and model.primary_kind == "classification" and (not tasks or tasks[0].field == "label"):
        logits, labels = predict_logits(model, dataset, **kwargs)
        metrics = classification_metrics(logits, labels, model.classes)
        metrics["domain"] = dataset.domain
        return metrics

    outs, targets = predict_heads(model, dataset, **kwargs)
    primary = tasks[0]
    if primary.name not in targets:
        raise DataError(f"{dataset.domain!r} has no targets for the primary head {primary.name!r} "
                        f"(field {primary.field!r}); it cannot be scored")
    if primary.field == "label" and bool((targets[primary.name] < 0).any()):
        raise DataError(f"{dataset.domain!r} is unlabelled; unlabelled data cannot be scored")
    metrics = task_metrics(primary, outs[primary.name], targets[primary.name])
    if metrics is None:
        raise DataError(f"no item of {dataset.domain!r} has a class the head {primary.name!r} knows")
    metrics["domain"] = dataset.domain
    heads = {}
    for t in tasks:
        if t.name in targets:
            m = task_metrics(t, outs[t.name], targets[t.name])
            if m is not None:
                heads[t.name] = {"kind": t.kind, **m}
    if len(tasks) > 1:
        metrics["heads"] = heads
    return metrics

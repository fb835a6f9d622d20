"""Run a trained model over a dataset (inference mode, batched) and score it."""

from __future__ import annotations

from typing import Any

import torch

from transferkit.data.domain import DomainDataset
from transferkit.evaluate.metrics import classification_metrics
from transferkit.features import pick_device
from transferkit.models.heads import TransferModel
from transferkit.train.callbacks import make_progress


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
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers)
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


def score(model: TransferModel, dataset: DomainDataset, **kwargs: Any) -> dict[str, Any]:
    """Classification metrics of ``model`` on a labelled ``dataset``."""
    logits, labels = predict_logits(model, dataset, **kwargs)
    metrics = classification_metrics(logits, labels, model.classes)
    metrics["domain"] = dataset.domain
    return metrics

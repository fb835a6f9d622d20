"""The task head and the model the engine trains: backbone -> (bottleneck) -> head.

Adaptation methods see the features and the logits of every batch, so :class:`TransferModel` returns both.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from transferkit.data.standardize import align_to
from transferkit.errors import ModelError
from transferkit.models.backbones import (
    Backbone,
    backbone_from_file,
    backbone_metadata,
    check_fits_file,
    file_shapes,
    metadata_json,
    read_metadata,
)
from transferkit.models.pretrained import load_state_dict_file
from transferkit.runs import atomic_save_safetensors
from transferkit.tasks import Task, default_task

# The tensor types a saved model holds: weights in a float type torch computes with, integer buffers (BatchNorm's
# counters), masks. Anything else in a model file (float8, complex, ...) is refused by name.
_MODEL_DTYPES = frozenset({torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int64, torch.int32,
                           torch.int16, torch.int8, torch.uint8, torch.bool})
META_CLASSES = "transferkit.classes"
META_HEAD = "transferkit.head"
META_TASKS = "transferkit.tasks"


class ClassifierHead(nn.Module):
    """A linear classifier for a new label set (optionally after dropout)."""

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        if num_classes < 2:
            raise ModelError(f"a classifier needs at least 2 classes, got {num_classes}")
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(features))


def _head_for(task: Any, in_features: int, dropout: float) -> nn.Module:
    """A linear head of the task's width; a classifier keeps its two-class minimum."""
    if task.kind == "classification":
        return ClassifierHead(in_features, task.outputs, dropout)
    head = ClassifierHead(in_features, 2, dropout)  # same layout (dropout -> fc), any width
    head.fc = nn.Linear(in_features, task.outputs)
    return head


class Bottleneck(nn.Module):
    """Linear -> BatchNorm -> ReLU: a low-dimensional feature space where domains are aligned (DAN, DANN, ...)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        if out_features < 1:
            raise ModelError(f"bottleneck width must be >= 1, got {out_features}")
        self.net = nn.Sequential(nn.Linear(in_features, out_features), nn.BatchNorm1d(out_features), nn.ReLU())
        self.out_features = out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class DomainDiscriminator(nn.Module):
    """Tells source (logit > 0) from target features: two hidden layers with BatchNorm, one logit out."""

    def __init__(self, in_features: int, hidden: int = 1024, outputs: int = 1) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One logit per item (source vs target), or ``outputs`` logits (k sources and the target)."""
        out = self.net(x)
        return out.squeeze(1) if out.shape[1] == 1 else out


class IdentityBackbone(Backbone):
    """Stands in for a frozen backbone whose features were extracted once (linear probing on a cache)."""

    def __init__(self, out_features: int, spec: str = "identity") -> None:
        super().__init__(nn.Identity(), out_features, spec, None, [], {"out_features": out_features},
                         input_kind="vector")


class TransferModel(nn.Module):
    """``forward(x) -> (features, logits)``: the features feed adaptation losses, the logits the task loss.

    With several ``tasks`` (:mod:`transferkit.tasks`), ``head`` is the first (primary) task's and ``forward`` returns
    its outputs; the other heads sit in ``aux_heads`` and :meth:`head_outputs` runs them all on the features."""

    def __init__(
        self, backbone: Backbone, classes: list[str], head_dropout: float = 0.0, bottleneck_dim: int | None = None,
        tasks: list[Any] | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.tasks = list(tasks) if tasks else [default_task(classes)]
        primary = self.tasks[0]
        # the classes of the primary head when it classifies; the dataset's otherwise (reports, the guard)
        self.classes = list(primary.classes) if primary.kind == "classification" else list(classes)
        self.bottleneck = Bottleneck(backbone.out_features, bottleneck_dim) if bottleneck_dim else nn.Identity()
        self.feature_dim = bottleneck_dim or backbone.out_features
        self.head = _head_for(primary, self.feature_dim, head_dropout)
        self.aux_heads = nn.ModuleDict({t.name: _head_for(t, self.feature_dim, head_dropout) for t in self.tasks[1:]})
        self.head_dropout = head_dropout
        self.bottleneck_dim = bottleneck_dim

    @property
    def primary_kind(self) -> str:
        return str(self.tasks[0].kind)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.bottleneck(self.backbone(x))
        return features, self.head(features)

    def head_outputs(self, features: torch.Tensor, primary: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Every head's outputs on ``features`` by task name (``primary``: the primary head's, when computed)."""
        out = {self.tasks[0].name: primary if primary is not None else self.head(features)}
        out.update({name: head(features) for name, head in self.aux_heads.items()})
        return out

    @property
    def transform(self) -> Any:
        return self.backbone.transform

    def prepare(self, dataset: Any) -> Any:
        """``dataset`` as this model reads a domain of its own: a model trained with per-domain standardisation
        (``mlp``, :mod:`transferkit.data.standardize`) standardises feature vectors by their own statistics (no
        labels used); any other model reads the data as it is."""
        first = next(iter(self.backbone.body.children()), None)
        if self.backbone.kwargs.get("standardize") != "per-domain" or getattr(dataset, "kind", None) != "vector" \
                or not hasattr(first, "mean"):
            return dataset

        return align_to(dataset, first.mean.detach().cpu().numpy(), first.std.detach().cpu().numpy())

    def metadata(self, path: str | Path | None = None) -> dict[str, str]:
        """The architecture as safetensors metadata; with ``path`` (where the model is saved), a backbone built from
        local files writes them beside it (:func:`~transferkit.models.backbones.backbone_metadata`)."""
        meta = backbone_metadata(self.backbone, path)
        meta[META_CLASSES] = json.dumps(self.classes)
        meta[META_HEAD] = json.dumps({"dropout": self.head_dropout, "bottleneck_dim": self.bottleneck_dim})
        meta[META_TASKS] = json.dumps([t.to_json() for t in self.tasks])
        return meta

    def save(self, path: str | Path) -> Path:
        """Write weights and architecture to one safetensors file (no pickle); reload with :meth:`load`.

        A backbone built from a local folder or file (``hf:``, ``st:``, ``onnx:PATH``) also gets its files written
        to ``<stem>.backbone/`` beside it: keep the two together.
        """
        path = Path(path)
        return atomic_save_safetensors(self.state_dict(), path, self.metadata(path))

    @classmethod
    def load(cls, path: str | Path) -> TransferModel:
        """Rebuild a model that :meth:`save` wrote. The file is treated as data: see
        :func:`~transferkit.models.backbones.backbone_from_file` for what its metadata may and may not say."""
        meta = read_metadata(path)
        if META_CLASSES not in meta:
            raise ModelError(f"{path} is not a transferkit model file (no class list in its metadata)")
        classes = metadata_json(meta, META_CLASSES, path, list)
        if not all(isinstance(c, str) for c in classes) or len(classes) > 1_000_000:
            raise ModelError(f"{path}: metadata {META_CLASSES!r} must be a list of class names")
        head = metadata_json(meta, META_HEAD, path, dict, default={})
        dropout, bottleneck = head.get("dropout", 0.0), head.get("bottleneck_dim")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ModelError(f"{path}: metadata {META_HEAD!r} has a bad dropout {dropout!r}")
        if bottleneck is not None and (isinstance(bottleneck, bool) or not isinstance(bottleneck, int)
                                       or not 1 <= bottleneck <= 65536):
            raise ModelError(f"{path}: metadata {META_HEAD!r} has a bad bottleneck_dim {bottleneck!r}")
        tasks = None
        if META_TASKS in meta:
            listed = metadata_json(meta, META_TASKS, path, list)
            if not listed or len(listed) > 64:
                raise ModelError(f"{path}: metadata {META_TASKS!r} must list 1 to 64 tasks")
            try:
                tasks = [Task.from_json(t) for t in listed]
            except ModelError as exc:
                raise ModelError(f"{path}: {exc}") from None
            if len({t.name for t in tasks}) != len(tasks):
                raise ModelError(f"{path}: metadata {META_TASKS!r} names a task twice")
        backbone = backbone_from_file(path, meta)
        with torch.device("meta"):  # the heads the metadata describes, checked against the file before allocating
            skeleton = cls(backbone, classes, head_dropout=float(dropout), bottleneck_dim=bottleneck, tasks=tasks)
        check_fits_file({k: tuple(v.shape) for k, v in skeleton.state_dict().items() if not k.startswith("backbone.")},
                        file_shapes(path), path, "heads")
        model = cls(backbone, classes, head_dropout=float(dropout), bottleneck_dim=bottleneck, tasks=tasks)
        state = load_state_dict_file(path)
        odd = sorted({str(v.dtype) for v in state.values() if v.dtype not in _MODEL_DTYPES})
        if odd:
            raise ModelError(f"{path} holds tensors of type {', '.join(odd)}; a transferkit model file holds float16, "
                             "bfloat16, float32 or float64 weights (and integer buffers)")
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ModelError(f"{path}: weights do not match the architecture it names: {exc}") from exc
        bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
        if bad:
            raise ModelError(f"{path} holds non-finite weights (NaN or Inf in {len(bad)} tensor(s), e.g. {bad[0]!r}): "
                             "it was saved from a training run that diverged; retrain with a lower learning rate")
        return model

"""Task heads beyond one classifier: what each head predicts, how its loss and its metrics are computed.

A :class:`Task` is the data side of a head: its kind (classification, multi-label, regression), the dataset field it
reads (``label`` -- the dataset's classes -- or a per-item array in ``DomainDataset.meta`` such as a text table's
``rating`` or FSDD's ``speaker``), its output width, and for regression the source mean and spread its head is
trained in (a head learns standardised targets whatever their unit; :meth:`Task.decode` turns outputs back).

Tasks are built from the config's ``model.heads`` on the source training split (:func:`build_tasks`), attached to
every labelled split (:func:`attach_targets`), and saved with the model so that a loaded model knows its heads.
With no ``model.heads`` a run has one task, the classifier on ``label`` -- the model and files of every earlier
release.

Example:
    >>> import numpy as np
    >>> from transferkit.data.domain import DomainDataset
    >>> ds = DomainDataset(np.zeros((4, 2), np.float32), np.array([0, 1, 0, 1]), "toy", ["a", "b"], "vector",
    ...                    meta={"stars": np.array([1.0, 5.0, 2.0, 4.0])})
    >>> from transferkit.config import HeadConfig
    >>> [t.outputs for t in build_tasks([HeadConfig(name="y"), HeadConfig(name="s", kind="regression",
    ...                                  field="stars")], ds)]
    [2, 1]
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from transferkit.errors import ConfigError, DataError, ModelError

LABEL = "label"  # the field that means the dataset's own class labels
TARGET_KEY = "task:"  # meta key prefix of a task's prepared targets
IGNORE = -1  # a classification target the head cannot know (a value not seen in the source): not scored
TASK_KINDS = ("classification", "multilabel", "regression")
MAX_OUTPUTS = 1_000_000  # the widest head a model file may ask for


@dataclass(frozen=True)
class Task:
    """One head's task (see the module docstring)."""

    name: str
    kind: str  # classification | multilabel | regression
    field: str = LABEL
    classes: tuple[str, ...] = ()  # class / label names (classification, multilabel)
    outputs: int = 1
    weight: float = 1.0
    loss: str = "cross-entropy"
    huber_delta: float = 1.0
    offset: tuple[float, ...] = ()  # regression: the source mean of each output...
    scale: tuple[float, ...] = ()  # ...and its standard deviation (targets are standardised by them)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["classes"], d["offset"], d["scale"] = list(self.classes), list(self.offset), list(self.scale)
        return d

    @classmethod
    def from_json(cls, d: Any) -> Task:
        """A task as a model file's metadata describes it: every field checked (the file is data, and a head of
        10¹² outputs would be a denial of service), ModelError otherwise."""
        if not isinstance(d, dict) or not set(d) <= _TASK_FIELDS or not {"name", "kind"} <= set(d):
            raise ModelError(f"a task in the model file must be an object with the fields {sorted(_TASK_FIELDS)}")

        def strings(key: str) -> tuple[str, ...]:
            v = d.get(key, [])
            if not isinstance(v, list) or len(v) > MAX_OUTPUTS or not all(isinstance(c, str) for c in v):
                raise ModelError(f"task {str(d.get('name'))[:50]!r}: {key} must be a list of names")
            return tuple(v)

        def numbers(key: str) -> tuple[float, ...]:
            v = d.get(key, [])
            if not isinstance(v, list) or len(v) > MAX_OUTPUTS or not all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x) for x in v):
                raise ModelError(f"task {str(d.get('name'))[:50]!r}: {key} must be a list of finite numbers")
            return tuple(float(x) for x in v)

        name, kind, outputs, field = d["name"], d["kind"], d.get("outputs", 1), d.get("field", LABEL)
        if not isinstance(field, str) or kind not in TASK_KINDS or head_name_problem(name) is not None:
            raise ModelError(f"a task in the model file has a bad name, field or kind ({str(name)[:30]!r}, "
                             f"{str(kind)[:30]!r})")
        if field == LABEL and kind != "classification":
            raise ModelError(f"task {name!r} reads `label`, the dataset's classes, so it must classify (got {kind})")
        if isinstance(outputs, bool) or not isinstance(outputs, int) or not 1 <= outputs <= MAX_OUTPUTS:
            raise ModelError(f"task {name[:50]!r}: outputs must be an integer in 1..{MAX_OUTPUTS}")
        classes, offset, scale = strings("classes"), numbers("offset"), numbers("scale")
        if kind != "regression" and len(classes) != outputs:
            raise ModelError(f"task {name[:50]!r}: {outputs} outputs but {len(classes)} class names")
        if kind == "regression" and not len(offset) == len(scale) == outputs:
            raise ModelError(f"task {name[:50]!r}: {outputs} outputs but {len(offset)} offsets and {len(scale)} scales")
        if kind == "regression" and not all(s > 0 for s in scale):
            raise ModelError(f"task {name[:50]!r}: the scales of a regression head must be positive")
        floats = {k: d[k] for k in ("weight", "huber_delta") if k in d}
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in floats.values()):
            raise ModelError(f"task {name[:50]!r}: weight and huber_delta must be finite numbers")
        loss = d.get("loss", "cross-entropy")
        if not isinstance(loss, str):
            raise ModelError(f"task {name[:50]!r}: loss must be a name")
        return cls(name=name, kind=kind, field=d.get("field", LABEL), classes=classes, outputs=outputs,
                   loss=loss, offset=offset, scale=scale, **{k: float(v) for k, v in floats.items()})

    def decode(self, outputs: torch.Tensor) -> torch.Tensor:
        """Regression outputs in the target's own unit (identity for the other kinds)."""
        if self.kind != "regression":
            return outputs
        return outputs * torch.tensor(self.scale, dtype=outputs.dtype, device=outputs.device) + torch.tensor(
            self.offset, dtype=outputs.dtype, device=outputs.device)

    def encode(self, targets: torch.Tensor) -> torch.Tensor:
        """Regression targets standardised by the source statistics, shaped like the head's outputs."""
        t = targets.float().reshape(targets.shape[0], -1)
        off = torch.tensor(self.offset, dtype=t.dtype, device=t.device)
        return (t - off) / torch.tensor(self.scale, dtype=t.dtype, device=t.device)


_TASK_FIELDS = frozenset(Task.__dataclass_fields__)
_HEAD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_PLAIN_MODULE = nn.Module()  # what every module has (``training``, ``forward``, ...): no head may shadow it


def head_name_problem(name: Any) -> str | None:
    """Why ``name`` cannot name a head (None: it can). A head is a submodule: no '.', no name a module already has
    (``training``, ``forward``), at most 100 characters."""
    if not isinstance(name, str) or not _HEAD_NAME.fullmatch(name) or len(name) > 100:
        return "use up to 100 letters, digits, '_' and '-' (no '.', no spaces), starting with a letter or digit"
    if hasattr(_PLAIN_MODULE, name) or name in ("head", "backbone", "bottleneck", "aux_heads"):
        return f"{name!r} is a name the model itself uses"
    return None


def default_task(classes: Sequence[str]) -> Task:
    """The single classifier on the dataset's classes: every run without ``model.heads``."""
    return Task(LABEL, "classification", LABEL, tuple(classes), len(classes))


def is_default(tasks: Sequence[Task]) -> bool:
    """One classifier called ``label`` on the dataset's classes: the plain source cross-entropy trains it."""
    return len(tasks) == 1 and tasks[0].name == LABEL and tasks[0].field == LABEL and tasks[0].kind == "classification"


def build_tasks(heads: Sequence[Any], source: Any) -> list[Task]:
    """The tasks of ``model.heads`` (:class:`~transferkit.config.HeadConfig`), their classes and statistics read
    from the labelled source training split ``source``; the default classifier when ``heads`` is empty."""
    if not heads:
        return [default_task(source.classes)]
    return [_build_task(h, source) for h in heads]


def _build_task(h: Any, ds: Any) -> Task:
    loss = h.loss if h.loss != "auto" else {"classification": "cross-entropy", "multilabel": "bce",
                                            "regression": "mse"}[h.kind]
    base = Task(h.name, h.kind, h.field, weight=float(h.weight), loss=loss, huber_delta=float(h.huber_delta))
    if h.field == LABEL:
        if h.kind != "classification":
            raise ConfigError(f"model.heads: head {h.name!r} reads `label`, the dataset's classes, so it must be a "
                              f"classification head (got {h.kind}); a {h.kind} head reads a per-item field")
        if not ds.is_labelled:
            raise DataError(f"head {h.name!r} reads the labels of {ds.domain!r}, which has none")
        return replace(base, classes=tuple(ds.classes), outputs=len(ds.classes))
    raw = field_values(ds, h.field, h.name)
    if h.kind == "regression":
        values = _regression_values(raw, ds.domain, h.name, h.field)
        mean, std = values.mean(0), values.std(0)
        std = np.where(std > 0, std, 1.0)
        return replace(base, outputs=values.shape[1], offset=tuple(map(float, mean)), scale=tuple(map(float, std)))
    if h.kind == "classification":
        if raw.ndim != 1:
            raise DataError(f"head {h.name!r}: field {h.field!r} of {ds.domain!r} holds {raw.ndim}-D values; a "
                            "classification head needs one value per item")
        classes = tuple(sorted({str(v) for v in raw.tolist()}))
        if len(classes) < 2:
            raise DataError(f"head {h.name!r}: field {h.field!r} of {ds.domain!r} has one value only "
                            f"({classes}); a classifier needs two")
        return replace(base, classes=classes, outputs=len(classes))
    names = _multilabel_names(raw, ds, h.field)
    return replace(base, classes=names, outputs=len(names))


def field_values(ds: Any, field: str, head: str) -> np.ndarray:
    """The per-item array ``field`` of ``ds.meta`` (one row per item), or a DataError naming the fields there are."""
    value = ds.meta.get(field)
    n = len(ds)
    if not isinstance(value, np.ndarray) or value.shape[:1] != (n,):
        have = sorted(k for k, v in ds.meta.items() if isinstance(v, np.ndarray) and v.shape[:1] == (n,)
                      and not k.startswith(TARGET_KEY))
        raise DataError(f"head {head!r} reads field {field!r}, which {ds.domain!r} does not have per item; its "
                        f"per-item fields: {', '.join(have) or 'none'} (or `label`, its classes)")
    return value


def _regression_values(raw: np.ndarray, domain: str, head: str, field: str) -> np.ndarray:
    try:
        values = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"head {head!r}: field {field!r} of {domain!r} is not numeric; a regression head needs "
                        "numbers") from None
    values = values.reshape(len(values), -1)
    bad = np.flatnonzero(~np.isfinite(values).all(1))
    if len(bad):
        shown = ", ".join(str(i) for i in bad[:10]) + (" ..." if len(bad) > 10 else "")
        raise DataError(f"head {head!r}: field {field!r} of {domain!r} has NaN or Inf at {len(bad)} item(s) "
                        f"(indices {shown}); drop those items or fill them in")
    return values


def _multilabel_names(raw: np.ndarray, ds: Any, field: str) -> tuple[str, ...]:
    if raw.ndim == 2:
        names = ds.meta.get(f"{field}_names")
        return tuple(str(n) for n in names) if names is not None else tuple(f"{field}[{j}]" for j in
                                                                           range(raw.shape[1]))
    return tuple(sorted({p for v in raw.tolist() for p in _split_labels(v)}))


def _split_labels(v: Any) -> list[str]:
    return [p.strip() for p in str(v).split("|") if p.strip()]


def attach_targets(ds: Any, tasks: Sequence[Task]) -> Any:
    """``ds`` with each task's targets prepared (class indices, 0/1 rows, floats) in ``meta`` and emitted in its items
    (``item["t"][name]``). A task whose field the split lacks is left out (an unlabelled split, made by
    :meth:`~transferkit.data.domain.DomainDataset.unlabelled`, has no per-item fields left to attach)."""
    if ds is None:
        return None
    meta = dict(ds.meta)
    emit = [k for k in ds.emit if not k.startswith(TARGET_KEY)]
    for t in tasks:
        if t.field == LABEL:
            continue  # item["y"] already
        if t.field not in ds.meta:
            continue  # e.g. an unlabelled target split: nothing to score
        raw = field_values(ds, t.field, t.name)
        key = TARGET_KEY + t.name
        if t.kind == "regression":
            meta[key] = _regression_values(raw, ds.domain, t.name, t.field).astype(np.float32)
        elif t.kind == "classification":
            index = {c: i for i, c in enumerate(t.classes)}
            meta[key] = np.asarray([index.get(str(v), IGNORE) for v in raw.tolist()], dtype=np.int64)
        else:
            meta[key] = _multilabel_rows(raw, t)
        emit.append(key)
    return replace(ds, meta=meta, emit=tuple(emit))


def _multilabel_rows(raw: np.ndarray, t: Task) -> np.ndarray:
    if raw.ndim == 2:
        if raw.shape[1] != t.outputs:
            raise DataError(f"head {t.name!r}: field {t.field!r} has {raw.shape[1]} labels per item, the source "
                            f"had {t.outputs}")
        rows = np.asarray(raw, dtype=np.float32)
        if not np.isin(rows, (0.0, 1.0)).all():
            raise DataError(f"head {t.name!r}: multi-label field {t.field!r} must hold 0/1 values")
        return rows
    index = {c: i for i, c in enumerate(t.classes)}
    rows = np.zeros((len(raw), t.outputs), np.float32)
    for i, v in enumerate(raw.tolist()):
        for p in _split_labels(v):
            if p in index:
                rows[i, index[p]] = 1.0
    return rows


def batch_targets(batch: dict[str, Any], tasks: Sequence[Task]) -> dict[str, torch.Tensor]:
    """Each task's targets in a collated batch (``y`` for ``label``, else ``t["task:<name>"]``); absent ones left
    out."""
    out = {}
    extra = batch.get("t", {})
    for t in tasks:
        if t.field == LABEL:
            out[t.name] = batch["y"]
        elif TARGET_KEY + t.name in extra:
            out[t.name] = extra[TARGET_KEY + t.name]
    return out


# -- losses ------------------------------------------------------------------------------------------
def task_loss(task: Task, outputs: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0,
              weights: torch.Tensor | None = None) -> torch.Tensor:
    """The head's loss on one batch, a mean over items (weighted by ``weights``, one per item, when given):
    cross-entropy (items of an unknown class left out), BCE with logits, or MSE / Huber on standardised targets."""
    if task.kind == "classification":
        # no check that LABEL targets are all known (a read-back from the GPU every step): Engine.fit refuses an
        # unlabelled training set for a head on the labels, and unknown items would only be left out here
        known = (targets >= 0).float()
        per_item = F.cross_entropy(outputs, targets.clamp(min=0), label_smoothing=label_smoothing,
                                   reduction="none") * known
    elif task.kind == "multilabel":
        known = torch.ones(len(targets), device=outputs.device)
        per_item = F.binary_cross_entropy_with_logits(outputs, targets.float(), reduction="none").mean(1)
    else:
        known = torch.ones(len(targets), device=outputs.device)
        y, o = task.encode(targets), outputs.float()
        per_item = (F.huber_loss(o, y, delta=task.huber_delta, reduction="none") if task.loss == "huber"
                    else F.mse_loss(o, y, reduction="none")).mean(1)
    w = known if weights is None else known * weights
    return (per_item * w).sum() / w.sum().clamp(min=1e-12)


@dataclass
class LossTerm:
    """A named loss ``fn(outputs)`` with a weight that is a number or a function of progress.

    ``module`` (e.g. a domain discriminator) is trained with the model and saved in its checkpoints.
    """

    name: str
    fn: Callable[[Any], torch.Tensor]  # of a train.terms.StepOutputs (tasks sits below train)
    weight: float | Callable[[float], float] = 1.0
    module: nn.Module | None = None
    # Under `accelerate launch` with N processes, a term sees the whole step's batch (every process's items,
    # gathered with gradients) unless it is a mean over items that DDP's gradient averaging already makes exact.
    global_batch: bool = True

    def weight_at(self, progress: float) -> float:
        return float(self.weight(progress)) if callable(self.weight) else float(self.weight)


def head_loss_terms(tasks: Sequence[Task], weighting: str = "fixed", label_smoothing: float = 0.0) -> list[Any]:
    """The engine's loss terms for the task heads: one per head (``task/<name>``, weighted by its fixed weight), or
    one ``tasks`` term with :class:`UncertaintyWeights` (``weighting="uncertainty"``)."""
    def loss_of(t: Task) -> Any:
        def fn(out: Any) -> torch.Tensor:
            if out.source_heads is None or out.source_targets is None or t.name not in out.source_targets:
                raise DataError(f"the source batch has no targets for head {t.name!r} (field {t.field!r})")
            return task_loss(t, out.source_heads[t.name], out.source_targets[t.name], label_smoothing,
                             out.source_weights)
        return fn

    if weighting == "fixed":
        return [LossTerm(f"task/{t.name}", loss_of(t), t.weight, global_batch=False) for t in tasks]
    if any(t.weight <= 0 for t in tasks):
        zero = ", ".join(repr(t.name) for t in tasks if t.weight <= 0)
        raise ConfigError(f"model.head_weighting uncertainty starts each head at its weight, so it must be > 0 "
                          f"(head {zero}); drop a head rather than weigh it 0")
    fns = [loss_of(t) for t in tasks]
    module = UncertaintyWeights([t.name for t in tasks], [t.weight for t in tasks])
    return [LossTerm("tasks", lambda out: module([fn(out) for fn in fns]), 1.0, module, global_batch=False)]


class UncertaintyWeights(nn.Module):
    """Learnt task weights (Kendall, Gal & Cipolla, CVPR 2018): ``Σ_i exp(-s_i) · L_i + s_i`` with ``s_i = log σ_i²``
    trained with the model, so a noisier task gets a smaller weight. ``s_i`` starts at ``-log w_i``: each head
    starts at its fixed weight ``w_i`` (1 by default)."""

    def __init__(self, names: Sequence[str], initial: Sequence[float] | None = None) -> None:
        super().__init__()
        self.names = list(names)
        start = torch.ones(len(self.names)) if initial is None else torch.as_tensor(initial, dtype=torch.float32)
        self.log_vars = nn.Parameter(-torch.log(start))

    def forward(self, losses: Sequence[torch.Tensor]) -> torch.Tensor:
        s = self.log_vars
        return sum((torch.exp(-s[i]) * loss + s[i] for i, loss in enumerate(losses)), torch.zeros((), device=s.device))

    def weights(self) -> dict[str, float]:
        return {n: float(math.exp(-float(v))) for n, v in zip(self.names, self.log_vars.detach(), strict=True)}


# -- metrics -----------------------------------------------------------------------------------------
def classification_metrics(
    logits: torch.Tensor, labels: torch.Tensor, classes: Sequence[str], *, ece_bins: int = 15
) -> dict[str, Any]:
    """Accuracy, macro-F1, ECE (``ece_bins`` equal-width bins, L1), per-class accuracy and confusion matrix.

    Rows of the confusion matrix are true classes, columns predicted classes.
    """
    labels = torch.as_tensor(labels).long()
    logits = torch.as_tensor(logits).float()
    c = len(classes)
    if logits.dim() != 2 or logits.shape[1] != c:
        raise DataError(f"logits must have shape (N, {c}), got {tuple(logits.shape)}")
    if labels.dim() != 1 or labels.shape[0] != logits.shape[0]:
        n = logits.shape[0]
        raise DataError(f"{tuple(labels.shape)} labels for {n} rows of logits; expected ({n},)")
    if labels.numel() == 0:
        raise DataError("cannot score an empty evaluation set")
    if labels.min() < 0 or labels.max() >= c:
        raise DataError(f"evaluation labels must lie in [0, {c - 1}]; unlabelled data cannot be scored")
    # torchmetrics takes ~3 s to import (it pulls in torchvision): paid when something is scored, not at start-up
    from torchmetrics.functional.classification import (
        multiclass_accuracy,
        multiclass_calibration_error,
        multiclass_confusion_matrix,
        multiclass_f1_score,
    )

    preds = logits.argmax(1)
    probs = logits.softmax(1)
    cm = multiclass_confusion_matrix(preds, labels, num_classes=c)
    support = cm.sum(1)
    per_class = {
        name: (int(cm[i, i]) / int(support[i]) if support[i] > 0 else None) for i, name in enumerate(classes)
    }
    return {
        "n": int(labels.numel()),
        "accuracy": float(multiclass_accuracy(preds, labels, num_classes=c, average="micro")),
        "macro_f1": float(multiclass_f1_score(preds, labels, num_classes=c, average="macro")),
        "ece": float(multiclass_calibration_error(probs, labels, num_classes=c, n_bins=ece_bins, norm="l1")),
        "per_class_accuracy": per_class,
        "confusion_matrix": cm.tolist(),
    }


def regression_metrics(pred: torch.Tensor, target: torch.Tensor) -> dict[str, Any]:
    """MAE, RMSE and R² (averaged over outputs when there are several), in the target's unit."""
    from torchmetrics.functional import mean_absolute_error, mean_squared_error, r2_score

    p, y = pred.double().reshape(len(pred), -1), target.double().reshape(len(target), -1)
    if len(y) == 0:
        raise DataError("cannot score an empty evaluation set")
    r2 = float(r2_score(p, y, multioutput="uniform_average")) if len(y) > 1 else float("nan")
    return {"n": len(y), "mae": float(mean_absolute_error(p, y)),
            "rmse": float(mean_squared_error(p, y, squared=False)), "r2": r2}


def multilabel_metrics(logits: torch.Tensor, target: torch.Tensor, names: Sequence[str]) -> dict[str, Any]:
    """Micro- and macro-F1 and exact-match (subset) accuracy at threshold 0.5."""
    from torchmetrics.functional.classification import multilabel_exact_match, multilabel_f1_score

    probs, y = logits.float().sigmoid(), target.long()
    k = len(names)
    return {"n": len(y), "micro_f1": float(multilabel_f1_score(probs, y, num_labels=k, average="micro")),
            "macro_f1": float(multilabel_f1_score(probs, y, num_labels=k, average="macro")),
            "exact_match": float(multilabel_exact_match(probs, y, num_labels=k))}


def task_metrics(task: Task, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, Any] | None:
    """The head's metrics on a labelled split; None when no item has a target the head knows."""
    if task.kind == "regression":
        return regression_metrics(task.decode(outputs.float()), targets)
    if task.kind == "multilabel":
        return multilabel_metrics(outputs, targets, task.classes)
    keep = targets >= 0
    if not bool(keep.any()):
        return None
    metrics = classification_metrics(outputs[keep], targets[keep], list(task.classes))
    if not bool(keep.all()):  # items whose value the source never had: left out of the score, counted
        metrics["unknown"] = int((~keep).sum())
    return metrics


# the scalar metrics of each kind, as (key, label, scale to percent or not, higher is better)
KIND_SCALARS: dict[str, tuple[tuple[str, str, float, bool], ...]] = {
    "classification": (("accuracy", "accuracy (%)", 100.0, True), ("macro_f1", "macro-F1 (%)", 100.0, True),
                       ("ece", "ECE (%)", 100.0, False)),
    "multilabel": (("micro_f1", "micro-F1 (%)", 100.0, True), ("macro_f1", "macro-F1 (%)", 100.0, True),
                   ("exact_match", "exact match (%)", 100.0, True)),
    "regression": (("mae", "MAE", 1.0, False), ("rmse", "RMSE", 1.0, False), ("r2", "R²", 1.0, True)),
}


def scalars_of(metrics: dict[str, Any]) -> tuple[tuple[str, str, float, bool], ...]:
    """The scalar metrics an evaluation holds (classification, multi-label or regression ones)."""
    for kind in ("classification", "regression", "multilabel"):
        if KIND_SCALARS[kind][0][0] in metrics:
            return KIND_SCALARS[kind]
    return ()

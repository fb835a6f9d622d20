"""Step 1 of a run: the data of one seed — source, validation share, target splits, labelled target items,
extra heads' targets and the per-domain standardisation of feature vectors (:class:`RunData`)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from transferkit.config import RunConfig, bottleneck_width
from transferkit.data import DomainDataset, check_label_sets, load_data
from transferkit.data import standardize as std
from transferkit.data.tabular import check_feature_widths
from transferkit.errors import ConfigError, DataError, ModelError
from transferkit.models.backbones import META_KWARGS, file_shapes, metadata_json, read_metadata
from transferkit.models.pretrained import load_state_dict_file
from transferkit.tasks import Task, attach_targets, build_tasks
from transferkit.ui import console


@dataclass
class RunData:
    """The splits of one run. ``target_eval`` labels score the final model and nothing else."""

    source_train: DomainDataset
    source_val: DomainDataset | None
    source_eval: DomainDataset | None
    target_eval: DomainDataset | None
    target_train: DomainDataset | None = None  # unlabelled: what an adaptation method may see of the target
    target_labelled: DomainDataset | None = None  # data.target_labels_per_class items of the target train split
    tasks: list[Task] = field(default_factory=list)  # the model's heads (model.heads), built on the source
    source_names: list[str] = field(default_factory=list)  # several sources: their names, by source index
    val_note: str | None = None  # why there is no validation split (the report says it)
    standardize: tuple[str, str] = ("none", "")  # feature vectors into an mlp: (mode, why), data.standardize

    @property
    def classes(self) -> list[str]:
        return self.source_train.classes


def load_run_data(cfg: RunConfig, seed: int) -> RunData:
    d = cfg.data
    train = load_sources(d.sources, d.train_split, d.root)
    needs_labels = cfg.model.reads_labels  # a head trains on the classes (always, without model.heads)
    if needs_labels and not train.is_labelled:
        raise DataError(f"source {d.source!r} has no labels; the source domain must be labelled")
    if needs_labels and len(train.classes) < 2:
        raise DataError(f"data.source {d.source!r} has one class only ({train.classes}); a classifier needs two")
    val = None
    if d.val_split is not None:
        val = load_sources(d.sources, d.val_split, d.root)
    if d.source_per_class is not None:
        train = train.per_class(d.source_per_class, seed=seed)
    fraction, val_note = validation_share(d.val_fraction, train) if val is None else (0.0, None)
    if fraction > 0:
        train, val = train.split(fraction, seed=seed)
    tasks = build_tasks(cfg.model.heads, train)  # the heads' fields must be on the source train split
    if val is not None and not _scorable(val, tasks[0]):
        raise DataError(f"the validation split of {d.source!r} has no {tasks[0].field!r} for the primary head "
                        f"{tasks[0].name!r}, so it cannot choose the checkpoint")
    source_eval = _optional_split(d.sources, d.eval_split, d.root) if d.eval_split != d.train_split else None
    if source_eval is not None and not _scorable(source_eval, tasks[0]):
        source_eval = None
    target_eval = load_data(d.target, d.eval_split, d.root) if d.target else None
    if target_eval is not None and not _scorable(target_eval, tasks[0]):
        target_eval = None  # an unlabelled target can be adapted to, not scored; the report says so
    target_train = target_labelled = None
    if cfg.adapt.method != "none" and not d.target:
        raise ConfigError(f"adapt.method {cfg.adapt.method!r} needs a target domain: set data.target")
    if d.target_labels_per_class is not None:
        target_train, target_labelled = _labelled_few(cfg, train, seed)
    elif cfg.adapt.method != "none":
        target_train = load_data(d.target, d.train_split, d.root).unlabelled()  # labels dropped here, for good
    if cfg.adapt.method == "none":
        target_train = None  # joint training without adaptation: only the labelled few are trained on
    for other in (val, source_eval, target_eval, target_train, target_labelled):
        if other is not None:
            check_feature_widths(train, other)  # one MLP reads both: same width, columns, index base
    for other in (val, source_eval, target_eval):
        if other is not None and (needs_labels or (other.is_labelled and train.is_labelled)):
            check_label_sets(train, other)
    train, val, source_eval, target_eval = (attach_targets(ds, tasks) for ds in (train, val, source_eval, target_eval))
    names = list(d.sources) if len(d.sources) > 1 else []
    data = RunData(train, val, source_eval, target_eval, target_train, target_labelled, tasks, names, val_note)
    return _standardized(cfg, data)


def _standardized(cfg: RunConfig, data: RunData) -> RunData:
    """Feature vectors into an ``mlp``: the standardisation mode (``model.backbone_kwargs.standardize``, else the
    :func:`~transferkit.data.standardize.auto_mode` rule) and, per domain, every target split mapped onto the
    source statistics by the target's own (its unlabelled training split's; :mod:`transferkit.data.standardize`)."""
    if cfg.model.backbone != "mlp" or data.source_train.kind != "vector":
        return data
    chosen = cfg.model.backbone_kwargs.get("standardize")
    if chosen is not None:
        mode, why = chosen, "model.backbone_kwargs.standardize"
    elif cfg.model.weights is not None or cfg.model.init_from is not None:
        mode, why = _standardize_of(cfg.model.init_from or cfg.model.weights)
    else:
        mode, why = std.auto_mode(np.asarray(data.source_train.inputs))
    if mode not in std.MODES:
        return data  # the backbone's option check names the bad value
    data = replace(data, standardize=(mode, why))
    if mode != "per-domain" or cfg.data.target is None:
        return data
    own = data.target_train
    if own is None:
        try:  # a source-only run: the target's training split (unlabelled) gives its statistics
            own = load_data(cfg.data.target, cfg.data.train_split, cfg.data.root)
        except DataError:
            own = None  # no such split: each target split by its own statistics
    mean, sd = std.statistics(np.asarray(data.source_train.inputs))
    align = lambda ds: None if ds is None else std.align_to(ds, mean, sd, own)  # noqa: E731
    return replace(data, target_train=align(data.target_train), target_eval=align(data.target_eval),
                   target_labelled=align(data.target_labelled))


AUTO_VAL_FRACTION = 0.1


MIN_VAL_PER_CLASS = 10


def validation_share(configured: float | None, train: DomainDataset) -> tuple[float, str | None]:
    """``(share held out, why none is)``: ``data.val_fraction`` when set; by default 10 % of the labelled source
    where that is at least 10 items per class, else none. A validation split of 4 items would choose the checkpoint
    by chance (one item is 25 points) and take a tenth of an already small source from training."""
    if configured is not None:
        return configured, "data.val_fraction = 0" if configured == 0 else None
    classes = max(1, len(train.classes)) if train.is_labelled else 1
    if AUTO_VAL_FRACTION * len(train) >= MIN_VAL_PER_CLASS * classes:
        return AUTO_VAL_FRACTION, None
    return 0.0, (f"the source's {len(train):,} items are too few to hold out {MIN_VAL_PER_CLASS} per class for "
                 "validation; all of them train")


def _same(a: Any, b: Any) -> bool:
    return bool(np.array_equal(a, b)) if isinstance(a, np.ndarray) or isinstance(b, np.ndarray) else a == b


def _scorable(ds: DomainDataset, primary: Task) -> bool:
    """Whether ``ds`` holds what the primary head predicts: its labels, or the per-item field it reads."""
    if primary.field == "label":
        return ds.is_labelled
    value = ds.meta.get(primary.field)
    return isinstance(value, np.ndarray) and value.shape[:1] == (len(ds),)


def load_sources(specs: list[str], split: str, root: str | None) -> DomainDataset:
    """One source domain, or several as one dataset whose items carry their source's index (``meta["source_index"]``,
    emitted in ``item["t"]``); the sources must share one label set and one kind of input."""
    parts = [load_data(spec, split, root) for spec in specs]
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    for spec, ds in zip(specs[1:], parts[1:], strict=True):
        if ds.kind != first.kind:
            raise DataError(f"sources {specs[0]!r} and {spec!r} hold different inputs ({first.kind} and {ds.kind}); "
                            "several sources must be of one modality")
        if ds.is_labelled != first.is_labelled:
            raise DataError(f"of the sources {specs[0]!r} and {spec!r} only one is labelled; every source must be")
        if ds.classes != first.classes:
            shared = sorted(set(ds.classes) & set(first.classes))
            raise DataError(
                f"sources {specs[0]!r} and {spec!r} have different label sets ({first.classes[:10]} and "
                f"{ds.classes[:10]}; {len(shared)} shared); several sources must share one label set, with the same "
                "class names"
            )
        check_feature_widths(first, ds)
    n = [len(p) for p in parts]
    arrays = all(isinstance(p.inputs, np.ndarray) for p in parts) and len({p.inputs.shape[1:] for p in parts}) == 1
    # one array where the sources' inputs stack (feature vectors, images of one size), a list of items otherwise
    inputs: Any = np.concatenate([p.inputs for p in parts]) if arrays else [x for p in parts for x in list(p.inputs)]
    labels = np.concatenate([p.labels for p in parts]) if first.is_labelled else None
    meta: dict[str, Any] = {"split": split, "sources": list(specs),
                            "source_index": np.repeat(np.arange(len(parts), dtype=np.int64), n)}
    for key, value in first.meta.items():  # per-item fields every source has (a text table's rating)
        if (isinstance(value, np.ndarray) and value.shape[:1] == (n[0],)
                and all(isinstance(p.meta.get(key), np.ndarray) and p.meta[key].shape[:1] == (len(p),)
                        and p.meta[key].shape[1:] == value.shape[1:] for p in parts)):
            meta[key] = np.concatenate([p.meta[key] for p in parts])
    for key in ("format", "n_features", "zero_based", "zero_based_from", "features"):  # what width checks compare
        if key in first.meta and all(_same(p.meta.get(key), first.meta[key]) for p in parts):
            meta[key] = first.meta[key]
    return DomainDataset(inputs, labels, "+".join(p.domain for p in parts), list(first.classes), first.kind,
                         meta=meta, emit=("source_index",))


def _labelled_few(cfg: RunConfig, source: DomainDataset, seed: int) -> tuple[DomainDataset, DomainDataset]:
    """``(unlabelled rest, labelled few)`` of the target train split: K items per class, chosen by ``seed``, keep
    their labels (joint / semi-supervised training); every other item loses its labels."""
    d = cfg.data
    k = d.target_labels_per_class
    assert k is not None
    if not d.target:
        raise ConfigError("data.target_labels_per_class needs a target domain: set data.target")
    if d.eval_split == d.train_split:
        raise ConfigError(f"data.target_labels_per_class takes labelled items from the {d.train_split!r} split, "
                          f"which also scores the model (data.eval_split): score on another split")
    full = load_data(d.target, d.train_split, d.root)
    if not full.is_labelled:
        raise DataError(f"data.target {d.target!r} has no labels in its {d.train_split!r} split, so "
                        f"data.target_labels_per_class cannot pick {k} labelled items per class")
    check_label_sets(source, full)
    try:
        chosen = full.per_class_indices(k, seed=seed)
    except DataError as exc:
        raise DataError(f"data.target_labels_per_class = {k}: {exc}") from None
    rest = np.setdiff1d(np.arange(len(full)), chosen)
    return full.subset(rest).unlabelled(), full.subset(chosen)


def _optional_split(specs: list[str], split: str, root: str | None) -> DomainDataset | None:
    spec = specs[0] if len(specs) == 1 else ", ".join(specs)
    try:
        return load_sources(specs, split, root)
    except DataError as exc:
        if "split" in str(exc).lower():
            console.print(f"[yellow]note:[/] source {spec!r} has no {split!r} split; the source is not scored "
                          "(set data.eval_split to a split it has)", highlight=False)
            return None
        raise


def _standardize_of(path: str) -> tuple[str, str]:
    """A run that starts from given weights keeps their architecture: the standardisation an earlier transferkit
    model was trained with (its metadata), else whether the weights hold a first standardisation layer at all."""
    try:
        if str(path).endswith(".safetensors"):
            kwargs = metadata_json(read_metadata(path), META_KWARGS, path, dict, default={})
            if kwargs.get("standardize") in ("none", "source", "per-domain"):
                return kwargs["standardize"], f"as the model it starts from ({path})"
            has_layer = any(k.endswith(("0.mean", "body.0.mean")) for k in file_shapes(path))
        else:
            has_layer = any(k.endswith("0.mean") for k in load_state_dict_file(path))
    except (ConfigError, DataError, ModelError):
        return "none", "the given weights decide"  # their own error comes when they are loaded
    return ("source", f"the weights ({path}) hold standardisation statistics") if has_layer else \
        ("none", f"the weights ({path}) hold no standardisation layer")


def trained_on(data: RunData) -> list[DomainDataset | None]:
    """The labelled data a source-only model is trained and selected on (what its twin-cache key hashes)."""
    return [data.source_train, data.source_val, data.target_labelled]


def check_sizes(cfg: RunConfig, data: RunData) -> None:
    """Batch statistics (BatchNorm in a bottleneck, MMD, CORAL, a discriminator) need two items per domain."""
    needs_pairs = cfg.adapt.method != "none" or bottleneck_width(cfg) is not None
    if not needs_pairs:
        return
    for name, spec, ds in (("data.source", cfg.data.source, data.source_train),
                           ("data.target", cfg.data.target, data.target_train)):
        if ds is not None and len(ds) < 2:
            raise DataError(f"{name} {spec!r} has {len(ds)} training item(s); an adaptation method or a bottleneck "
                            "needs at least 2 per domain (batch statistics)")

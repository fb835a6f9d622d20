"""A whole run from a :class:`~transferkit.config.RunConfig`: data -> model -> fine-tune -> evaluate -> report.

Everything that can be wrong with the inputs (data paths, label sets, backbone names, weights, stage counts)
is checked before the run directory is created, so bad input never leaves a half-written run behind.

Example:
    >>> from transferkit.config import parse_config
    >>> cfg = parse_config({"name": "doc", "output_dir": str(getfixture("tmp_path")),
    ...                     "data": {"source": "digits-uci", "source_per_class": 5, "val_fraction": 0},
    ...                     "train": {"epochs": 1}})
    >>> report = fit(cfg, progress=False)
    >>> 0.0 <= report["summary"]["source"]["accuracy"]["mean"] <= 1.0
    True
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from transferkit.adapt.methods import build_method, list_methods
from transferkit.config import RunConfig, TrainConfig
from transferkit.data import DomainDataset, check_label_sets, load_data
from transferkit.data.tabular import check_feature_widths
from transferkit.errors import ConfigError, DataError, ModelError, RunDirError
from transferkit.evaluate.predict import predict_outputs, score
from transferkit.evaluate.report import FEATURE_MAP, write_aggregate_report, write_report
from transferkit.features import cached_features
from transferkit.finetune import apply_strategy, param_groups
from transferkit.finetune.convex_probe import solver_for
from transferkit.finetune.lora import merge_lora
from transferkit.models.backbones import Standardize, backbone_for, check_input_kind
from transferkit.models.heads import IdentityBackbone, TransferModel
from transferkit.runs import RunDir, atomic_path, atomic_write_text
from transferkit.tasks import Task, UncertaintyWeights, attach_targets, build_tasks, head_loss_terms, is_default
from transferkit.train.callbacks import console
from transferkit.train.engine import (
    Engine,
    LossTerm,
    get_accelerator,
    source_cross_entropy,
    target_cross_entropy,
)
from transferkit.train.twin_cache import describe as describe_twin
from transferkit.train.twin_cache import load_twin, store_twin, twin_key


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
    from transferkit.data import standardize as std

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
    from transferkit.models.backbones import META_KWARGS, file_shapes, metadata_json, read_metadata

    try:
        if str(path).endswith(".safetensors"):
            kwargs = metadata_json(read_metadata(path), META_KWARGS, path, dict, default={})
            if kwargs.get("standardize") in ("none", "source", "per-domain"):
                return kwargs["standardize"], f"as the model it starts from ({path})"
            has_layer = any(k.endswith(("0.mean", "body.0.mean")) for k in file_shapes(path))
        else:
            from transferkit.models.pretrained import load_state_dict_file

            has_layer = any(k.endswith("0.mean") for k in load_state_dict_file(path))
    except (ConfigError, DataError, ModelError):
        return "none", "the given weights decide"  # their own error comes when they are loaded
    return ("source", f"the weights ({path}) hold standardisation statistics") if has_layer else \
        ("none", f"the weights ({path}) hold no standardisation layer")


def build_model(cfg: RunConfig, data: RunData) -> TransferModel:
    kwargs = dict(cfg.model.backbone_kwargs)
    if cfg.model.backbone == "mlp":
        kwargs["standardize"] = data.standardize[0]
    backbone = backbone_for(cfg.model.backbone, data.source_train, weights=cfg.model.weights,
                            pretrained=cfg.model.pretrained, online=cfg.online, **kwargs)
    first = next(iter(backbone.body.children()), None)
    if isinstance(first, Standardize):  # the source's statistics, saved with the model
        from transferkit.data.standardize import statistics

        first.set_statistics(*statistics(np.asarray(data.source_train.inputs)))
    check_input_kind(backbone, data.source_train)
    model = TransferModel(backbone, data.classes, head_dropout=cfg.model.head_dropout,
                          bottleneck_dim=cfg.model.bottleneck_dim, tasks=data.tasks or None)
    if cfg.model.init_from is not None:
        _init_from(model, cfg.model.init_from)
    return model


def _init_from(model: TransferModel, path: str) -> None:
    """Start from an earlier run's model: its backbone and bottleneck must fit. A head is taken where the earlier model
    has a head of the same name and kind predicting the same classes (a regression head's weights are rescaled
    from the earlier source's target statistics to this one's); any other head starts fresh."""
    from pathlib import Path

    from transferkit.models.backbones import metadata_json, read_metadata
    from transferkit.models.heads import META_CLASSES, META_TASKS
    from transferkit.models.pretrained import load_state_dict_file
    from transferkit.tasks import default_task

    if not Path(path).is_file():
        raise ConfigError(f"model.init_from: {path} is not a file (give an earlier run's model.safetensors)")
    state = load_state_dict_file(path)
    own = model.state_dict()
    body = [k for k in own if k.startswith(("backbone.", "bottleneck."))]
    missing = [k for k in body if k not in state]
    wrong = [k for k in body if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or wrong:
        raise ConfigError(f"model.init_from: {path} does not fit this backbone and bottleneck (missing "
                          f"{missing[:3]}, other shapes {wrong[:3]}); use the same model.backbone and "
                          "model.bottleneck_dim as the run that wrote it")
    take = {k: state[k] for k in body}
    meta = read_metadata(path)
    if META_TASKS in meta:
        old = [Task.from_json(t) for t in metadata_json(meta, META_TASKS, path, list)]
    else:  # a model file from before model.heads: one classifier on its classes
        classes = metadata_json(meta, META_CLASSES, path, list, default=[])
        old = [default_task([str(c) for c in classes])]
    old_prefix = {t.name: ("head." if i == 0 else f"aux_heads.{t.name}.") for i, t in enumerate(old)}
    by_name = {t.name: t for t in old}
    for i, t in enumerate(model.tasks):
        was = by_name.get(t.name)
        if was is None or was.kind != t.kind or was.classes != t.classes or was.outputs != t.outputs:
            continue  # another task: this head starts fresh
        prefix = "head." if i == 0 else f"aux_heads.{t.name}."
        weights = {k[len(old_prefix[t.name]):]: v for k, v in state.items() if k.startswith(old_prefix[t.name])}
        if t.kind == "regression":
            weights = _restandardised(weights, was, t)
        take.update({prefix + k: v for k, v in weights.items() if prefix + k in own})
    model.load_state_dict(take, strict=False)


def _restandardised(weights: dict[str, torch.Tensor], was: Task, now: Task) -> dict[str, torch.Tensor]:
    """A regression head's weights re-expressed for ``now``'s standardisation: the same predictions in the target's
    unit (``y = (W f + b)·s_old + m_old = (W' f + b')·s_new + m_new``)."""
    s_old, m_old = torch.tensor(was.scale), torch.tensor(was.offset)
    s_new, m_new = torch.tensor(now.scale), torch.tensor(now.offset)
    out = dict(weights)
    if "fc.weight" in out:
        out["fc.weight"] = out["fc.weight"] * (s_old / s_new)[:, None]
    if "fc.bias" in out:
        out["fc.bias"] = (out["fc.bias"] * s_old + m_old - m_new) / s_new
    return out


def loss_terms(cfg: RunConfig, model: TransferModel) -> list[LossTerm]:
    """The source cross-entropy, the adaptation method's terms and, with labelled target items, their
    cross-entropy: L = L_src + λ(p) · L_transfer + λ_t · L_tgt."""
    a = cfg.adapt
    k = len(cfg.data.sources) if cfg.data.multi_source != "pooled" else 1
    transfer = build_method(a.method, model.feature_dim, len(model.classes), weight=a.weight, schedule=a.schedule,
                            options=a.options, num_sources=k, multi_source=cfg.data.multi_source)
    supervised = ([source_cross_entropy(cfg.train.label_smoothing)] if is_default(model.tasks) else
                  head_loss_terms(model.tasks, cfg.model.head_weighting, cfg.train.label_smoothing))
    terms = [*supervised, *transfer]
    if cfg.data.target_labels_per_class is not None:  # L = L_s + λ_t · L_t (+ λ · L_transfer)
        from transferkit.train.schedules import constant, dann_ramp

        lam_t = (dann_ramp if cfg.adapt.target_schedule == "ramp" else constant)(cfg.adapt.target_weight)
        terms.append(target_cross_entropy(lam_t, cfg.train.label_smoothing))
    f = cfg.finetune
    if "l2-sp" in f.regularizers:
        from transferkit.finetune.regularizers import l2_sp

        heads = torch.nn.ModuleList([m for name, m in model.named_children() if name != "backbone"])
        terms.append(l2_sp(model.backbone, heads, alpha=f.l2_sp_alpha, beta=f.l2_sp_beta))
    if "bss" in f.regularizers:
        from transferkit.finetune.regularizers import bss

        terms.append(bss(f.bss_weight, f.bss_k))
    return terms


def fit(cfg: RunConfig, *, overwrite: bool = False, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run every seed of ``cfg`` and return the report aggregated over seeds (also written to disk)."""
    from transferkit.models.pretrained import trusting_pickle
    from transferkit.network import offline

    with trusting_pickle(cfg.model.trust_pickle), offline(not cfg.online):
        return _fit(cfg, overwrite=overwrite, resume=resume, progress=progress)


def _fit(cfg: RunConfig, *, overwrite: bool, resume: bool, progress: bool) -> dict[str, Any]:
    # Validate everything first: nothing is written if the data or the model cannot be used.
    first = load_run_data(cfg, cfg.seeds[0])
    probe_model = build_model(cfg, first)
    apply_strategy(probe_model, cfg.finetune)
    for checked in (_auto_configs(cfg)[0].values() if cfg.adapt.method == "auto" else [cfg]):
        loss_terms(checked, probe_model)  # unknown method or option -> ConfigError now, not after the run dir exists
    if cfg.data.augment:
        from transferkit.data.images import training_transform

        training_transform(probe_model.backbone)  # a backbone with no image config -> ConfigError now
    _check_combination(cfg)
    _check_sizes(cfg, first)
    run = RunDir(cfg.run_path)
    _check_resume(run, cfg, resume)
    # Under `accelerate launch` every process runs this; only the main one writes the run directory (a failure
    # there ends the launch, and with it the other processes).
    acc = get_accelerator(cfg.train.device, cfg.train.mixed_precision, cfg.train.grad_accum_steps)
    if acc.is_main_process:
        run.prepare(overwrite=overwrite, resume=resume)
        atomic_write_text(run.config, cfg.to_yaml())
    acc.wait_for_everyone()

    per_seed = []
    for seed in cfg.seeds:
        seed_run = run if len(cfg.seeds) == 1 else run.seed(seed)
        data = first if seed == cfg.seeds[0] else load_run_data(cfg, seed)
        trackers = _open_trackers(cfg, seed_run, seed) if acc.is_main_process else None
        try:
            report = fit_seed(cfg, seed, seed_run, data, resume=resume, progress=progress,
                              on_epoch=trackers.log_epoch if trackers is not None else None)
            if trackers is not None:
                trackers.log_report(report)
        finally:
            if trackers is not None:
                trackers.close()
        per_seed.append(report)
    if not acc.is_main_process:
        return {}  # the other processes only trained
    header = _header(cfg, first)
    if len(cfg.seeds) == 1:
        return {**header, "seeds": cfg.seeds, "summary": _single_summary(per_seed[0]), "per_seed": per_seed}
    return write_aggregate_report(run, per_seed, header)


def _open_trackers(cfg: RunConfig, run: RunDir, seed: int) -> Any:
    from transferkit.train.tracking import open_trackers

    t = cfg.tracking
    if not t.log_to:
        return None
    run.path.mkdir(parents=True, exist_ok=True)
    name = cfg.name if len(cfg.seeds) == 1 else f"{cfg.name}/seed-{seed}"
    return open_trackers(t.log_to, run, run_name=name, config=cfg.model_dump(mode="json"), mlflow_uri=t.mlflow_uri,
                         experiment=t.experiment, output_dir=cfg.output_dir)


def fit_seed(
    cfg: RunConfig, seed: int, run: RunDir, data: RunData, *, resume: bool = False, progress: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train and evaluate one seed into ``run``; a finished seed is skipped when resuming."""
    if resume and run.report_json.exists() and run.model.exists():
        from transferkit.runs import read_json

        report = read_json(run.report_json, "report")
        if not isinstance(report, dict) or not isinstance(report.get("evaluations"), dict):
            raise RunDirError(f"cannot resume: {run.report_json} is not a finished seed's report; delete it to "
                              "redo that seed's evaluation")
        return report
    run.path.mkdir(parents=True, exist_ok=True)
    if cfg.train.threads is not None:  # before any feature extraction, not only once the engine starts
        torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(seed)
    model = build_model(cfg, data)
    t0 = time.perf_counter()
    weights = _source_weights(cfg, model, data, progress) if cfg.data.source_weighting == "discrepancy" else None
    auto, left_out = _auto_configs(cfg) if cfg.adapt.method == "auto" else (None, {})
    if auto is not None:  # source-only first: every candidate then trains exactly its number of steps
        result = _train(_plain(cfg), model, replace(data, target_train=None), run, seed, prefix="source-only-",
                        resume=resume, progress=progress, on_epoch=on_epoch, source_weights=weights)
        result["seconds"] = time.perf_counter() - t0
        trained = {}
        for name, cfg_m in auto.items():
            torch.manual_seed(seed)
            t_m = time.perf_counter()
            cand = build_model(cfg_m, data)
            r = _train(cfg_m, cand, data, run, seed, prefix=f"{name}-", resume=resume, progress=progress,
                       on_epoch=on_epoch, source_weights=weights, steps=result.get("steps"))
            trained[name] = (cand, {**r, "seconds": time.perf_counter() - t_m})
    else:
        result = _train(cfg, model, data, run, seed, resume=resume, progress=progress, on_epoch=on_epoch,
                        source_weights=weights)
    if cfg.adapt.method in ("none", "auto") and cfg.data.target:  # a later guarded run reuses this model as its twin
        store_twin(cfg, twin_key(cfg, seed, result.get("steps"), _trained_on(data), weights), model)
    baseline, twin_reused = None, False
    if auto is None and cfg.adapt.method != "none" and cfg.adapt.guard and cfg.model.primary_reads_labels:
        # The guard's twin: the same model, seed and settings without the transfer loss (trained once per key).
        torch.manual_seed(seed)
        baseline = build_model(cfg, data)
        key = twin_key(cfg, seed, result.get("steps"), _trained_on(data), weights)
        twin_reused = load_twin(cfg, key, baseline)
        if not twin_reused:
            if progress:
                console.print(f"negative-transfer guard: training the source-only twin ({result.get('steps')} steps)")
            _train(_plain(cfg), baseline, replace(data, target_train=None), run, seed, prefix="source-only-",
                   resume=resume, progress=progress, on_epoch=on_epoch, source_weights=weights,
                   steps=result.get("steps"))
            store_twin(cfg, key, baseline)
        elif progress:
            console.print("negative-transfer guard: source-only twin reused from an identical earlier run")
    if not get_accelerator(cfg.train.device, cfg.train.mixed_precision, cfg.train.grad_accum_steps).is_main_process:
        return {}  # under `accelerate launch`, the main process scores, decides and writes
    kw = {"batch_size": cfg.data.eval_batch_size, "num_workers": cfg.data.num_workers, "device": cfg.train.device}
    # A frozen backbone's features are cached: the guard and the scores run the head on them, not the backbone.
    view, vdata = _evaluation_view(cfg, model, data, progress)
    evals: dict[str, Any] = {}
    guard = None
    candidates = None
    auto_report = None
    if auto is not None:
        model, result, auto_report, candidates, evals, guard = _choose_auto(cfg, model, result, trained, vdata, view,
                                                                            kw)
    elif baseline is not None:
        # Both models share one architecture, hence one preprocessing: computed once for all their predictions.
        shared = _preprocessed(vdata, view(model), cfg.data.cache_mb * 2**20)
        decision, gap, candidates = _guard(cfg, view(model), view(baseline), shared, kw)
        if shared.target_eval is not None:  # reported, never used to decide
            evals["target_adapted"] = score(view(model), shared.target_eval, **kw,
                                            preprocessed=_cached(shared.target_eval))
            evals["target_source_only"] = score(view(baseline), shared.target_eval, **kw,
                                                preprocessed=_cached(shared.target_eval))
        if decision.keep == "source-only":
            model.load_state_dict(baseline.state_dict())
        guard = {**decision.to_dict(), "gap": gap, "twin": describe_twin(twin_reused)}
    seconds = time.perf_counter() - t0
    merge_lora(model.backbone)  # adapters folded into their weights: the saved model needs no PEFT
    model.save(run.model)

    # the report's 2-D map of the features: the guard's candidates hold them already, before and after adaptation
    _save_feature_map(run, view(model), vdata, candidates, kw)
    if vdata.source_eval is not None:
        evals["source"] = score(view(model), vdata.source_eval, **kw)
    if vdata.target_eval is not None:
        kept = f"target_{guard['keep'].replace('-', '_')}" if guard is not None else None
        # the guarded model is one of the two just scored: reuse its scores rather than predict a third time
        evals["target"] = dict(evals[kept]) if kept in evals else score(view(model), vdata.target_eval, **kw)
    evals = {k: evals[k] for k in ("source", "target", "target_adapted", "target_source_only") if k in evals}
    report = {
        **_header(cfg, data),
        "seed": seed,
        "fit": {**result, "seconds": seconds},
        "evaluations": evals,
    }
    if auto_report is not None:
        report["auto"] = {**auto_report, "left_out": left_out}  # methods this model cannot train, and why
    if guard is not None:
        report["guard"] = guard
    elif cfg.adapt.method not in ("none", "auto") and cfg.adapt.guard:
        report["guard_note"] = ("the negative-transfer guard compares class predictions with the dataset's labels; "
                                f"the primary head {model.tasks[0].name!r} predicts {model.tasks[0].kind} "
                                f"{model.tasks[0].field!r}, so it did not run")
    if weights is not None:
        report["source_weights"] = dict(zip(data.source_names, weights, strict=True))
    written = write_report(run, report, draw_plots=seed == cfg.seeds[0])
    if not cfg.train.keep_finished_checkpoints:
        # model.safetensors and the report are on disk: a resume skips this seed, so its checkpoints (the optimiser
        # state, a discriminator's, every phase's best and last) are dead weight: 25 MB each for a LeNet DANN
        shutil.rmtree(run.checkpoints, ignore_errors=True)
    return written


def _trained_on(data: RunData) -> list[DomainDataset | None]:
    """The labelled data a source-only model is trained and selected on (what its twin-cache key hashes)."""
    return [data.source_train, data.source_val, data.target_labelled]


def _plain(cfg: RunConfig) -> RunConfig:
    """``cfg`` without adaptation: the source-only model (the guard's twin, auto's reference)."""
    return cfg.model_copy(update={"adapt": cfg.adapt.model_copy(update={"method": "none"})})


def _auto_configs(cfg: RunConfig) -> tuple[dict[str, RunConfig], dict[str, str]]:
    """``adapt.method auto``: the config of each candidate method that can train with this model, and the methods
    left out (with why); a ConfigError where auto cannot choose at all."""
    from transferkit.adapt.auto import trainable_methods

    a = cfg.adapt
    if a.weight is not None or a.options:
        raise ConfigError("adapt.method auto trains each candidate at its own default λ and options: drop adapt.weight "
                          "and adapt.options (or name one method to set them)")
    if not cfg.model.primary_reads_labels:
        raise ConfigError("adapt.method auto chooses by class predictions: the first of model.heads must be a "
                          "classification head on `label` (or name a feature-alignment method: dan, coral, dann, afn)")
    frozen = cfg.finetune.strategy == "linear-probe" and cfg.model.bottleneck_dim is None
    skipped = trainable_methods(a.auto_methods, frozen_features=frozen)
    configs = {m: cfg.model_copy(update={"adapt": a.model_copy(update={"method": m})})
               for m in a.auto_methods if m not in skipped}
    if not configs:
        raise ConfigError(f"adapt.method auto: none of adapt.auto_methods {a.auto_methods} can train with this model ("
                          + "; ".join(f"{m} {why}" for m, why in skipped.items()) + ")")
    return configs, skipped


def _choose_auto(
    cfg: RunConfig, source_only: TransferModel, result: dict[str, Any],
    trained: dict[str, tuple[TransferModel, dict[str, Any]]], vdata: RunData, view: Callable[[Any], Any],
    kw: dict[str, Any],
) -> tuple[TransferModel, dict[str, Any], dict[str, Any], tuple[Any, Any], dict[str, Any], dict[str, Any] | None]:
    """Guard and score every candidate of ``adapt.method auto`` (:mod:`transferkit.adapt.auto`) and keep the chosen
    one in ``source_only``'s place. Returns the model, its training result, the report's ``auto`` section, the
    (source-only, chosen) candidates for the feature map, the target evaluations (reported, never used to decide)
    and the chosen candidate's guard decision (None when source-only is chosen)."""
    from transferkit.adapt.auto import SOURCE_ONLY, choose, ensemble_agreement
    from transferkit.measure.selection import collapse_check

    shared = _preprocessed(vdata, view(source_only), cfg.data.cache_mb * 2**20)
    evals: dict[str, Any] = {}
    scored = shared.target_eval is not None

    def target_score(m: TransferModel) -> dict[str, Any] | None:
        return score(view(m), shared.target_eval, **kw, preprocessed=_cached(shared.target_eval)) if scored else None

    so_candidate = None
    adapted, rejections, decisions = {}, {}, {}
    for name, (model, _) in trained.items():
        decision, gap, (so_c, ad_c) = _guard(cfg, view(model), view(source_only), shared, kw, source_only=so_candidate)
        so_candidate, adapted[name] = so_c, ad_c
        if cfg.adapt.guard:
            rejections[name] = decision.reasons
        else:  # only what would make any score meaningless: collapsed target predictions
            col_a, col_s = collapse_check(ad_c.target_logits), collapse_check(so_c.target_logits)
            rejections[name] = [f"its target predictions collapsed ({col_a.reason})"] if (
                col_a.collapsed and not col_s.collapsed) else []
        decisions[name] = {**decision.to_dict(), "gap": gap}
    assert so_candidate is not None  # auto has at least one candidate
    choice = choose(so_candidate, adapted, rejections, cfg.adapt.auto_validator)
    pool = {SOURCE_ONLY: so_candidate, **{n: c for n, c in adapted.items() if not rejections[n]}}
    agreement = ensemble_agreement(pool)  # recorded whichever validator chose (benchmarks/auto_selection.py)
    so_eval = target_score(source_only)
    table: dict[str, Any] = {SOURCE_ONLY: {"steps": result.get("steps"), "seconds": result.get("seconds"),
                                           "target_accuracy": so_eval["accuracy"] if so_eval else None}}
    for name, (model, r) in trained.items():
        e = target_score(model)
        if name == choice.chosen and e is not None:
            evals["target"] = e
        signals = decisions[name]["numbers"].get("signals", {})
        table[name] = {
            "kept": not rejections[name], "reasons": rejections[name],
            "guard_rules": decisions[name]["numbers"].get("rules", {}), "steps": r.get("steps"),
            "seconds": r.get("seconds"), "target_accuracy": e["accuracy"] if e else None,
            "validators": {v: s["adapted"] for v, s in signals.items() if isinstance(s, dict) and "adapted" in s},
        }
        table[SOURCE_ONLY].setdefault("validators", {
            v: s[SOURCE_ONLY] for v, s in signals.items() if isinstance(s, dict) and SOURCE_ONLY in s})
    for name, row in table.items():
        if name in agreement:
            row.setdefault("validators", {})["ensv"] = agreement[name]
    ensemble = _ensemble_accuracy([source_only] + [trained[n][0] for n in pool if n != SOURCE_ONLY],
                                  shared.target_eval, view, kw) if scored else None
    if so_eval is not None:
        evals["target_source_only"] = so_eval
        evals.setdefault("target", so_eval)
    report = {**choice.to_dict(), "candidates": table, "ensemble_target_accuracy": ensemble,
              "target_labels": "score each candidate for this table; they decide nothing" if scored else "none"}
    guard = None
    if choice.chosen != SOURCE_ONLY:
        model, r = trained[choice.chosen]
        source_only.load_state_dict(model.state_dict())
        result = {**result, **{k: v for k, v in r.items() if k != "seconds"}}
        guard = decisions[choice.chosen]
    return source_only, result, report, (so_candidate, adapted.get(choice.chosen, so_candidate)), evals, guard


def _ensemble_accuracy(models: list[TransferModel], target: DomainDataset, view: Callable[[Any], Any],
                       kw: dict[str, Any]) -> float:
    """Target accuracy of the mean softmax of ``models`` (auto's report: what an ensemble of the kept candidates
    would have scored; it decides nothing)."""
    probs, labels = [], None
    for m in models:
        _, logits, labels = predict_outputs(view(m), target, **kw, preprocessed=_cached(target))
        probs.append(torch.softmax(logits.float(), 1))
    assert labels is not None
    return float((torch.stack(probs).mean(0).argmax(1) == labels).float().mean())


def _source_weights(cfg: RunConfig, model: TransferModel, data: RunData, progress: bool) -> list[float]:
    """``w_k ∝ exp(-MMD²_k / mean_j MMD²_j)``, mean 1: each source's closeness to the target, measured before training
    (on raw feature vectors, else on the initial backbone's features), on up to 1,000 items of each domain."""
    from transferkit.measure.discrepancy import mmd2

    if len(data.source_names) < 2 or data.target_train is None:
        raise ConfigError("data.source_weighting discrepancy needs several sources (data.source: a list) and an "
                          "adaptation method with a target (it weighs the sources against the target)")
    rng = np.random.default_rng(0)

    def sample(ds: DomainDataset) -> np.ndarray:
        idx = np.sort(rng.choice(len(ds), min(1000, len(ds)), replace=False))
        part = ds.subset(idx).unlabelled()
        if part.kind == "vector" and isinstance(part.inputs, np.ndarray):
            return np.asarray(part.inputs, np.float32)
        return np.asarray(cached_features(model.backbone, part, device=cfg.train.device, progress=progress).inputs)

    source, target = data.source_train, data.target_train
    xt = sample(target)
    index = source.meta["source_index"]
    gaps = np.asarray([max(mmd2(sample(source.subset(np.flatnonzero(index == k))), xt), 0.0)
                       for k in range(len(data.source_names))])
    w = np.exp(-gaps / max(gaps.mean(), 1e-12))
    return [float(v) for v in w / w.mean()]


def _evaluation_view(
    cfg: RunConfig, model: TransferModel, data: RunData, progress: bool
) -> tuple[Any, RunData]:
    """``(view, data)`` to predict with: for a linear probe, the head alone on every split's cached features (the
    frozen backbone computes nothing new, and a text or image encoder is by far the costliest part); otherwise the
    model and the data as they are."""
    if cfg.finetune.strategy != "linear-probe":
        return (lambda m: m), data
    kw = {"batch_size": None, "num_workers": cfg.data.num_workers, "device": cfg.train.device, "progress": progress}

    def feats(ds: DomainDataset | None) -> DomainDataset | None:
        return None if ds is None else cached_features(model.backbone, ds, **kw)

    def view(m: TransferModel) -> TransferModel:
        head = TransferModel(IdentityBackbone(m.backbone.out_features), m.classes, cfg.model.head_dropout,
                             cfg.model.bottleneck_dim, tasks=m.tasks)
        head.load_state_dict({k: v for k, v in m.state_dict().items() if not k.startswith("backbone.")},
                             strict=False)
        return head.eval()

    return view, replace(data, source_train=feats(data.source_train), source_val=feats(data.source_val),
                         source_eval=feats(data.source_eval), target_eval=feats(data.target_eval),
                         target_train=feats(data.target_train))


def candidate_outputs(cfg: RunConfig, seed: int, *, need_train_features: bool = False) -> Any:
    """A finished run's selected model of ``seed`` as a label-free :class:`~transferkit.measure.selection.Candidate`:
    its outputs on the source validation split and on the unlabelled target train split."""
    if not cfg.data.target:
        raise ConfigError("label-free selection needs a target domain: set data.target")
    if not cfg.model.primary_reads_labels:
        raise ConfigError("label-free selection scores class predictions: the first of model.heads must be a "
                          "classification head on `label`")
    run = RunDir(cfg.run_path)
    model = TransferModel.load(run.find_model(seed if len(cfg.seeds) > 1 else None))
    data = load_run_data(cfg, seed)
    kw = {"batch_size": cfg.data.eval_batch_size, "num_workers": cfg.data.num_workers, "device": cfg.train.device}
    val = data.source_val if data.source_val is not None else data.source_train
    target = data.target_train if data.target_train is not None else load_data(
        cfg.data.target, cfg.data.train_split, cfg.data.root).unlabelled()
    return candidate_of(f"{cfg.name}/seed-{seed}", model, val, target,
                        data.source_train if need_train_features else None, kw)


def candidate_of(name: str, model: TransferModel, val: DomainDataset, target: DomainDataset,
               train: DomainDataset | None, kw: dict[str, Any]) -> Any:
    from transferkit.measure.selection import Candidate

    fv, lv, yv = predict_outputs(model, val, **kw, preprocessed=_cached(val))
    ft, lt, _ = predict_outputs(model, target, **kw, preprocessed=_cached(target))
    cand = Candidate(name, lt.numpy(), lv.numpy(), yv.numpy(), source_val_features=fv.numpy(),
                     target_features=ft.numpy())
    if train is not None:
        cand.source_train_features = predict_outputs(model, train, **kw, preprocessed=_cached(train))[0].numpy()
    return cand


def _cached(ds: DomainDataset | None) -> bool:
    return ds is not None and ds.cache is not None


def _preprocessed(data: RunData, model: TransferModel, max_bytes: int) -> RunData:
    """``data`` with each split the guard predicts on preprocessed once by ``model``'s transform, where it fits
    in ``max_bytes`` (``data.cache_mb``) and the split has no transform of its own; other splits stay as they are."""
    def prep(ds: DomainDataset | None) -> DomainDataset | None:
        if ds is None or ds.transform is not None or model.transform is None or max_bytes <= 0:
            return ds
        cached = ds.with_transform(model.transform).precomputed(max_bytes)
        return cached if cached.cache is not None else ds

    return replace(data, source_train=prep(data.source_train), source_val=prep(data.source_val),
                   target_train=prep(data.target_train), target_eval=prep(data.target_eval))


def _guard(
    cfg: RunConfig, adapted: TransferModel, baseline: TransferModel, data: RunData, kw: dict[str, Any], *,
    source_only: Any = None,
) -> tuple[Any, dict[str, Any], tuple[Any, Any]]:
    """The negative-transfer guard's decision (:mod:`transferkit.measure.guard`), from label-free outputs only; the
    domain gap on each model's features, before (source-only) and after adaptation; and the two candidates
    ``(source-only, adapted)``, whose source-validation and target features are the report's feature map."""
    from transferkit.measure.guard import IMPORTANCE_WEIGHTED, guard_decision, guard_signals

    val = data.source_val if data.source_val is not None else data.source_train
    assert data.target_train is not None  # an adaptation method always has one
    # The source-train features only feed the importance-weighted signals' domain classifiers (2,000 items, seconds
    # per candidate): computed where something reads them, auto's report and replay or a guard validator among them.
    importance = cfg.adapt.method == "auto" or cfg.adapt.guard_validator in IMPORTANCE_WEIGHTED
    train = data.source_train if importance else None
    if train is not None and len(train) > 2000:
        train = train.subset(np.sort(np.random.default_rng(0).choice(len(train), 2000, replace=False)))
    if source_only is None:  # ``source_only``: the baseline's candidate, computed already (auto compares several)
        source_only = candidate_of("source-only", baseline, val, data.target_train, train, kw)
    adapted_c = candidate_of("adapted", adapted, val, data.target_train, train, kw)
    decision = guard_decision(source_only, adapted_c, max_source_drop=cfg.adapt.guard_max_source_drop,
                              gap_alpha=cfg.adapt.guard_gap_alpha, absent_weight=cfg.adapt.guard_absent_weight,
                              flip_check=cfg.adapt.guard_flip_check, validator=cfg.adapt.guard_validator)
    decision.numbers["signals"] = guard_signals(source_only, adapted_c, importance=importance)
    return decision, decision.numbers.pop("gap", {}), (source_only, adapted_c)


FEATURE_MAP_ITEMS = 500  # per domain: enough for a readable t-SNE, small on disk (and quick to embed)


def _sample(n: int, k: int = FEATURE_MAP_ITEMS, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``k`` of ``n`` items, the same for every call with the same arguments."""
    return np.arange(n) if n <= k else np.sort(np.random.default_rng(seed).choice(n, k, replace=False))


def _save_feature_map(run: RunDir, model: TransferModel, data: RunData, candidates: tuple[Any, Any] | None,
                      kw: dict[str, Any]) -> None:
    """``feature_map.npz``: up to 500 source and 500 target feature vectors for the report's 2-D map (at most 50
    wide: see :func:`_leading_components`).

    With the guard, the features its candidates computed on the source validation and the unlabelled target
    train split: ``before_*`` from the source-only twin, ``after_*`` from the adapted model, for the same items.
    Otherwise only ``after_*``, predicted here on a subsample (``note`` says why there is no "before"). The
    source items' labels may colour the map; target labels are never read (their domain colours them)."""
    arrays: dict[str, np.ndarray] = {}
    val_name = "source validation" if data.source_val is not None else "source train"
    if candidates is not None:
        before, after = candidates
        si, ti = _sample(len(after.source_val_features)), _sample(len(after.target_features))
        arrays.update(after_source=after.source_val_features[si], after_target=after.target_features[ti],
                      before_source=before.source_val_features[si], before_target=before.target_features[ti],
                      source_labels=np.asarray(after.source_val_labels)[si])
        splits, note = (val_name, "target train (unlabelled)"), ""
    else:
        source = next(d for d in (data.source_val, data.source_eval, data.source_train) if d is not None)
        target = data.target_train if data.target_train is not None else data.target_eval
        if target is None:
            return  # no target domain: nothing to map against
        source_name = "source evaluation" if source is data.source_eval else val_name
        target_name = "target train (unlabelled)" if target is data.target_train else "target evaluation"
        fs, _, ys = predict_outputs(model, source.subset(_sample(len(source))), **kw)
        ft, _, _ = predict_outputs(model, target.subset(_sample(len(target))).unlabelled(), **kw)
        arrays.update(after_source=fs.numpy(), after_target=ft.numpy(), source_labels=ys.numpy())
        splits = (source_name, target_name)
        note = ("a source-only run (adapt.method none) has no adaptation to compare with"
                if data.target_train is None else
                "the negative-transfer guard was off (adapt.guard false), so no source-only twin was trained")
    for model_name in ("before", "after"):
        if f"{model_name}_source" in arrays:
            arrays[f"{model_name}_source"], arrays[f"{model_name}_target"] = _leading_components(
                arrays[f"{model_name}_source"], arrays[f"{model_name}_target"])
    with atomic_path(run.path / FEATURE_MAP) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays, source_split=np.array(splits[0]), target_split=np.array(splits[1]),
                            note=np.array(note))


def _leading_components(source: np.ndarray, target: np.ndarray, k: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Both domains' features projected together onto their ``k`` leading principal components when wider (the
    map embeds those anyway: t-SNE starts from 50 components, PCA keeps 2), as float32: a small file."""
    both = np.concatenate([source, target]).astype(np.float64)
    if both.shape[1] > k and len(both) > 1:
        both -= both.mean(0)
        _, _, vt = np.linalg.svd(both, full_matrices=False)
        both = both @ vt[:k].T
    both = both.astype(np.float32)
    return both[: len(source)], both[len(source):]


def _train(
    cfg: RunConfig, model: TransferModel, data: RunData, run: RunDir, seed: int, *, resume: bool, progress: bool,
    prefix: str = "", on_epoch: Callable[[dict[str, Any]], None] | None = None,
    source_weights: list[float] | None = None, steps: int | None = None,
) -> dict[str, Any]:
    """Fine-tune ``model`` by ``cfg.finetune.strategy``; ``steps`` fixes the length of its last phase (a guard's twin
    trains as many steps as its adapted run)."""
    strategy = cfg.finetune.strategy
    common = {
        "source_weights": source_weights,
        "on_epoch": on_epoch,
        "run": run,
        "seed": seed,
        "batch_size": cfg.data.batch_size,
        "eval_batch_size": cfg.data.eval_batch_size,
        "cache_mb": cfg.data.cache_mb,
        "num_workers": cfg.data.num_workers,
        "progress": progress,
    }
    if strategy == "linear-probe" and solver_for(cfg) == "lbfgs":
        return _convex_probe(model, data, seed, cfg=cfg, progress=progress)
    if strategy in ("linear-probe", "lp-ft"):
        epochs = cfg.train.epochs if strategy == "linear-probe" else cfg.finetune.lp_epochs
        lr = cfg.train.lr if strategy == "linear-probe" or cfg.finetune.lp_lr is None else cfg.finetune.lp_lr
        lp_train = cfg.train.model_copy(update={"epochs": epochs, "lr": lr} if strategy == "linear-probe"
                                        else {"epochs": epochs, "steps": None, "lr": lr})
        result = _linear_probe(cfg, model, data, lp_train,
                               phase=prefix + "lp", resume=resume,
                               steps=steps if strategy == "linear-probe" else None, **common)
        if strategy == "linear-probe":
            return result
    apply_strategy(model, cfg.finetune, phase="ft")
    groups = param_groups(model, cfg.finetune, cfg.train.lr)
    phase = prefix + ("ft" if strategy == "lp-ft" else "train")
    engine = Engine(model, cfg.train, param_groups=groups, loss_terms=loss_terms(cfg, model), phase=phase, **common)
    train, target, few = data.source_train, data.target_train, data.target_labelled
    if cfg.data.augment:  # random views each epoch for both training domains; validation stays deterministic
        from transferkit.data.images import training_transform

        tf = training_transform(model.backbone, cfg.data.augment_min_scale)
        train = train.with_transform(tf)
        target = target.with_transform(tf) if target is not None else None
        few = few.with_transform(tf) if few is not None else None
    res = engine.fit(train, data.source_val, target, resume=resume, labelled_target=few, steps=steps)
    return _result_dict(res, engine)


def _check_combination(cfg: RunConfig) -> None:
    """Settings that are each valid but cannot work together."""
    from transferkit.features import pick_device

    pick_device(cfg.train.device)
    solver_for(cfg)  # finetune.probe_solver lbfgs on a probe that is more than logistic regression
    method = list_methods().get(cfg.adapt.method)
    frozen = cfg.finetune.strategy == "linear-probe" and cfg.model.bottleneck_dim is None
    if method is not None and method.aligns_features and frozen:
        raise ConfigError(
            f"adapt.method {cfg.adapt.method!r} aligns features, but finetune.strategy 'linear-probe' freezes "
            "them: set model.bottleneck_dim (a trainable layer to align) or use another strategy"
        )
    if cfg.data.augment and cfg.finetune.strategy == "linear-probe":
        raise ConfigError("data.augment has no effect with finetune.strategy 'linear-probe' (its features are "
                          "extracted once, without augmentation): drop data.augment or fine-tune")
    needs_pairs = cfg.adapt.method != "none" or cfg.model.bottleneck_dim is not None
    if needs_pairs and cfg.data.batch_size < 2:
        raise ConfigError("data.batch_size must be >= 2 with an adaptation method or a bottleneck (batch statistics)")
    kind = cfg.model.primary_kind
    if kind != "classification" and method is not None and method.reads_classes:
        raise ConfigError(
            f"adapt.method {cfg.adapt.method!r} reads class predictions, but the primary head "
            f"{cfg.model.heads[0].name!r} is {kind}: use a feature-alignment method (dan, coral, dann, afn) or "
            "put a classification head first"
        )
    if cfg.data.target_labels_per_class is not None and not cfg.model.primary_reads_labels:
        raise ConfigError("data.target_labels_per_class picks labelled target items per class and trains the primary "
                          "head on their labels: the first of model.heads must be a classification head on `label`")
    if len(cfg.data.sources) == 1 and cfg.data.source_weighting != "none":
        raise ConfigError("data.source_weighting weighs several sources: give data.source a list of them")


def _check_sizes(cfg: RunConfig, data: RunData) -> None:
    """Batch statistics (BatchNorm in a bottleneck, MMD, CORAL, a discriminator) need two items per domain."""
    needs_pairs = cfg.adapt.method != "none" or cfg.model.bottleneck_dim is not None
    if not needs_pairs:
        return
    for name, spec, ds in (("data.source", cfg.data.source, data.source_train),
                           ("data.target", cfg.data.target, data.target_train)):
        if ds is not None and len(ds) < 2:
            raise DataError(f"{name} {spec!r} has {len(ds)} training item(s); an adaptation method or a bottleneck "
                            "needs at least 2 per domain (batch statistics)")


def _linear_probe(cfg: RunConfig, model: TransferModel, data: RunData, train_cfg: TrainConfig, *, phase: str,
                  resume: bool, steps: int | None = None, **common: Any) -> dict[str, Any]:
    """Train the head on features extracted once by the frozen backbone (cached on disk)."""
    apply_strategy(model, cfg.finetune, phase="lp")
    kw = {"batch_size": None, "num_workers": cfg.data.num_workers,  # None: the extractor's device default
          "device": cfg.train.device, "progress": common["progress"]}
    train_f = cached_features(model.backbone, data.source_train, **kw)
    val_f = cached_features(model.backbone, data.source_val, **kw) if data.source_val is not None else None
    probe = TransferModel(IdentityBackbone(model.backbone.out_features), model.classes, cfg.model.head_dropout,
                          cfg.model.bottleneck_dim, tasks=model.tasks)
    on_top = {k: v for k, v in model.state_dict().items() if not k.startswith("backbone.")}
    probe.load_state_dict(on_top, strict=False)
    terms = loss_terms(cfg, probe)
    method = list_methods().get(cfg.adapt.method)
    if method is not None and method.aligns_features and cfg.model.bottleneck_dim is None:
        terms = [t for t in terms if t.name != cfg.adapt.method]  # lp of lp-ft: frozen features, nothing to align
    adapting = any(t.name == cfg.adapt.method for t in terms) and data.target_train is not None
    target_f = cached_features(model.backbone, data.target_train, **kw) if adapting else None
    few_f = cached_features(model.backbone, data.target_labelled, **kw) if data.target_labelled is not None else None
    engine = Engine(probe, train_cfg, loss_terms=terms, phase=phase, **common)
    res = engine.fit(train_f, val_f, target_f, resume=resume, labelled_target=few_f, steps=steps)
    trained = {k: v for k, v in probe.state_dict().items() if not k.startswith("backbone.")}
    model.load_state_dict(trained, strict=False)
    return _result_dict(res, engine)


def _convex_probe(model: TransferModel, data: RunData, seed: int, *, cfg: RunConfig,
                  progress: bool) -> dict[str, Any]:
    """The head as L2 logistic regression on the cached features of the source's training split (the validation
    split stays held out: the guard and the validators score on it)."""
    from contextlib import nullcontext

    from transferkit.finetune.convex_probe import fit_convex_probe

    apply_strategy(model, cfg.finetune, phase="lp")
    feats = cached_features(model.backbone, data.source_train, batch_size=None, num_workers=cfg.data.num_workers,
                            device=cfg.train.device, progress=progress)
    waiting = console.status("linear probe: logistic regression by L-BFGS") if progress else None
    with waiting or nullcontext():
        fit = fit_convex_probe(np.asarray(feats.inputs), np.asarray(feats.labels), num_classes=len(model.classes),
                               seed=seed, c=cfg.finetune.probe_c)
    with torch.no_grad():
        model.head.fc.weight.copy_(torch.from_numpy(fit.weight))
        model.head.fc.bias.copy_(torch.from_numpy(fit.bias))
    return {"solver": fit.describe(), "probe_c": fit.c, "cv_accuracy": fit.cv_accuracy,
            "solver_iterations": fit.iterations, "steps": None, "budget": "solved to convergence (L-BFGS)"}


def _result_dict(res: Any, engine: Engine) -> dict[str, Any]:
    out = {
        "best_epoch": res.best_epoch,
        "best_val_acc": res.best_val_acc,
        "epochs_run": res.epochs_run,
        "stopped_early": res.stopped_early,
        "steps": res.steps,
        "budget": res.budget,
    }
    if res.val_metric != "val_acc":
        out[f"best_{res.val_metric}"] = res.best_val
    learnt = [m for m in engine.extra.values() if isinstance(m, UncertaintyWeights)]
    if learnt:  # the weights the selected epoch trained with (the engine restored the loss modules with the model)
        out["head_weights"] = learnt[0].weights()
    return out


def _target_label_use(cfg: RunConfig) -> str:
    k = cfg.data.target_labels_per_class
    if k is None:
        return "; target labels are used only to score the selected model"
    return (f"; {k} labelled target item(s) per class from the {cfg.data.train_split!r} split were trained on; the "
            f"{cfg.data.eval_split!r} split's labels only score the selected model")


def _header(cfg: RunConfig, data: RunData) -> dict[str, Any]:
    scored = "" if data.target_eval is not None or not cfg.data.target else (
        "; the target has no labels, so it is not scored"
    )
    if data.source_eval is not None and data.source_eval.meta.get("whole_file"):
        scored += "; the source file has no splits, so the source score is on the items it trained on"
    measure = {"classification": "accuracy", "regression": "MAE", "multilabel": "micro-F1"}[cfg.model.primary_kind]
    selection = (
        "none: the linear probe is solved to convergence (L-BFGS)" + (
            " with its L2 strength chosen by cross-validation on the source's training split"
            if cfg.finetune.probe_c is None else "")
        if solver_for(cfg) == "lbfgs"
        else f"best source-validation {measure}"
        if data.source_val is not None
        else f"last epoch (no validation split: {data.val_note or 'data.val_fraction = 0'})"
    )
    return {
        "name": cfg.name,
        "backbone": cfg.model.backbone,
        "strategy": cfg.finetune.strategy,
        "source": cfg.data.source,
        "target": cfg.data.target,
        "method": cfg.adapt.method,
        # the primary head's classes (what the confusion matrices and per-class tables are about)
        "classes": list(data.tasks[0].classes) if data.tasks and data.tasks[0].kind == "classification"
        else data.classes,
        "selection": selection + _target_label_use(cfg) + scored,
        **({"standardize": f"{data.standardize[0]} ({data.standardize[1]})"} if cfg.model.backbone == "mlp"
           and data.source_train.kind == "vector" else {}),
        **({"heads": [t.to_json() for t in data.tasks]} if cfg.model.heads else {}),
        **({"multi_source": cfg.data.multi_source} if len(cfg.data.sources) > 1 else {}),
    }


def _single_summary(report: dict[str, Any]) -> dict[str, Any]:
    from transferkit.tasks import scalars_of

    return {
        role: {m: {"mean": v[m], "std": 0.0, "values": [v[m]]} for m, *_ in scalars_of(v)}
        for role, v in report["evaluations"].items()
    }


# Settings that change how a run is carried out, not what it computes: a resume may change them.
RESUME_MAY_CHANGE = frozenset({
    "train.threads", "train.checkpoint_every_steps", "train.checkpoint_every_minutes", "train.keep_checkpoints",
    "train.keep_finished_checkpoints",
    "data.num_workers", "data.cache_mb", "tracking.log_to", "tracking.mlflow_uri", "tracking.experiment",
})


def _check_resume(run: RunDir, cfg: RunConfig, resume: bool) -> None:
    if not resume or not run.config.exists():
        return
    from transferkit.config import load_yaml_mapping

    try:
        old = load_yaml_mapping(run.config, "its config file")
    except ConfigError as exc:
        raise RunDirError(f"cannot resume {run.path}: {exc}; start a new run with --overwrite or another --name") \
            from None
    new = cfg.model_dump(mode="json")
    changed = [k for k in _diff(old, new) if k not in RESUME_MAY_CHANGE]
    if changed:
        raise RunDirError(
            f"cannot resume {run.path}: the configuration changed since it started ({', '.join(changed[:5])}); "
            "resume with the same config, or start a new run with --overwrite / another --name"
        )


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += _diff(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [prefix.rstrip(".")] if old != new else []

"""Step 3: train one model by ``finetune.strategy`` — the engine, or for a linear probe the head on cached
features (solved as logistic regression where it is one) — and the per-source weights of a discrepancy-weighted
run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from transferkit.adapt.methods import list_methods
from transferkit.config import RunConfig, TrainConfig
from transferkit.data import DomainDataset
from transferkit.data.images import training_transform
from transferkit.errors import ConfigError
from transferkit.features import cached_features
from transferkit.finetune import apply_strategy, param_groups
from transferkit.finetune.convex_probe import fit_convex_probe, solver_for
from transferkit.measure.discrepancy import mmd2
from transferkit.models.heads import IdentityBackbone, TransferModel
from transferkit.pipeline.data import RunData
from transferkit.pipeline.model import loss_terms
from transferkit.runs import RunDir
from transferkit.tasks import UncertaintyWeights
from transferkit.train.engine import Engine
from transferkit.ui import console


def discrepancy_weights(cfg: RunConfig, model: TransferModel, data: RunData, progress: bool) -> list[float]:
    """``w_k ∝ exp(-MMD²_k / mean_j MMD²_j)``, mean 1: each source's closeness to the target, measured before training
    (on raw feature vectors, else on the initial backbone's features), on up to 1,000 items of each domain."""
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


def train_model(
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

        tf = training_transform(model.backbone, cfg.data.augment_min_scale)
        train = train.with_transform(tf)
        target = target.with_transform(tf) if target is not None else None
        few = few.with_transform(tf) if few is not None else None
    res = engine.fit(train, data.source_val, target, resume=resume, labelled_target=few, steps=steps)
    return _result_dict(res, engine)


def _linear_probe(cfg: RunConfig, model: TransferModel, data: RunData, train_cfg: TrainConfig, *, phase: str,
                  resume: bool, steps: int | None = None, **common: Any) -> dict[str, Any]:
    """Train the head on features extracted once by the frozen backbone (cached on disk)."""
    apply_strategy(model, cfg.finetune, phase="lp")
    kw = {"batch_size": None, "num_workers": cfg.data.num_workers,  # None: the extractor's device default
          "device": cfg.train.device, "progress": common["progress"]}
    train_f = cached_features(model.backbone, data.source_train, **kw)
    val_f = cached_features(model.backbone, data.source_val, **kw) if data.source_val is not None else None
    probe = TransferModel(IdentityBackbone(model.backbone.out_features), model.classes, cfg.model.head_dropout,
                          model.bottleneck_dim, tasks=model.tasks)
    on_top = {k: v for k, v in model.state_dict().items() if not k.startswith("backbone.")}
    probe.load_state_dict(on_top, strict=False)
    terms = loss_terms(cfg, probe)
    method = list_methods().get(cfg.adapt.method)
    if method is not None and method.aligns_features and model.bottleneck_dim is None:
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
            "solver_iterations": fit.iterations, "steps": None, "budget": "L-BFGS, no step budget"}


# what _convex_probe reports instead of an engine's epochs (auto drops them when a trained candidate is kept)
PROBE_KEYS = ("solver", "probe_c", "cv_accuracy", "solver_iterations")


def _result_dict(res: Any, engine: Engine) -> dict[str, Any]:
    out = {
        "best_epoch": res.best_epoch,
        "best_val_acc": res.best_val_acc,
        "epochs_run": res.epochs_run,
        "stopped_early": res.stopped_early,
        "steps": res.steps,
        "budget": res.budget,
        "precision": res.precision,
    }
    if res.val_metric != "val_acc":
        out[f"best_{res.val_metric}"] = res.best_val
    learnt = [m for m in engine.extra.values() if isinstance(m, UncertaintyWeights)]
    if learnt:  # the weights the selected epoch trained with (the engine restored the loss modules with the model)
        out["head_weights"] = learnt[0].weights()
    return out

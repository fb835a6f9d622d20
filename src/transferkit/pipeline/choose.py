"""Step 4: which model is kept. The negative-transfer guard against its source-only twin, ``--method auto``'s
candidates and their label-free scores, and the cached-feature view they are all scored through."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from transferkit.adapt.auto import SOURCE_ONLY, choose, ensemble_agreement, trainable_methods
from transferkit.config import RunConfig, bottleneck_width
from transferkit.data import DomainDataset, load_data
from transferkit.errors import ConfigError
from transferkit.evaluate.predict import predict_outputs, score
from transferkit.features import cached_features
from transferkit.measure.guard import IMPORTANCE_WEIGHTED, guard_signals
from transferkit.measure.guard import guard_decision as decide  # this module's guard_decision wraps it
from transferkit.measure.selection import Candidate, collapse_check
from transferkit.models.heads import IdentityBackbone, TransferModel
from transferkit.pipeline.data import RunData, load_run_data
from transferkit.pipeline.train import PROBE_KEYS
from transferkit.runs import RunDir


def auto_configs(cfg: RunConfig) -> tuple[dict[str, RunConfig], dict[str, str]]:
    """``adapt.method auto``: the config of each candidate method that can train with this model, and the methods
    left out (with why); a ConfigError where auto cannot choose at all."""
    a = cfg.adapt
    if a.weight is not None or a.options:
        raise ConfigError("adapt.method auto trains each candidate at its own default λ and options: drop adapt.weight "
                          "and adapt.options (or name one method to set them)")
    if not cfg.model.primary_reads_labels:
        raise ConfigError("adapt.method auto chooses by class predictions: the first of model.heads must be a "
                          "classification head on `label` (or name a feature-alignment method: dan, coral, dann, afn)")
    frozen = cfg.finetune.strategy == "linear-probe" and bottleneck_width(cfg) is None
    skipped = trainable_methods(a.auto_methods, frozen_features=frozen)
    configs = {m: cfg.model_copy(update={"adapt": a.model_copy(update={"method": m})})
               for m in a.auto_methods if m not in skipped}
    if not configs:
        raise ConfigError(f"adapt.method auto: none of adapt.auto_methods {a.auto_methods} can train with this model ("
                          + "; ".join(f"{m} {why}" for m, why in skipped.items()) + ")")
    return configs, skipped


def choose_auto(
    cfg: RunConfig, source_only: TransferModel, result: dict[str, Any],
    trained: dict[str, tuple[TransferModel, dict[str, Any]]], vdata: RunData, view: Callable[[Any], Any],
    kw: dict[str, Any],
) -> tuple[TransferModel, dict[str, Any], dict[str, Any], tuple[Any, Any], dict[str, Any], dict[str, Any] | None]:
    """Guard and score every candidate of ``adapt.method auto`` (:mod:`transferkit.adapt.auto`) and keep the chosen
    one in ``source_only``'s place. Returns the model, its training result, the report's ``auto`` section, the
    (source-only, chosen) candidates for the feature map, the target evaluations (reported, never used to decide)
    and the chosen candidate's guard decision (None when source-only is chosen)."""
    shared = preprocessed_for(vdata, view(source_only), cfg.data.cache_mb * 2**20)
    evals: dict[str, Any] = {}
    scored = shared.target_eval is not None

    def target_score(m: TransferModel) -> dict[str, Any] | None:
        return score(view(m), shared.target_eval, **kw, preprocessed=is_cached(shared.target_eval)) if scored else None

    so_candidate = None
    adapted, rejections, decisions = {}, {}, {}
    for name, (model, _) in trained.items():
        decision, gap, (so_c, ad_c) = guard_decision(cfg, view(model), view(source_only), shared, kw,
                                                     source_only=so_candidate)
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
    table: dict[str, Any] = {SOURCE_ONLY: {"bottleneck_dim": source_only.bottleneck_dim, "steps": result.get("steps"),
                                           "seconds": result.get("seconds"),
                                           "target_accuracy": so_eval["accuracy"] if so_eval else None}}
    for name, (model, r) in trained.items():
        e = target_score(model)
        if name == choice.chosen and e is not None:
            evals["target"] = e
        signals = decisions[name]["numbers"].get("signals", {})
        table[name] = {
            "kept": not rejections[name], "reasons": rejections[name], "bottleneck_dim": model.bottleneck_dim,
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
              "warm_start": cfg.adapt.auto_warm_start,
              "target_labels": "score each candidate for this table; they decide nothing" if scored else "none"}
    guard, model = None, source_only
    if choice.chosen != SOURCE_ONLY:  # the candidate itself: its architecture may differ (its own bottleneck)
        model, r = trained[choice.chosen]
        # the chosen candidate's own training record (a convex source-only probe's solver keys do not describe it)
        result = {**{k: v for k, v in result.items() if k not in PROBE_KEYS},
                  **{k: v for k, v in r.items() if k != "seconds"}}
        guard = decisions[choice.chosen]
    return model, result, report, (so_candidate, adapted.get(choice.chosen, so_candidate)), evals, guard


def _ensemble_accuracy(models: list[TransferModel], target: DomainDataset, view: Callable[[Any], Any],
                       kw: dict[str, Any]) -> float:
    """Target accuracy of the mean softmax of ``models`` (auto's report: what an ensemble of the kept candidates
    would have scored; it decides nothing)."""
    probs, labels = [], None
    for m in models:
        _, logits, labels = predict_outputs(view(m), target, **kw, preprocessed=is_cached(target))
        probs.append(torch.softmax(logits.float(), 1))
    assert labels is not None
    return float((torch.stack(probs).mean(0).argmax(1) == labels).float().mean())


def evaluation_view(
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
                             m.bottleneck_dim, tasks=m.tasks)
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
    fv, lv, yv = predict_outputs(model, val, **kw, preprocessed=is_cached(val))
    ft, lt, _ = predict_outputs(model, target, **kw, preprocessed=is_cached(target))
    cand = Candidate(name, lt.numpy(), lv.numpy(), yv.numpy(), source_val_features=fv.numpy(),
                     target_features=ft.numpy())
    if train is not None:
        cand.source_train_features = predict_outputs(model, train, **kw, preprocessed=is_cached(train))[0].numpy()
    return cand


def is_cached(ds: DomainDataset | None) -> bool:
    return ds is not None and ds.cache is not None


def preprocessed_for(data: RunData, model: TransferModel, max_bytes: int) -> RunData:
    """``data`` with each split the guard predicts on preprocessed once by ``model``'s transform, where it fits
    in ``max_bytes`` (``data.cache_mb``) and the split has no transform of its own; other splits stay as they are."""
    def prep(ds: DomainDataset | None) -> DomainDataset | None:
        if ds is None or ds.transform is not None or model.transform is None or max_bytes <= 0:
            return ds
        cached = ds.with_transform(model.transform).precomputed(max_bytes)
        return cached if cached.cache is not None else ds

    return replace(data, source_train=prep(data.source_train), source_val=prep(data.source_val),
                   target_train=prep(data.target_train), target_eval=prep(data.target_eval))


def guard_decision(
    cfg: RunConfig, adapted: TransferModel, baseline: TransferModel, data: RunData, kw: dict[str, Any], *,
    source_only: Any = None,
) -> tuple[Any, dict[str, Any], tuple[Any, Any]]:
    """The negative-transfer guard's decision (:mod:`transferkit.measure.guard`), from label-free outputs only; the
    domain gap on each model's features, before (source-only) and after adaptation; and the two candidates
    ``(source-only, adapted)``, whose source-validation and target features are the report's feature map."""
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
    decision = decide(source_only, adapted_c, max_source_drop=cfg.adapt.guard_max_source_drop,
                      gap_alpha=cfg.adapt.guard_gap_alpha, absent_weight=cfg.adapt.guard_absent_weight,
                      flip_check=cfg.adapt.guard_flip_check, validator=cfg.adapt.guard_validator)
    decision.numbers["signals"] = guard_signals(source_only, adapted_c, importance=importance)
    return decision, decision.numbers.pop("gap", {}), (source_only, adapted_c)

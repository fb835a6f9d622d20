"""The orchestrator: validate everything, then per seed data -> model -> train -> choose -> report.

Everything that can be wrong with the inputs (data paths, label sets, backbone names, weights, stage counts)
is checked before the run directory is created, so bad input never leaves a half-written run behind."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch

from transferkit.adapt.auto import warm_start
from transferkit.config import RunConfig
from transferkit.data.images import training_transform
from transferkit.errors import RunDirError
from transferkit.evaluate.predict import score
from transferkit.evaluate.report import write_aggregate_report, write_report
from transferkit.finetune import apply_strategy
from transferkit.finetune.convex_probe import solver_for
from transferkit.finetune.lora import merge_lora
from transferkit.models.heads import TransferModel
from transferkit.models.pretrained import trusting_pickle
from transferkit.network import offline
from transferkit.pipeline.choose import (
    auto_configs,
    choose_auto,
    evaluation_view,
    guard_decision,
    is_cached,
    preprocessed_for,
)
from transferkit.pipeline.data import RunData, check_sizes, load_run_data, trained_on
from transferkit.pipeline.model import build_model, check_combination, check_names, loss_terms, source_only_config
from transferkit.pipeline.report import report_header, save_feature_map, single_summary
from transferkit.pipeline.resume import check_resume, data_digests, model_digests, record_data
from transferkit.pipeline.train import discrepancy_weights, train_model
from transferkit.runs import RunDir, atomic_write_text, read_json
from transferkit.train.processes import process_accelerator
from transferkit.train.tracking import check_tracking, open_trackers
from transferkit.train.twin_cache import describe as describe_twin
from transferkit.train.twin_cache import load_twin, store_twin, twin_key
from transferkit.ui import console


def fit(cfg: RunConfig, *, overwrite: bool = False, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run every seed of ``cfg`` and return the report aggregated over seeds (also written to disk)."""
    with trusting_pickle(cfg.model.trust_pickle), offline(not cfg.online):
        return _fit(cfg, overwrite=overwrite, resume=resume, progress=progress)


def _fit(cfg: RunConfig, *, overwrite: bool, resume: bool, progress: bool) -> dict[str, Any]:
    # Validate everything first: nothing is written if the data or the model cannot be used.
    check_names(cfg)
    first = load_run_data(cfg, cfg.seeds[0])
    probe_model = build_model(cfg, first)
    apply_strategy(probe_model, cfg.finetune)
    for checked in (auto_configs(cfg)[0].values() if cfg.adapt.method == "auto" else [cfg]):
        loss_terms(checked, probe_model)  # unknown method or option -> ConfigError now, not after the run dir exists
    if cfg.data.augment:
        training_transform(probe_model.backbone)  # a backbone with no image config -> ConfigError now
    check_combination(cfg)
    check_sizes(cfg, first)
    check_tracking(cfg.tracking.log_to, cfg.tracking.mlflow_uri)  # a missing package, a store that is a file
    run = RunDir(cfg.run_path)
    digests = {**data_digests(first), **model_digests(cfg)}  # the content a resume must find unchanged
    check_resume(run, cfg, resume, digests)
    # Under `accelerate launch` every process runs this; only the main one writes the run directory (a failure
    # there ends the launch, and with it the other processes).
    acc = process_accelerator(cfg.train.device, cfg.train.mixed_precision, cfg.train.grad_accum_steps)
    if acc.is_main_process:
        run.prepare(overwrite=overwrite, resume=resume)
        atomic_write_text(run.config, cfg.to_yaml())
        record_data(run, digests, resume)
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
    header = report_header(cfg, first)
    if len(cfg.seeds) == 1:
        return {**header, "seeds": cfg.seeds, "summary": single_summary(per_seed[0]), "per_seed": per_seed}
    return write_aggregate_report(run, per_seed, header)


def _open_trackers(cfg: RunConfig, run: RunDir, seed: int) -> Any:
    t = cfg.tracking
    if not t.log_to:
        return None
    run.path.mkdir(parents=True, exist_ok=True)
    name = cfg.name if len(cfg.seeds) == 1 else f"{cfg.name}/seed-{seed}"
    return open_trackers(t.log_to, run, run_name=name, config=cfg.model_dump(mode="json"), mlflow_uri=t.mlflow_uri,
                         experiment=t.experiment, output_dir=cfg.output_dir)


@dataclass
class _Seed:
    """One seed's run: what every step of :func:`fit_seed` trains with and writes into."""

    cfg: RunConfig
    seed: int
    run: RunDir
    data: RunData
    resume: bool
    progress: bool
    on_epoch: Callable[[dict[str, Any]], None] | None
    weights: list[float] | None = None  # per-source weights (data.source_weighting: discrepancy)

    def train(self, cfg: RunConfig, model: TransferModel, data: RunData, prefix: str = "",
              steps: int | None = None) -> dict[str, Any]:
        return train_model(cfg, model, data, self.run, self.seed, prefix=prefix, resume=self.resume,
                           progress=self.progress, on_epoch=self.on_epoch, source_weights=self.weights, steps=steps)


def fit_seed(
    cfg: RunConfig, seed: int, run: RunDir, data: RunData, *, resume: bool = False, progress: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train and evaluate one seed into ``run``; a finished seed is skipped when resuming."""
    finished = _finished_report(run) if resume else None
    if finished is not None:
        return finished
    run.path.mkdir(parents=True, exist_ok=True)
    if cfg.train.threads is not None:  # before any feature extraction, not only once the engine starts
        torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(seed)
    model = build_model(cfg, data)
    t0 = time.perf_counter()
    s = _Seed(cfg, seed, run, data, resume, progress, on_epoch)
    if cfg.data.source_weighting == "discrepancy":
        s.weights = discrepancy_weights(cfg, model, data, progress)
    auto, left_out = auto_configs(cfg) if cfg.adapt.method == "auto" else (None, {})
    if auto is not None:  # source-only first: every candidate's budget is its number of steps (half, warm-started)
        result = s.train(source_only_config(cfg), model, replace(data, target_train=None), prefix="source-only-")
        result["seconds"] = time.perf_counter() - t0
        trained = _train_candidates(s, auto, result.get("steps"), model if cfg.adapt.auto_warm_start else None)
    else:
        result = s.train(cfg, model, data)
    if cfg.adapt.method in ("none", "auto") and cfg.data.target:  # a later guarded run reuses this model as its twin
        store_twin(cfg, twin_key(cfg, seed, result.get("steps"), trained_on(data), s.weights), model)
    guarded = auto is None and cfg.adapt.method != "none" and cfg.adapt.guard and cfg.model.primary_reads_labels
    baseline, twin_reused = _guard_twin(s, result.get("steps")) if guarded else (None, False)
    if not process_accelerator(cfg.train.device, cfg.train.mixed_precision, cfg.train.grad_accum_steps).is_main_process:
        return {}  # under `accelerate launch`, the main process scores, decides and writes
    kw = {"batch_size": cfg.data.eval_batch_size, "num_workers": cfg.data.num_workers, "device": cfg.train.device}
    # A frozen backbone's features are cached: the guard and the scores run the head on them, not the backbone.
    view, vdata = evaluation_view(cfg, model, data, progress)
    evals: dict[str, Any] = {}
    guard, candidates, auto_report = None, None, None
    if auto is not None:
        model, result, auto_report, candidates, evals, guard = choose_auto(cfg, model, result, trained, vdata, view,
                                                                           kw)
    elif baseline is not None:
        guard, candidates, evals = _guard(cfg, model, baseline, vdata, view, kw)
        guard["twin"] = describe_twin(twin_reused)
    seconds = time.perf_counter() - t0
    merge_lora(model.backbone)  # adapters folded into their weights: the saved model needs no PEFT
    model.save(run.model)
    # the report's 2-D map of the features: the guard's candidates hold them already, before and after adaptation
    save_feature_map(run, view(model), vdata, candidates, kw)
    evals = _scores(view(model), vdata, evals, guard, kw)
    report = _seed_report(s, model, {**result, "seconds": seconds}, evals, guard,
                          None if auto_report is None else {**auto_report, "left_out": left_out})
    written = write_report(run, report, draw_plots=seed == cfg.seeds[0])
    if not cfg.train.keep_finished_checkpoints:
        # model.safetensors and the report are on disk: a resume skips this seed, so its checkpoints (the optimiser
        # state, a discriminator's, every phase's best and last) are dead weight: 25 MB each for a LeNet DANN
        shutil.rmtree(run.checkpoints, ignore_errors=True)
    return written


def _finished_report(run: RunDir) -> dict[str, Any] | None:
    """The report of a seed that finished before a resume (None: it did not)."""
    if not (run.report_json.exists() and run.model.exists()):
        return None

    report = read_json(run.report_json, "report")
    if not isinstance(report, dict) or not isinstance(report.get("evaluations"), dict):
        raise RunDirError(f"cannot resume: {run.report_json} is not a finished seed's report; delete it to "
                          "redo that seed's evaluation")
    return report


def _train_candidates(s: _Seed, auto: dict[str, RunConfig], steps: int | None,
                      warm: TransferModel | None = None) -> dict[str, Any]:
    """``--method auto``: every candidate method from the same seed, for the source-only run's number of steps; or,
    from ``warm`` (the trained source-only model, ``adapt.auto_warm_start``), for half of them."""
    trained = {}
    for name, cfg_m in auto.items():
        torch.manual_seed(s.seed)
        t_m = time.perf_counter()
        cand = build_model(cfg_m, s.data)
        n = steps
        if warm is not None and steps is not None:
            warm_start(cand, warm)
            n = max(1, steps // 2)
        r = s.train(cfg_m, cand, s.data, prefix=f"{name}-", steps=n)
        trained[name] = (cand, {**r, "seconds": time.perf_counter() - t_m})
    return trained


def _guard_twin(s: _Seed, steps: int | None) -> tuple[TransferModel, bool]:
    """The guard's twin: the same model, seed and settings without the transfer loss, trained for as many steps
    (loaded from the twin cache when an identical one was trained before); and whether it was reused. A linear
    probe's twin is what ``--method none`` gives, the probe solved by L-BFGS, whatever the adapted head trained."""
    torch.manual_seed(s.seed)
    baseline = build_model(s.cfg, s.data)
    key = twin_key(s.cfg, s.seed, steps, trained_on(s.data), s.weights)
    reused = load_twin(s.cfg, key, baseline)
    if not reused:
        if s.progress:
            how = ("solving its probe by L-BFGS" if solver_for(source_only_config(s.cfg)) == "lbfgs"
                   else f"{steps} steps")
            console.print(f"negative-transfer guard: training the source-only twin ({how})")
        s.train(source_only_config(s.cfg), baseline, replace(s.data, target_train=None), prefix="source-only-",
                steps=steps)
        store_twin(s.cfg, key, baseline)
    elif s.progress:
        console.print("negative-transfer guard: source-only twin reused from an identical earlier run")
    return baseline, reused


def _guard(cfg: RunConfig, model: TransferModel, baseline: TransferModel, vdata: RunData, view: Callable[[Any], Any],
           kw: dict[str, Any]) -> tuple[dict[str, Any], Any, dict[str, Any]]:
    """Decide between the adapted model and its twin without target labels (``model`` becomes the kept one);
    both are scored on the target where it has labels, for the report only."""
    # Both models share one architecture, hence one preprocessing: computed once for all their predictions.
    shared = preprocessed_for(vdata, view(model), cfg.data.cache_mb * 2**20)
    decision, gap, candidates = guard_decision(cfg, view(model), view(baseline), shared, kw)
    evals = {}
    if shared.target_eval is not None:  # reported, never used to decide
        evals["target_adapted"] = score(view(model), shared.target_eval, **kw,
                                        preprocessed=is_cached(shared.target_eval))
        evals["target_source_only"] = score(view(baseline), shared.target_eval, **kw,
                                            preprocessed=is_cached(shared.target_eval))
    if decision.keep == "source-only":
        model.load_state_dict(baseline.state_dict())
    return {**decision.to_dict(), "gap": gap}, candidates, evals


def _scores(model: Any, vdata: RunData, evals: dict[str, Any], guard: dict[str, Any] | None,
            kw: dict[str, Any]) -> dict[str, Any]:
    """The kept model's scores on the source and target evaluation splits, beside the guard's two."""
    if vdata.source_eval is not None:
        evals["source"] = score(model, vdata.source_eval, **kw)
    if vdata.target_eval is not None:
        kept = f"target_{guard['keep'].replace('-', '_')}" if guard is not None else None
        # the guarded model is one of the two just scored: reuse its scores rather than predict a third time
        evals["target"] = dict(evals[kept]) if kept in evals else score(model, vdata.target_eval, **kw)
    return {k: evals[k] for k in ("source", "target", "target_adapted", "target_source_only") if k in evals}


def _seed_report(s: _Seed, model: TransferModel, fit: dict[str, Any], evals: dict[str, Any],
                 guard: dict[str, Any] | None, auto: dict[str, Any] | None) -> dict[str, Any]:
    cfg = s.cfg
    report = {**report_header(cfg, s.data), "seed": s.seed, "fit": fit, "evaluations": evals}
    if auto is not None:
        report["auto"] = auto  # with the methods this model cannot train, and why
    if guard is not None:
        report["guard"] = guard
    elif cfg.adapt.method not in ("none", "auto") and cfg.adapt.guard:
        report["guard_note"] = ("the negative-transfer guard compares class predictions with the dataset's labels; "
                                f"the primary head {model.tasks[0].name!r} predicts {model.tasks[0].kind} "
                                f"{model.tasks[0].field!r}, so it did not run")
    if s.weights is not None:
        report["source_weights"] = dict(zip(s.data.source_names, s.weights, strict=True))
    return report

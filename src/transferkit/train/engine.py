"""The one training loop. Fine-tuning and every adaptation method run through :class:`Engine`.

The loss is a weighted sum of named terms, ``L = Σ_i λ_i(p) · L_i``: the source cross-entropy is one term,
an adaptation method adds its own (with optional modules such as a domain discriminator), and λ may follow
a schedule of the training progress ``p ∈ [0, 1]``. Each step sees a source batch and, when a target
dataset is given, a target batch (the shorter side cycles); the model runs once on their concatenation
so that BatchNorm statistics cover both domains.

Built on HF Accelerate: the same code runs on a CPU, one GPU (mixed precision where supported) or under
``accelerate launch``. Every epoch is checkpointed (safetensors for weights, ``weights_only`` state for
the rest), and within an epoch every ``checkpoint_every_steps`` steps or ``checkpoint_every_minutes``;
``resume=True`` continues from the last complete checkpoint at its exact step: the samplers skip what the
epoch already saw, and the RNGs, optimiser, LR schedule, λ schedule and the epoch's running sums are restored,
so a resumed run computes what an uninterrupted one would (bit for bit on CPU with ``num_workers=0``). The
checkpoint that is kept as "best" is chosen on the *source* validation split; target labels are never seen here.

Over 500 lines as one module: the loop's parts (prepare, resume, epoch, step, record, finish) share one fit's
state; checkpoints, loss terms, loaders and multi-process helpers live beside it in ``train/``.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from transferkit.config import TrainConfig
from transferkit.data.domain import DomainDataset, PairedLoader
from transferkit.errors import ConfigError, TrainingError
from transferkit.runs import (
    RunDir,
    append_jsonl,
    atomic_write_text,
    read_jsonl,
)
from transferkit.tasks import batch_targets, is_default, multilabel_metrics, task_loss
from transferkit.train.budget import MAX_EPOCHS, Budget, plan_budget
from transferkit.train.callbacks import EarlyStopping
from transferkit.train.checkpoints import (
    CheckpointStore,
    apply_weights,
    resume_point,
    seed_everything,
    weights_of,
)
from transferkit.train.loaders import EpochSampler as EpochSampler  # re-exported
from transferkit.train.loaders import make_loader as make_loader
from transferkit.train.loaders import position_loader, resident_loader, with_model_transform
from transferkit.train.processes import (
    average_gradients,
    broadcast_module,
    clock_says,
    compiled,
    gather_outputs,
    sum_over_processes,
)
from transferkit.train.processes import channels_last as channels_last
from transferkit.train.processes import get_accelerator as get_accelerator
from transferkit.train.schedules import lr_multiplier
from transferkit.train.terms import LossTerm as LossTerm  # re-exported: the engine's public vocabulary
from transferkit.train.terms import StepOutputs as StepOutputs
from transferkit.train.terms import source_cross_entropy as source_cross_entropy
from transferkit.train.terms import target_cross_entropy as target_cross_entropy
from transferkit.ui import make_progress

_DIVERGED_HINT = (
    "lower train.lr or train.weight_decay, or the transfer weights adapt.weight / adapt.target_weight; "
    "train.max_grad_norm clips exploding gradients"
)


@dataclass
class FitResult:
    best_epoch: int
    best_val_acc: float | None
    epochs_run: int
    stopped_early: bool
    history: list[dict[str, Any]] = field(default_factory=list)
    # what selected the checkpoint: val_acc, or val_mae (regression) / val_micro_f1 (multi-label) primary heads
    val_metric: str = "val_acc"
    best_val: float | None = None
    steps: int = 0  # micro-batch steps trained (what a guard's twin is given to train as long)
    budget: str = ""  # how the length was chosen (train.budget)
    precision: str = "fp32"  # what train.mixed_precision resolved to: fp32, bf16 or fp16


@dataclass
class _Fit:
    """What one :meth:`Engine.fit` trains with (prepared by Accelerate) and where it stands."""

    model: nn.Module
    extra: nn.Module  # the loss terms' modules (a discriminator)
    optimizer: Any
    scheduler: Any
    train: Any  # the loaders
    target: Any
    val: Any
    labelled: Any
    paired: PairedLoader
    budget: Budget
    stopper: EarlyStopping
    val_metric: str  # what selects the checkpoint: val_acc, val_mae or val_micro_f1
    history: list[dict[str, Any]] = field(default_factory=list)
    global_step: int = 0


@dataclass
class _Sums:
    """An epoch's running sums (restored from a mid-epoch checkpoint on resume) and its start time.

    ``sums``/``correct`` are host numbers up to the last flush; ``pending``/``pending_correct`` hold what the steps
    since then added, on the model's device: reading a GPU number back every step would make the host wait for the
    device at each step, which dominates the time of a small model's step."""

    sums: dict[str, float]
    correct: int
    seen: int
    t0: float
    pending_names: list[str] | None = None  # the loss terms' names, in the order of ``pending``
    pending: torch.Tensor | None = None  # each term's sum over items
    pending_first_bad: torch.Tensor | None = None  # each term's first step (of pending_steps) that was not finite
    pending_steps: int = 0
    pending_correct: torch.Tensor | None = None
    pending_seen: int = 0
    pending_since: float | None = None  # the progress of the first step not read back yet

    def clear_pending(self) -> None:
        self.pending_names = self.pending = self.pending_first_bad = self.pending_correct = self.pending_since = None
        self.pending_seen = self.pending_steps = 0

    @classmethod
    def resumed(cls, partial: dict[str, Any] | None) -> _Sums:
        if partial is None:
            return cls({}, 0, 0, time.perf_counter())
        return cls(dict(partial["sums"]), int(partial["correct"]), int(partial["seen"]),
                   time.perf_counter() - float(partial["seconds"]))


def _summary(record: dict[str, Any], val_metric: str) -> str:
    """The epoch's numbers on the run's progress line."""
    return (f"loss {record['train_loss']:.4f}" + (f"  acc {record['train_acc']:.3f}" if "train_acc" in record else "")
            + (f"  {val_metric} {record[val_metric]:.3f}" if val_metric in record else ""))


class Engine:
    """Train a model with a sum of loss terms; checkpoint, validate, early-stop and log every epoch.

    Args:
        model: returns ``(features, logits)`` (a :class:`~transferkit.models.heads.TransferModel`).
        config: optimiser, schedule, precision and stopping settings.
        param_groups: optimiser groups (a fine-tuning strategy decides them); default: all trainable.
        loss_terms: default: the source cross-entropy alone.
        run: where checkpoints and ``metrics.jsonl`` go; None trains without writing anything.
        phase: a name for this stage (``train``, ``lp``, ``ft``); checkpoints live in ``checkpoints/<phase>``.
        on_epoch: called with each epoch's record (main process only): experiment trackers hook in here.

    Example:
        >>> import numpy as np
        >>> from transferkit.config import TrainConfig
        >>> from transferkit.data.domain import DomainDataset
        >>> from transferkit.models.backbones import create_backbone
        >>> from transferkit.models.heads import TransferModel
        >>> x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
        >>> ds = DomainDataset(x, (x[:, 0] > 0).astype(int), "toy", ["neg", "pos"], "vector")
        >>> model = TransferModel(create_backbone("mlp", in_features=4), ds.classes)
        >>> result = Engine(model, TrainConfig(epochs=2), progress=False).fit(ds)
        >>> result.epochs_run
        2
    """

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        *,
        param_groups: list[dict[str, Any]] | None = None,
        loss_terms: list[LossTerm] | None = None,
        run: RunDir | None = None,
        phase: str = "train",
        seed: int = 0,
        batch_size: int = 64,
        eval_batch_size: int = 256,
        num_workers: int = 0,
        cache_mb: int = 1024,
        progress: bool = True,
        on_epoch: Callable[[dict[str, Any]], None] | None = None,
        source_weights: list[float] | None = None,
    ) -> None:
        self.model = model
        self.source_weights = source_weights
        # the model's task heads (transferkit.tasks): what the step computes besides the primary head's outputs
        self.tasks = list(getattr(model, "tasks", None) or [])
        self.primary_kind = getattr(model, "primary_kind", "classification")
        # the primary head predicts the dataset's own labels (item["y"]), not another per-item field
        self.primary_reads_labels = not self.tasks or self.tasks[0].field == "label"

        # only models with several heads or another kind of head need every head's outputs and targets each step
        self.needs_heads = bool(self.tasks) and not is_default(self.tasks)
        self._channels_last = False  # set by fit (train.memory_format)
        self._sync_every = 1  # set by fit (train.sync_every_steps)
        self._source_weights: torch.Tensor | None = None  # source_weights on the device (set by fit)
        self._train_model: Callable[..., Any] | None = None  # set by fit: the model, or its compiled view
        self.on_epoch = on_epoch
        self.cfg = config
        self.loss_terms = loss_terms if loss_terms is not None else [source_cross_entropy(config.label_smoothing)]
        names = [t.name for t in self.loss_terms]
        if len(set(names)) != len(names):
            raise ValueError(f"loss term names must be unique, got {names}")
        self.extra = nn.ModuleDict({t.name: t.module for t in self.loss_terms if t.module is not None})
        self.param_groups = param_groups
        self.run = run
        self.phase = phase
        self.seed = seed
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.cache_bytes = cache_mb * 2**20
        self.progress = progress
        self.accelerator = get_accelerator(config.device, config.mixed_precision, config.grad_accum_steps, model)
        self._best_in_memory: dict[str, torch.Tensor] | None = None

    # -- public ---------------------------------------------------------------------------------
    def fit(
        self,
        train: DomainDataset,
        val: DomainDataset | None = None,
        target: DomainDataset | None = None,
        *,
        resume: bool = False,
        labelled_target: DomainDataset | None = None,
        steps: int | None = None,
    ) -> FitResult:
        """Train on ``train`` (labelled source), with unlabelled ``target`` batches for adaptation terms and, for joint
        or semi-supervised training, batches of ``labelled_target`` (a few labelled target items, cycled).

        ``steps`` (micro-batch steps) overrides the configured length: a guard's twin trains exactly as many steps as
        its adapted run did (:mod:`transferkit.train.budget`)."""
        if not train.is_labelled and (not self.tasks or any(t.field == "label" for t in self.tasks)):
            raise ValueError(f"the training set {train.domain!r} must be labelled")
        if not train.is_labelled and any(t.name == "source_ce" for t in self.loss_terms):
            raise ValueError(f"the training set {train.domain!r} has no labels for the source cross-entropy")
        if labelled_target is not None and not labelled_target.is_labelled:
            raise ValueError(f"the labelled target set {labelled_target.domain!r} has no labels")
        f = self._prepare(train, val, target, labelled_target, steps)
        start_epoch, partial = self._resume(f) if resume and self.run is not None else (0, None)
        acc = self.accelerator
        with make_progress(self.progress and acc.is_local_main_process) as bar:
            # One line per fit (epochs, last epoch's numbers) plus a transient bar over the current epoch's steps.
            run_task = bar.add_task(
                f"{self.phase} (seed {self.seed})", total=f.budget.epochs, completed=start_epoch, stats=""
            )
            for epoch in range(start_epoch, f.budget.epochs):
                record = self._epoch(f, epoch, partial, bar)
                partial = None
                bar.update(run_task, advance=1, stats=_summary(record, f.val_metric))
                self._end_epoch(f, record)
                if f.stopper.should_stop:
                    break
        return self._finish(f)

    # -- the parts of a fit ------------------------------------------------------------------------
    def _prepare(self, train: DomainDataset, val: DomainDataset | None, target: DomainDataset | None,
                 labelled_target: DomainDataset | None, steps: int | None) -> _Fit:
        """Optimiser, loaders, Accelerate's wrappers, the step budget and the LR schedule of one fit."""
        acc = self.accelerator
        if self.run is not None:
            self.run.path.mkdir(parents=True, exist_ok=True)
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
        seed_everything(self.seed)
        groups = self._param_groups()
        optimizer = self._optimizer(groups)
        loaders = self._loaders(train, val, target, labelled_target)

        # The accelerator is shared by every fit of this process and keeps what it prepared: drop what an earlier
        # fit left (one that crashed included), or every model and dataset of a benchmark or sweep stays in RAM.
        if getattr(acc, "_models", None):  # only after a fit that crashed: free_memory's gc.collect costs 0.3 s
            acc.free_memory()
        # The loss modules are called inside the loss terms, never through a DDP wrapper: they are moved, not
        # prepared; with several processes they start equal and their gradients are averaged by hand.
        raw_optimizer = optimizer
        if self.cfg.sync_bn and acc.num_processes > 1:
            if acc.device.type == "cpu":
                raise ConfigError("train.sync_bn needs GPUs: torch's SyncBatchNorm does not run on CPU processes")
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)  # same parameters, same keys
        self._channels_last = channels_last(self.cfg.memory_format, self.model, acc.device)
        # reading a number back is free on a CPU; on a GPU it makes the host wait until the device has caught up
        self._sync_every = self.cfg.sync_every_steps or (1 if acc.device.type == "cpu" else 50)
        self._source_weights = (None if self.source_weights is None
                                else torch.as_tensor(self.source_weights, device=acc.device))  # not copied per step
        if self._channels_last:
            self.model.to(memory_format=torch.channels_last)
        model, optimizer = acc.prepare(self.model, optimizer)
        # the training steps call a compiled view of the model (same parameters and buffers); validation, the
        # checkpoints and the caller keep the plain module
        self._train_model = model if self.cfg.compile == "off" else compiled(model, self.cfg.compile)
        extra = self.extra.to(acc.device)
        broadcast_module(extra, acc.num_processes)
        # only torch's DataLoaders go through Accelerate (ResidentBatches are on the device already)
        plain = [x for x in loaders if isinstance(x, torch.utils.data.DataLoader)]
        prepared = acc.prepare(*plain) if plain else []
        prepared = list(prepared) if isinstance(prepared, (list, tuple)) else [prepared]
        train_loader, target_loader, val_loader, labelled_loader = (
            prepared.pop(0) if isinstance(x, torch.utils.data.DataLoader) else x for x in loaders
        )
        # after prepare: under `accelerate launch` each process takes 1/N of the batches, and the schedules count
        # the steps each process makes
        run_batches = max(len(train_loader), len(target_loader) if target_loader is not None else 0)
        budget = plan_budget(
            epochs=self.cfg.epochs, steps=self.cfg.steps, source_batches=len(train_loader), run_batches=run_batches,
            grad_accum_steps=self.cfg.grad_accum_steps,
            trainable_parameters=sum(p.numel() for g in groups for p in g["params"]),
        )
        if steps is not None:  # a guard's twin: as many steps as the adapted run
            epoch_len = max(run_batches, math.ceil(steps / MAX_EPOCHS)) if self.cfg.epochs is None else run_batches
            budget = Budget(steps, epoch_len, math.ceil(steps / epoch_len), "the length of the adapted run")
        accum = self.cfg.grad_accum_steps
        total_steps = sum(math.ceil(budget.epoch_steps(e) / accum) for e in range(budget.epochs))  # optimiser steps
        warmup = round(self.cfg.warmup_epochs * math.ceil(budget.epoch_len / accum))
        scheduler = torch.optim.lr_scheduler.LambdaLR(raw_optimizer, lr_multiplier(self.cfg.scheduler, total_steps,
                                                                                   warmup))
        return _Fit(
            model=model, extra=extra, optimizer=optimizer, scheduler=scheduler,
            train=train_loader, target=target_loader, val=val_loader, labelled=labelled_loader,
            paired=PairedLoader(train_loader, target_loader, labelled_loader, length=budget.epoch_len),
            budget=budget, stopper=EarlyStopping(self.cfg.early_stopping_patience),
            val_metric={"regression": "val_mae", "multilabel": "val_micro_f1"}.get(self.primary_kind, "val_acc"),
        )

    def _param_groups(self) -> list[dict[str, Any]]:
        groups = self.param_groups or [{"params": [p for p in self.model.parameters() if p.requires_grad]}]
        groups = [dict(g) for g in groups]
        for g in groups:
            g.setdefault("lr", self.cfg.lr)
        if len(self.extra):
            groups.append({"params": list(self.extra.parameters()), "lr": self.cfg.lr, "name": "loss_modules"})
        groups = [g for g in groups if len(g["params"])]
        if not groups:
            raise ValueError("nothing to train: every parameter is frozen")
        for g in groups:
            g["initial_lr"] = g["lr"]
        return groups

    def _loaders(self, train: DomainDataset, val: DomainDataset | None, target: DomainDataset | None,
                 labelled_target: DomainDataset | None) -> tuple[Any, Any, Any, Any]:
        """``(train, target, val, labelled target)`` loaders; datasets without a transform of their own get the
        backbone's preprocessing, as at prediction time."""
        show_bar = self.progress and self.accelerator.is_local_main_process
        train, val, target, labelled_target = (
            with_model_transform(d, self.model, self.cache_bytes, show_bar)
            for d in (train, val, target, labelled_target)
        )
        acc = self.accelerator

        def loader(ds: DomainDataset | None, batch_size: int, shuffle: bool, seed: int) -> Any:
            if ds is None:
                return None
            # one process: preprocessed inputs are indexed where the model trains (identical batches, no copy
            # from host memory per step); several: Accelerate's loaders give each process its share
            resident = (resident_loader(ds, batch_size, shuffle=shuffle, seed=seed, device=acc.device)
                        if acc.num_processes == 1 else None)
            return resident or make_loader(ds, batch_size, shuffle=shuffle, seed=seed, num_workers=self.num_workers)

        return (
            loader(train, self.batch_size, True, self.seed),
            loader(target, self.batch_size, True, self.seed + 7919),
            loader(val, self.eval_batch_size, False, 0),
            None if labelled_target is None else loader(labelled_target, min(self.batch_size, len(labelled_target)),
                                                        True, self.seed + 15485863),
        )

    def _resume(self, f: _Fit) -> tuple[int, dict[str, Any] | None]:
        """Load the newest checkpoint into ``f``: the epoch to start at and the running sums of an epoch a mid-epoch
        checkpoint cut (None at an epoch's start)."""
        start_epoch, partial = 0, None
        state = self._ckpt.load_last(f.model, f.extra, f.optimizer, f.scheduler)
        if state is not None:
            f.global_step, start_epoch, f.history, partial = resume_point(state, f.stopper)
            if self.accelerator.is_main_process:
                self._ckpt.repair_best(f.stopper.best_epoch)
            if f.stopper.should_stop:
                start_epoch, partial = f.budget.epochs, None
        self._forget_records_from(start_epoch)
        return start_epoch, partial

    def _epoch(self, f: _Fit, epoch: int, partial: dict[str, Any] | None, bar: Any) -> dict[str, Any]:
        """Train one epoch (from a mid-epoch checkpoint's step when ``partial`` holds its sums), validate, and return
        the epoch's record (also appended to ``f.history``)."""
        acc = self.accelerator
        epoch_steps = f.budget.epoch_steps(epoch)
        first = 0 if partial is None else int(partial["step_in_epoch"])
        for loader in (f.train, f.target, f.labelled):
            if loader is not None:
                position_loader(loader, epoch, first, acc.num_processes)
        f.model.train()
        f.extra.train()
        task = bar.add_task(f"  epoch {epoch + 1}/{f.budget.epochs}", total=epoch_steps, completed=first, stats="")
        if partial is not None and not acc.is_main_process:  # the checkpoint holds every process's sums
            partial = {**partial, "sums": {}, "correct": 0, "seen": 0}
        sums = _Sums.resumed(partial)
        last_save, since_save, clock_due = time.monotonic(), 0, False
        every_steps, every_s = self.cfg.checkpoint_every_steps, self.cfg.checkpoint_every_minutes
        for i, (src, tgt, few) in enumerate(f.paired.iterate(first, epoch_steps), start=first):
            # Step every grad_accum_steps micro-batches and at the end of the epoch. Decided here, not by
            # acc.accumulate: its end-of-data check follows whichever loader started last, which is wrong while one
            # side of a source/target pair cycles.
            sync = (i + 1) % self.cfg.grad_accum_steps == 0 or i + 1 == epoch_steps
            # The host reads the step's numbers back (loss shown, divergence checked) every sync_every steps only.
            # Counted from the epoch's start, so a resumed epoch groups its sums as the uninterrupted one did.
            check = (i + 1) % self._sync_every == 0 or i + 1 == epoch_steps
            self._step(f, src, tgt, few, sync, sums, check)
            f.global_step += 1
            since_save += 1
            if check:
                acc_text = (f"  acc {sums.correct / max(sums.seen, 1):.3f}" if self.primary_kind == "classification"
                            else "")
                bar.update(task, advance=1, stats=f"loss {sums.sums['loss'] / max(sums.seen, 1):.4f}{acc_text}")
            else:
                bar.update(task, advance=1)
            # A mid-epoch checkpoint only where no gradient is half-accumulated, and never on the last step (the
            # epoch's own checkpoint follows). The clock is read where the numbers are (it is a collective decision
            # under `accelerate launch`).
            # A time that says "due" stays due until a step where the optimiser stepped.
            if check and every_s is not None and not clock_due:
                clock_due = clock_says(acc, time.monotonic() - last_save >= 60.0 * every_s)
            due = (every_steps is not None and since_save >= every_steps) or clock_due
            if due and sync and i + 1 < epoch_steps and self.run is not None:
                self._flush(sums, f.global_step / max(1, f.budget.total))
                self._checkpoint_mid_epoch(f, epoch, i + 1, sums)
                last_save, since_save, clock_due = time.monotonic(), 0, False
        sums.sums, sums.correct, sums.seen = sum_over_processes(acc, sums.sums, sums.correct, sums.seen)
        self._check_weights(f.model, f.extra, epoch)
        record = self._record(f, epoch, sums)
        f.history.append(record)
        bar.remove_task(task)
        return record

    def _step(self, f: _Fit, src: dict[str, Any], tgt: dict[str, Any] | None, few: dict[str, Any] | None,
              sync: bool, sums: _Sums, check: bool) -> None:
        """Forward, loss and backward of one micro-batch, its numbers added to ``sums`` (read back to the host when
        ``check``: before the backward pass, so that checking every step stops a non-finite loss before it reaches
        the weights); the optimiser steps when ``sync``."""
        acc = self.accelerator
        with contextlib.nullcontext() if sync else acc.no_sync(f.model):
            # over micro-batches: ceil(steps / accum) * accum overcounts them when accum does not divide the epoch,
            # and progress would stop short of 1
            progress = min(1.0, f.global_step / max(1, f.budget.total))
            model = self._train_model if self._train_model is not None else f.model
            out = self._forward(model, src, tgt, progress, few)
            total, parts = self._loss(out, progress)
            self._count(sums, out, parts, progress)
            if check:
                self._flush(sums, progress)
            acc.backward(total)  # divided by grad_accum_steps
        if sync:
            average_gradients(f.extra, acc.num_processes)
            if self.cfg.max_grad_norm is not None:
                acc.clip_grad_norm_([p for g in f.optimizer.param_groups for p in g["params"]], self.cfg.max_grad_norm)
            f.optimizer.step()
            f.scheduler.step()
            f.optimizer.zero_grad(set_to_none=True)

    def _count(self, sums: _Sums, out: StepOutputs, parts: dict[str, torch.Tensor], progress: float) -> None:
        """Add the step's loss terms (times its items), its correct predictions and the first step at which each
        term was not finite to the sums on the device: a handful of small kernels a step, whatever the number of
        terms."""
        n = int(out.source_labels.numel())  # a shape: known to the host without waiting for the device
        values = torch.stack([v.float() for v in parts.values()])
        if sums.pending_names is None:
            sums.pending_names = list(parts)
            sums.pending = values * n
            sums.pending_first_bad = torch.full(values.shape, -1, dtype=torch.int32, device=values.device)
        else:
            sums.pending = sums.pending + values * n
        assert sums.pending_first_bad is not None
        went_bad = ~torch.isfinite(values) & (sums.pending_first_bad < 0)
        sums.pending_first_bad = torch.where(went_bad, sums.pending_steps, sums.pending_first_bad)
        sums.pending_steps += 1
        if self.primary_kind == "classification":
            truth = (out.source_labels if self.primary_reads_labels or out.source_targets is None
                     else out.source_targets[self.tasks[0].name])
            right = (out.source_logits.argmax(1) == truth).sum()
            sums.pending_correct = right if sums.pending_correct is None else sums.pending_correct + right
        sums.pending_seen += n
        if sums.pending_since is None:
            sums.pending_since = progress

    def _flush(self, sums: _Sums, progress: float) -> None:
        """Read the steps' numbers back to the host in one transfer; refuse a loss that is no longer a number."""
        if sums.pending_names is None or sums.pending is None or sums.pending_first_bad is None:
            return
        names, seen, since = sums.pending_names, sums.pending_seen, sums.pending_since
        parts = [sums.pending.double(), sums.pending_first_bad.double()]
        if sums.pending_correct is not None:
            parts.append(sums.pending_correct.double().reshape(1))
        values = torch.cat(parts).tolist()
        sums.clear_pending()
        totals, first_bad = values[:len(names)], dict(zip(names, values[len(names):2 * len(names)], strict=True))
        if any(v >= 0 for v in first_bad.values()):
            when = (f"at progress {progress:.3f}" if since == progress
                    else f"between progress {since:.3f} and {progress:.3f}")
            means = dict(zip(names, (v / max(seen, 1) for v in totals), strict=True))
            # A non-finite term or weighted sum turns the weights into NaN, and with them every term a step later:
            # blame what went first (a term before the sum, which it makes non-finite in the same step).
            bad_terms = sorted((first_bad[k], i) for i, k in enumerate(names) if k != "loss" and first_bad[k] >= 0)
            if bad_terms and not 0 <= first_bad["loss"] < bad_terms[0][0]:
                worst = names[bad_terms[0][1]]
                raise TrainingError(f"loss term {worst!r} became {means[worst]} {when}; {_DIVERGED_HINT}")
            terms = ", ".join(f"{k} {v:.3g}" for k, v in means.items() if k != "loss")
            raise TrainingError(f"the weighted loss became {means['loss']} {when} (terms: {terms}); "
                                f"{_DIVERGED_HINT}")
        for name, v in zip(names, totals, strict=True):
            sums.sums[name] = sums.sums.get(name, 0.0) + v
        if len(values) > 2 * len(names):  # the correct predictions came last
            sums.correct += int(values[-1])
        sums.seen += seen

    def _checkpoint_mid_epoch(self, f: _Fit, epoch: int, step_in_epoch: int, sums: _Sums) -> None:
        acc = self.accelerator
        self._check_weights(f.model, f.extra, epoch)
        # the whole epoch's sums so far: the resumed main process starts from them, the others at 0
        g_sums, g_correct, g_seen = sum_over_processes(acc, sums.sums, sums.correct, sums.seen)
        running = {"step_in_epoch": step_in_epoch, "sums": g_sums, "correct": g_correct, "seen": g_seen,
                   "seconds": time.perf_counter() - sums.t0}
        if acc.is_main_process:
            self._ckpt.save_step(f.model, f.extra, f.optimizer, f.scheduler, epoch, f.global_step, f.stopper,
                                 f.history, running)

    def _record(self, f: _Fit, epoch: int, sums: _Sums) -> dict[str, Any]:
        """The epoch's line of ``metrics.jsonl``: training means, validation, and whether it is the best so far."""
        seen = max(sums.seen, 1)
        record: dict[str, Any] = {"phase": self.phase, "seed": self.seed, "epoch": epoch, "step": f.global_step,
                                  "lr": f.optimizer.param_groups[0]["lr"]}
        if self.primary_kind == "classification":
            record["train_acc"] = sums.correct / seen
        record.update({("train_loss" if k == "loss" else f"loss/{k}"): v / seen for k, v in sums.sums.items()})
        if f.val is not None:
            val_loss, val_score = self._validate(f.model, f.val)
            record.update({"val_loss": val_loss, f.val_metric: val_score})
            # the stopper keeps the highest: an error (MAE) counts negated
            improved = f.stopper.update(-val_score if f.val_metric == "val_mae" else val_score, epoch)
        else:
            improved = f.stopper.update(float(epoch), epoch)  # no validation split: keep the last epoch
        record["best"] = improved
        record["epoch_time_s"] = round(time.perf_counter() - sums.t0, 4)
        return record

    def _end_epoch(self, f: _Fit, record: dict[str, Any]) -> None:
        """Log the epoch and checkpoint it (or keep the best weights in memory without a run folder)."""
        acc = self.accelerator
        if self.run is not None and acc.is_main_process:
            append_jsonl(self.run.metrics, record)
            self._ckpt.save_epoch(f.model, f.extra, f.optimizer, f.scheduler, record["epoch"], f.global_step,
                                  f.stopper, f.history, record["best"])
        elif self.run is None and record["best"]:
            weights = weights_of(acc, f.model, f.extra)
            self._best_in_memory = {k: v.detach().clone() for k, v in weights.items()}
        if self.on_epoch is not None and acc.is_main_process:
            self.on_epoch(record)  # experiment trackers (TensorBoard, MLflow, CSV), once the epoch is safe

    def _finish(self, f: _Fit) -> FitResult:
        """Restore the best epoch's weights into the plain model and say what was trained."""
        acc = self.accelerator
        acc.wait_for_everyone()  # the main process wrote the checkpoints every process now reads
        self._restore_best(f.model, f.extra, f.stopper)
        # Drop Accelerate's autocast wrapper: the caller scores and saves the plain fp32 model.
        acc.unwrap_model(f.model, keep_fp32_wrapper=False)
        if self._channels_last:
            self.model.to(memory_format=torch.contiguous_format)
        acc.free_memory()
        self._train_model = self._source_weights = None
        best = f.stopper.best if f.val is not None and f.stopper.best_epoch >= 0 else None
        if best is not None and f.val_metric == "val_mae":
            best = -best
        return FitResult(
            best_epoch=f.stopper.best_epoch,
            best_val_acc=best if f.val_metric == "val_acc" else None,
            epochs_run=len(f.history),
            stopped_early=f.stopper.should_stop and len(f.history) < f.budget.epochs,
            history=f.history,
            val_metric=f.val_metric,
            best_val=best,
            steps=f.global_step,
            budget=f.budget.describe(),
            precision={"no": "fp32"}.get(str(self.accelerator.mixed_precision), str(self.accelerator.mixed_precision)),
        )

    # -- one step -------------------------------------------------------------------------------
    def _forward(
        self, model: Callable[..., Any], src: dict[str, Any], tgt: dict[str, Any] | None, progress: float,
        few: dict[str, Any] | None = None,
    ) -> StepOutputs:
        """One forward pass over source, target and labelled-target items together (BatchNorm sees them all)."""
        parts = [x for x in (src["x"], None if tgt is None else tgt["x"], None if few is None else few["x"])
                 if x is not None]
        x = torch.cat(parts, 0) if len(parts) > 1 else parts[0]
        if self._channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        f, logits = model(x)
        n = src["x"].shape[0]
        m = n + (tgt["x"].shape[0] if tgt is not None else 0)
        out = StepOutputs(f[:n], logits[:n], src["y"], None, None, progress)
        if self.needs_heads:
            with self.accelerator.autocast():  # the extra heads run outside the wrapped forward: same precision
                out.source_heads = self.model.head_outputs(f[:n], logits[:n])  # the module inside any wrapper
            out.source_targets = batch_targets(src, self.tasks)
        domains = src.get("t", {}).get("source_index")
        if domains is not None:
            out.source_domains = domains.long()
            if self._source_weights is not None:
                out.source_weights = self._source_weights.to(f.dtype)[domains]
        if tgt is not None:
            out.target_features, out.target_logits, out.target_inputs, out.model = f[n:m], logits[n:m], tgt["x"], model
        if few is not None:
            out.labelled_features, out.labelled_logits, out.labelled_labels = f[m:], logits[m:], few["y"]
        return out

    def _loss(self, out: StepOutputs, progress: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The weighted sum of the terms and each term's value, left on the device (see :meth:`_flush`)."""
        total = torch.zeros((), device=out.source_logits.device)
        parts: dict[str, torch.Tensor] = {}
        whole: StepOutputs | None = None
        for term in self.loss_terms:
            w = term.weight_at(progress)
            if term.global_batch and self.accelerator.num_processes > 1:
                whole = whole or gather_outputs(out)
                value = term.fn(whole)
            else:
                value = term.fn(out)
            total = total + w * value
            parts[term.name] = value.detach().reshape(())  # a one-item tensor of any shape: one number
        parts["loss"] = total.detach().reshape(())
        return total, parts

    def _check_weights(self, model: nn.Module, extra: nn.Module, epoch: int) -> None:
        """Refuse to checkpoint, validate or save weights that are no longer numbers: a step can turn every weight
        into NaN with a finite loss (an enormous weight decay or learning rate), and a checkpoint of NaN would
        replace the last good one."""
        named = [(name, p) for module in (model, extra) for name, p in self.accelerator.unwrap_model(module)
                 .named_parameters()]
        if not named or bool(torch.stack([torch.isfinite(p.detach()).all() for _, p in named]).all()):
            return  # one read-back for every parameter
        first = next(name for name, p in named if not bool(torch.isfinite(p.detach()).all()))
        raise TrainingError(
            f"training diverged in epoch {epoch + 1}: the weights became NaN or infinite (first: {first}); the last "
            f"complete checkpoint is kept. {_DIVERGED_HINT}"
        )

    @torch.inference_mode()
    def _validate(self, model: nn.Module, loader: Any) -> tuple[float, float]:
        """``(loss, score)`` of the primary head on the validation split: accuracy, MAE (regression, in the target's
        unit) or micro-F1 (multi-label)."""
        model.eval()
        if self.primary_kind != "classification" or not self.primary_reads_labels:
            return self._validate_task(model, loader)
        loss_sum, correct, n = 0.0, 0, 0
        for batch in loader:
            _, logits = model(batch["x"])
            logits, y = self._gathered(logits, batch["y"])
            loss_sum += float(F.cross_entropy(logits.float(), y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            n += int(y.numel())
        return loss_sum / max(n, 1), correct / max(n, 1)

    def _gathered(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Every process's items of a validation batch. With one process, nothing to gather, and Accelerate's
        ``gather_for_metrics`` must not be asked: it trims a batch to the end-of-data remainder of whichever of its
        loaders is active, which is a training loader left just before its end when validation is resident."""
        if self.accelerator.num_processes == 1:
            return tensors
        return tuple(self.accelerator.gather_for_metrics(tensors))

    def _validate_task(self, model: nn.Module, loader: Any) -> tuple[float, float]:
        task = self.tasks[0]
        outs, ys = [], []
        for batch in loader:
            _, primary = model(batch["x"])
            target = batch_targets(batch, [task])[task.name]
            primary, target = self._gathered(primary, target)
            outs.append(primary.float())
            ys.append(target)
        o, y = torch.cat(outs), torch.cat(ys)
        loss = float(task_loss(task, o, y))
        if task.kind == "regression":
            return loss, float((task.decode(o) - y.float().reshape(len(y), -1)).abs().mean())
        if task.kind == "classification":  # a per-item field's classes; items of a class the head lacks left out
            known = y >= 0
            return loss, float((o.argmax(1)[known] == y[known]).float().mean()) if bool(known.any()) else 0.0
        return loss, float(multilabel_metrics(o, y, task.classes)["micro_f1"])

    def _optimizer(self, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
        # torch's fused kernels: the same update as the default per-tensor loop, one kernel for every parameter
        # (``benchmarks/cpu_step.py``: a DANN step of LeNet 42.1 -> 37.7 ms on 2 CPU cores); where a device
        # or dtype has no fused kernel, torch's default implementation
        fused = all(p.dtype.is_floating_point and p.device.type in ("cpu", "cuda") for g in groups for p in g["params"])
        kw: dict[str, Any] = {"fused": True} if fused else {}
        if self.cfg.optimizer == "sgd":
            return torch.optim.SGD(
                groups, lr=self.cfg.lr, momentum=self.cfg.momentum, weight_decay=self.cfg.weight_decay,
                nesterov=self.cfg.momentum > 0, **kw,
            )
        return torch.optim.AdamW(groups, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay, **kw)

    # -- checkpoints ----------------------------------------------------------------------------
    @property
    def _ckpt(self) -> CheckpointStore:
        """This phase's checkpoints (a stateless view of ``<run>/checkpoints/<phase>``)."""
        assert self.run is not None, "checkpoints need a run folder"
        return CheckpointStore(self.run.checkpoints / self.phase, self.phase, self.accelerator,
                               self.cfg.keep_checkpoints)

    def _forget_records_from(self, start_epoch: int) -> None:
        """Drop this phase's metrics of epochs that will be redone (logged, but killed before the checkpoint)."""
        assert self.run is not None
        records = read_jsonl(self.run.metrics)
        keep = [
            r for r in records
            if not (r.get("phase") == self.phase and r.get("seed") == self.seed and r.get("epoch", -1) >= start_epoch)
        ]
        if len(keep) != len(records) and self.accelerator.is_main_process:
            atomic_write_text(self.run.metrics, "".join(json.dumps(r) + "\n" for r in keep))

    def _restore_best(self, model: nn.Module, extra: nn.Module, stopper: EarlyStopping) -> None:
        if self.run is None:
            if self._best_in_memory is not None:
                apply_weights(self.accelerator, model, extra, self._best_in_memory, "the best epoch")
            return
        best = self._ckpt.best_dir()
        if best is not None:
            self._ckpt.load_weights(model, extra, best / "model.safetensors")



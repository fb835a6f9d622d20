"""The training engine: it learns, logs each loss term, feeds target batches and schedules to extra terms,
trains their modules, stops early, restores the best epoch, and resumes bit-identically on CPU."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from transferkit.config import TrainConfig
from transferkit.data.domain import DomainDataset
from transferkit.errors import TrainingError
from transferkit.models.backbones import create_backbone
from transferkit.models.heads import TransferModel
from transferkit.runs import RunDir, read_jsonl
from transferkit.train.checkpoints import CheckpointStore
from transferkit.train.engine import Engine, LossTerm, StepOutputs, source_cross_entropy

CLASSES = ["neg", "pos"]


def _toy(n: int, seed: int, d: int = 4) -> DomainDataset:
    """Linearly separable with a margin: the class is the sign of the first coordinate."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    x[:, 0] = np.where(rng.random(n) < 0.5, -1.0, 1.0) * (0.5 + rng.random(n))
    return DomainDataset(x, (x[:, 0] > 0).astype(np.int64), f"toy{seed}", CLASSES, "vector")


def _model(seed: int = 0, d: int = 4, dropout: float = 0.1) -> TransferModel:
    torch.manual_seed(seed)
    return TransferModel(create_backbone("mlp", in_features=d, hidden=8, depth=1, dropout=dropout), CLASSES)


def _train_cfg(**kw: Any) -> TrainConfig:
    """Two epochs at a constant learning rate on the CPU, ``kw`` overriding."""
    base: dict[str, Any] = {"epochs": 2, "lr": 0.01, "device": "cpu", "scheduler": "constant"}
    return TrainConfig(**{**base, **kw})


def _engine(model: nn.Module, cfg: TrainConfig, **kw: Any) -> Engine:
    kw.setdefault("batch_size", 8)
    return Engine(model, cfg, progress=False, **kw)


def _unlearnable_val() -> DomainDataset:
    """Every input twice, once per label: accuracy is exactly 0.5 whatever the model does."""
    x = np.random.default_rng(9).normal(size=(6, 4)).astype(np.float32)
    return DomainDataset(np.concatenate([x, x]), np.array([0] * 6 + [1] * 6), "flat", CLASSES, "vector")


def _model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _checkpoint_model(path: Path) -> dict[str, torch.Tensor]:
    return {k[len("model."):]: v for k, v in load_file(str(path)).items() if k.startswith("model.")}


def _equal_states(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- learning and logging ----------------------------------------------------------------------
def test_engine_learns_a_separable_problem(tmp_path: Path) -> None:
    train, val = _toy(160, seed=0), _toy(60, seed=1)
    model = _model()
    result = _engine(model, _train_cfg(epochs=8, lr=0.02), run=RunDir(tmp_path), batch_size=16).fit(train, val)
    assert result.epochs_run == 8 and not result.stopped_early
    assert result.best_val_acc is not None and result.best_val_acc > 0.9
    model.eval()
    with torch.no_grad():
        _, logits = model(torch.from_numpy(val.inputs))
    acc = (logits.argmax(1).numpy() == val.labels).mean()
    assert acc > 0.9
    assert acc == pytest.approx(result.best_val_acc)  # the model left in memory is the selected one


def test_metrics_jsonl_has_one_record_per_epoch_with_each_term(tmp_path: Path) -> None:
    const = LossTerm("const", lambda out: out.source_logits.new_tensor(1.0), weight=0.25)
    run = RunDir(tmp_path)
    engine = _engine(_model(), _train_cfg(epochs=3), run=run, loss_terms=[source_cross_entropy(), const])
    result = engine.fit(_toy(32, seed=0), _toy(16, seed=1))
    records = read_jsonl(run.metrics)
    assert [r["epoch"] for r in records] == [0, 1, 2]
    assert records == result.history[: len(records)] and len(result.history) == 3
    for r in records:
        assert r["phase"] == "train" and r["seed"] == 0 and r["step"] == 4 * (r["epoch"] + 1)
        assert {"train_loss", "train_acc", "loss/source_ce", "loss/const", "val_loss", "val_acc", "lr"} <= set(r)
        assert r["loss/const"] == pytest.approx(1.0)
        assert r["train_loss"] == pytest.approx(r["loss/source_ce"] + 0.25 * 1.0, abs=1e-5)  # the weighted sum
        assert r["lr"] == pytest.approx(0.01)
        assert 0.0 <= r["train_acc"] <= 1.0 and 0.0 <= r["val_acc"] <= 1.0


def test_target_batches_and_weight_schedule_reach_an_extra_term() -> None:
    sizes: list[tuple[int, int, int]] = []
    progresses: list[float] = []

    def fn(out: StepOutputs) -> torch.Tensor:
        assert out.target_features is not None and out.target_logits is not None
        sizes.append((out.source_features.shape[0], out.target_features.shape[0], out.target_logits.shape[0]))
        assert out.target_features.shape[1] == out.source_features.shape[1] == 8
        return out.target_features.new_tensor(1.0)

    def weight(p: float) -> float:
        progresses.append(p)
        return p

    term = LossTerm("align", fn, weight=weight)
    target = _toy(20, seed=5).unlabelled()
    engine = _engine(_model(), _train_cfg(epochs=2), loss_terms=[source_cross_entropy(), term])
    result = engine.fit(_toy(32, seed=0), target=target)
    # 32 source items / 8 = 4 steps; 20 target items give batches 8, 8, 4 and cycle
    assert sizes == [(8, 8, 8), (8, 8, 8), (8, 4, 4), (8, 8, 8)] * 2
    assert progresses == pytest.approx([i / 8 for i in range(8)])  # progress runs over all 8 steps
    for epoch, r in enumerate(result.history):
        # the term is 1 and its weight is the progress: train_loss - source_ce = mean progress of the epoch
        mean_p = np.mean([i / 8 for i in range(4 * epoch, 4 * epoch + 4)])
        assert r["train_loss"] - r["loss/source_ce"] == pytest.approx(mean_p, abs=1e-5)
        assert r["loss/align"] == pytest.approx(1.0)


def test_loss_term_module_is_trained_and_checkpointed(tmp_path: Path) -> None:
    torch.manual_seed(3)
    disc = nn.Linear(8, 1)
    before = {k: v.clone() for k, v in disc.state_dict().items()}
    term = LossTerm("disc", lambda out: (disc(out.source_features) - 1.0).pow(2).mean(), weight=1.0, module=disc)
    run = RunDir(tmp_path)
    _engine(_model(), _train_cfg(epochs=2), run=run, loss_terms=[source_cross_entropy(), term]).fit(_toy(32, seed=0))
    assert not torch.equal(disc.weight, before["weight"]) and not torch.equal(disc.bias, before["bias"])
    for ckpt in ("best", "epoch-0001"):
        saved = load_file(str(run.checkpoints / "train" / ckpt / "model.safetensors"))
        assert torch.equal(saved["extra.disc.weight"], disc.weight.detach())
        assert torch.equal(saved["extra.disc.bias"], disc.bias.detach())


# -- early stopping and the best checkpoint ----------------------------------------------------
def test_early_stopping_and_best_checkpoint_restored(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    model = _model()
    cfg = _train_cfg(epochs=10, early_stopping_patience=1, lr=0.05)
    result = _engine(model, cfg, run=run).fit(_toy(32, seed=0), _unlearnable_val())
    assert result.epochs_run == 2 and result.stopped_early
    assert result.best_epoch == 0 and result.best_val_acc == 0.5
    assert [r["best"] for r in read_jsonl(run.metrics)] == [True, False]

    ckpts = run.checkpoints / "train"
    assert sorted(p.name for p in ckpts.iterdir()) == ["best", "epoch-0001"]  # keep_checkpoints=1
    meta = json.loads((ckpts / "best" / "meta.json").read_text())
    assert meta == {"epoch": 0, "global_step": 4, "step_in_epoch": 0, "phase": "train", "complete": True}
    best = _checkpoint_model(ckpts / "best" / "model.safetensors")
    last = _checkpoint_model(ckpts / "epoch-0001" / "model.safetensors")
    assert not _equal_states(best, last)  # epoch 1 did change the weights ...
    assert _equal_states(_model_state(model), best)  # ... and the end restored epoch 0


def test_best_epoch_is_restored_without_a_run_dir(tmp_path: Path) -> None:
    cfg = _train_cfg(epochs=10, early_stopping_patience=1, lr=0.05)
    in_memory = _model()
    result = _engine(in_memory, cfg).fit(_toy(32, seed=0), _unlearnable_val())
    assert result.epochs_run == 2 and result.best_epoch == 0
    on_disk = RunDir(tmp_path)
    _engine(_model(), cfg, run=on_disk).fit(_toy(32, seed=0), _unlearnable_val())
    best = _checkpoint_model(on_disk.checkpoints / "train" / "best" / "model.safetensors")
    assert _equal_states(_model_state(in_memory), best)


def test_keep_checkpoints(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    _engine(_model(), _train_cfg(epochs=4, keep_checkpoints=2), run=run, phase="ft").fit(_toy(16, seed=0))
    assert sorted(p.name for p in (run.checkpoints / "ft").iterdir()) == ["best", "epoch-0002", "epoch-0003"]


# -- checkpoints and resume --------------------------------------------------------------------
def test_state_pt_loads_with_weights_only(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    _engine(_model(), _train_cfg(epochs=2), run=run).fit(_toy(32, seed=0), _toy(16, seed=1))
    state = torch.load(run.checkpoints / "train" / "epoch-0001" / "state.pt", weights_only=True)
    assert state["epoch"] == 1 and state["global_step"] == 8
    assert {"optimizer", "scheduler", "rng", "stopper", "history_json"} <= set(state)
    assert [r["epoch"] for r in json.loads(state["history_json"])] == [0, 1]


def test_resume_is_bit_identical(tmp_path: Path) -> None:
    train, val, target = _toy(40, seed=0), _toy(16, seed=1), _toy(24, seed=2).unlabelled()

    def terms() -> tuple[list[LossTerm], nn.Module]:
        torch.manual_seed(7)
        disc = nn.Linear(8, 1)
        # a constant weight: progress (like the LR schedule) depends on the total epochs, which differ below
        term = LossTerm("disc", lambda out: disc(out.target_features).pow(2).mean(), weight=0.5, module=disc)
        return [source_cross_entropy(), term], disc

    straight = _model()  # dropout on: the RNG state must be restored too
    straight_terms, straight_disc = terms()
    _engine(straight, _train_cfg(epochs=4), run=RunDir(tmp_path / "a"), loss_terms=straight_terms, seed=3).fit(
        train, val, target
    )

    run = RunDir(tmp_path / "b")
    first_terms, _ = terms()
    _engine(_model(), _train_cfg(epochs=2), run=run, loss_terms=first_terms, seed=3).fit(train, val, target)
    resumed = _model(seed=99)  # a different init: the checkpoint must overwrite it
    resumed_terms, resumed_disc = terms()
    result = _engine(resumed, _train_cfg(epochs=4), run=run, loss_terms=resumed_terms, seed=3).fit(
        train, val, target, resume=True
    )

    assert _equal_states(_model_state(resumed), _model_state(straight))
    assert torch.equal(resumed_disc.weight, straight_disc.weight)
    assert [r["epoch"] for r in read_jsonl(run.metrics)] == [0, 1, 2, 3]
    assert [r["epoch"] for r in result.history] == [0, 1, 2, 3]
    straight_log = read_jsonl(RunDir(tmp_path / "a").metrics)
    for a, b in zip(straight_log[2:], read_jsonl(run.metrics)[2:], strict=True):
        assert a["train_loss"] == b["train_loss"] and a["val_acc"] == b["val_acc"] and a["step"] == b["step"]


def test_resume_after_a_crash_while_checkpointing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # killed after epoch 1's metrics were logged but before its checkpoint was complete
    train, val = _toy(32, seed=0), _toy(16, seed=1)
    straight = _model()
    _engine(straight, _train_cfg(epochs=3), run=RunDir(tmp_path / "a")).fit(train, val)

    run = RunDir(tmp_path / "b")
    real_save = CheckpointStore.save_epoch

    def crashing_save(self: CheckpointStore, *args: Any, **kwargs: Any) -> None:
        if args[4] == 1:  # the epoch argument
            raise KeyboardInterrupt
        real_save(self, *args, **kwargs)

    monkeypatch.setattr(CheckpointStore, "save_epoch", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        _engine(_model(), _train_cfg(epochs=3), run=run).fit(train, val)
    assert [r["epoch"] for r in read_jsonl(run.metrics)] == [0, 1]
    monkeypatch.setattr(CheckpointStore, "save_epoch", real_save)

    resumed = _model(seed=42)
    result = _engine(resumed, _train_cfg(epochs=3), run=run).fit(train, val, resume=True)
    assert [r["epoch"] for r in read_jsonl(run.metrics)] == [0, 1, 2]  # epoch 1 is logged once, as redone
    assert [r["epoch"] for r in result.history] == [0, 1, 2]
    assert _equal_states(_model_state(resumed), _model_state(straight))


class _Crash(Exception):
    """Stands for a kill: raised from inside a step, after some mid-epoch checkpoints were written."""


@pytest.mark.parametrize(
    ("every", "accum"),
    [({"checkpoint_every_steps": 2}, 1), ({"checkpoint_every_steps": 2}, 2), ({"checkpoint_every_minutes": 1e-9}, 1),
     ({"checkpoint_every_steps": 2, "sync_every_steps": 4}, 1)],
    ids=["every-2-steps", "grad-accum", "every-few-minutes", "numbers-read-every-4-steps"],
)
def test_mid_epoch_resume_is_bit_identical(tmp_path: Path, every: dict[str, Any], accum: int) -> None:
    # 44 source items (6 steps of 8) and 20 target items (3 steps, cycled twice per epoch): the crash lands in
    # epoch 1 with the source loader part-way through its pass and the target loader in its second pass.
    train, val, target = _toy(44, seed=0), _toy(16, seed=1), _toy(20, seed=2).unlabelled()
    cfg = _train_cfg(epochs=3, grad_accum_steps=accum, scheduler="cosine", warmup_epochs=0.5, **every)

    def terms(log: list[float], crash_at: int | None = None) -> tuple[list[LossTerm], nn.Module]:
        torch.manual_seed(7)
        disc = nn.Linear(8, 1)

        def fn(out: StepOutputs) -> torch.Tensor:
            if crash_at is not None and len(log) == crash_at:
                raise _Crash
            log.append(out.progress)
            return disc(out.target_features).pow(2).mean() + out.target_features.std()

        return [source_cross_entropy(), LossTerm("disc", fn, weight=lambda p: 0.1 + p, module=disc)], disc

    straight, straight_seen = _model(), []  # dropout on: the RNG state must resume exactly too
    straight_terms, straight_disc = terms(straight_seen)
    _engine(straight, cfg, run=RunDir(tmp_path / "a"), loss_terms=straight_terms, seed=3).fit(train, val, target)

    run, crashed_seen = RunDir(tmp_path / "b"), []
    with pytest.raises(_Crash):
        _engine(_model(), cfg, run=run, loss_terms=terms(crashed_seen, crash_at=10)[0], seed=3).fit(
            train, val, target
        )
    (ckpt,) = (run.checkpoints / "train").glob("step-*")
    meta = json.loads((ckpt / "meta.json").read_text())
    assert meta["epoch"] == 1 and 0 < meta["step_in_epoch"] < 6
    assert [r["epoch"] for r in read_jsonl(run.metrics)] == [0]

    resumed, resumed_seen = _model(seed=99), []  # a different init: the checkpoint must overwrite it
    resumed_terms, resumed_disc = terms(resumed_seen)
    result = _engine(resumed, cfg, run=run, loss_terms=resumed_terms, seed=3).fit(train, val, target, resume=True)

    assert resumed_seen == straight_seen[-len(resumed_seen):]  # the λ schedule picks up at the exact step
    assert len(resumed_seen) == 18 - 6 - meta["step_in_epoch"]
    assert _equal_states(_model_state(resumed), _model_state(straight))
    assert torch.equal(resumed_disc.weight, straight_disc.weight)
    untimed = [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in read_jsonl(run.metrics)]
    assert untimed == [{k: v for k, v in r.items() if k != "epoch_time_s"}
                       for r in read_jsonl(RunDir(tmp_path / "a").metrics)]
    assert [r["epoch"] for r in result.history] == [0, 1, 2]
    assert not list((run.checkpoints / "train").glob("step-*"))  # the epoch's own checkpoint replaced it


def test_a_torn_mid_epoch_checkpoint_is_ignored(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    _engine(_model(), _train_cfg(epochs=1), run=run).fit(_toy(32, seed=0))
    torn = run.checkpoints / "train" / "step-000000099"
    torn.mkdir()
    (torn / "model.safetensors").write_bytes(b"half a file")  # killed while writing: no meta.json
    again = _model(seed=5)
    result = _engine(again, _train_cfg(epochs=1), run=run).fit(_toy(32, seed=0), resume=True)
    assert result.epochs_run == 1 and len(read_jsonl(run.metrics)) == 1


def test_resume_of_an_early_stopped_run(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    cfg = _train_cfg(epochs=10, early_stopping_patience=1, lr=0.05)
    first = _engine(_model(), cfg, run=run).fit(_toy(32, seed=0), _unlearnable_val())
    assert first.stopped_early and first.epochs_run == 2
    again = _model(seed=5)
    result = _engine(again, cfg, run=run).fit(_toy(32, seed=0), _unlearnable_val(), resume=True)
    assert result.stopped_early and result.epochs_run == 2 and result.best_epoch == 0
    assert len(read_jsonl(run.metrics)) == 2  # nothing trained after the stop
    best = _checkpoint_model(run.checkpoints / "train" / "best" / "model.safetensors")
    assert _equal_states(_model_state(again), best)


@pytest.mark.parametrize("with_target", [False, True])
def test_source_is_reshuffled_every_epoch(with_target: bool) -> None:
    # 8 classes x 5 items: the label sequence of an epoch identifies its shuffle
    x = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    train = DomainDataset(x, np.arange(40) % 8, "eight", [str(i) for i in range(8)], "vector")
    target = _toy(24, seed=2).unlabelled() if with_target else None
    seen: list[list[int]] = []

    def fn(out: StepOutputs) -> torch.Tensor:
        seen.append(out.source_labels.tolist())
        return out.source_logits.new_tensor(0.0)

    model = TransferModel(create_backbone("mlp", in_features=4, hidden=8, depth=1), train.classes)
    terms = [source_cross_entropy(), LossTerm("rec", fn)]
    _engine(model, _train_cfg(epochs=3), loss_terms=terms).fit(train, target=target)
    epochs = [[y for batch in seen[i : i + 5] for y in batch] for i in range(0, 15, 5)]  # 5 batches of 8 per epoch
    for order in epochs:
        assert sorted(order) == sorted((np.arange(40) % 8).tolist())  # every item once per epoch
    assert epochs[0] != epochs[1] and epochs[1] != epochs[2] and epochs[0] != epochs[2]


def test_resume_of_a_finished_run_trains_no_more(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    model = _model()
    _engine(model, _train_cfg(epochs=2), run=run).fit(_toy(32, seed=0))
    done = _model_state(model)
    again = _model(seed=5)
    result = _engine(again, _train_cfg(epochs=2), run=run).fit(_toy(32, seed=0), resume=True)
    assert result.epochs_run == 2 and len(read_jsonl(run.metrics)) == 2
    assert _equal_states(_model_state(again), done)


# -- options and errors ------------------------------------------------------------------------
def test_gradient_accumulation_steps_the_optimizer_less_often(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    progresses: list[float] = []

    def weight(p: float) -> float:
        progresses.append(p)
        return 0.0

    probe = LossTerm("probe", lambda out: out.source_logits.new_tensor(0.0), weight=weight)
    model = _model()
    before = _model_state(model)
    cfg = _train_cfg(epochs=2, grad_accum_steps=2)
    result = _engine(model, cfg, run=run, loss_terms=[source_cross_entropy(), probe]).fit(_toy(40, seed=0))
    assert result.epochs_run == 2 and not _equal_states(_model_state(model), before)
    state = torch.load(run.checkpoints / "train" / "epoch-0001" / "state.pt", weights_only=True)
    # 5 micro-batches per epoch, accumulated in pairs: steps after 2, 4 and the last one -> 3 per epoch
    adam_steps = {float(s["step"]) for s in state["optimizer"]["state"].values()}
    assert adam_steps == {6.0}
    assert state["scheduler"]["last_epoch"] == 6
    assert state["global_step"] == 10  # micro-batches
    assert progresses == pytest.approx([i / 10 for i in range(10)])  # over the 10 micro-batches, towards 1


@pytest.mark.parametrize(("n_source", "n_target"), [(40, 24), (24, 40), (16, 40)])
def test_gradient_accumulation_with_a_target_counts_steps_per_epoch(
    n_source: int, n_target: int, tmp_path: Path
) -> None:
    # whichever side cycles, an epoch has ceil(steps / accum) optimizer steps and ends with one
    run = RunDir(tmp_path)
    cfg = _train_cfg(epochs=2, grad_accum_steps=2)
    _engine(_model(), cfg, run=run).fit(_toy(n_source, seed=0), target=_toy(n_target, seed=2).unlabelled())
    steps_per_epoch = max(n_source, n_target) // 8
    expected = 2 * -(-steps_per_epoch // 2)
    state = torch.load(run.checkpoints / "train" / "epoch-0001" / "state.pt", weights_only=True)
    assert {float(s["step"]) for s in state["optimizer"]["state"].values()} == {float(expected)}
    assert state["scheduler"]["last_epoch"] == expected


def test_sgd_clipping_and_schedules_run() -> None:
    cfg = _train_cfg(epochs=2, optimizer="sgd", max_grad_norm=0.5, scheduler="cosine", warmup_epochs=0.5)
    result = _engine(_model(), cfg).fit(_toy(32, seed=0))
    assert result.epochs_run == 2
    # warm-up over 2 of 8 steps, then cosine: the logged LR after epoch 0 (4 steps) is below the peak
    assert 0.0 < result.history[0]["lr"] < 0.01 and result.history[1]["lr"] < result.history[0]["lr"]


def test_nan_loss_names_the_term() -> None:
    bad = LossTerm("exploding", lambda out: out.source_logits.sum() * float("nan"))
    with pytest.raises(TrainingError, match="loss term 'exploding' became nan"):
        _engine(_model(), _train_cfg(), loss_terms=[source_cross_entropy(), bad]).fit(_toy(16, seed=0))


def test_numbers_read_back_every_few_steps_train_the_same(tmp_path: Path) -> None:
    """Reading the step's numbers back every 5 steps instead of every step (the GPU default) changes what the host
    sees when, never what is trained; the epoch's means agree to rounding."""
    runs = {}
    for every in (1, 5):
        model = _model()
        result = _engine(model, _train_cfg(epochs=2, sync_every_steps=every)).fit(_toy(56, seed=0), _toy(16, seed=1))
        runs[every] = (_model_state(model), result.history)
    assert _equal_states(runs[1][0], runs[5][0])
    for a, b in zip(runs[1][1], runs[5][1], strict=True):
        assert a["train_acc"] == b["train_acc"] and a["val_acc"] == b["val_acc"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)


def test_nan_loss_is_caught_at_the_next_read_back() -> None:
    calls: list[int] = []

    def late_nan(out: StepOutputs) -> torch.Tensor:  # finite for two steps, then NaN
        calls.append(1)
        return out.source_logits.sum() * (float("nan") if len(calls) > 2 else 0.0)

    bad = LossTerm("late", late_nan)
    with pytest.raises(TrainingError, match=r"loss term 'late' became nan between progress 0\.000 and 0\.375"):
        _engine(_model(), _train_cfg(epochs=2, sync_every_steps=4), loss_terms=[source_cross_entropy(), bad]).fit(
            _toy(32, seed=0))
    assert len(calls) == 4  # the 4th step's read-back found it


def test_weights_that_stop_being_numbers_are_named() -> None:
    disc = nn.Linear(2, 1)

    def spoil(out: StepOutputs) -> torch.Tensor:  # a finite loss, while a weight of its module turns NaN
        with torch.no_grad():
            disc.bias.fill_(float("nan"))
        return out.source_logits.sum() * 0.0

    with pytest.raises(TrainingError, match=r"diverged in epoch 1: .*\(first: spoil\.bias\)"):
        _engine(_model(), _train_cfg(), loss_terms=[source_cross_entropy(), LossTerm("spoil", spoil, module=disc)]).fit(
            _toy(16, seed=0))


@pytest.mark.parametrize(("every", "when"), [(1, "inf at progress 0.000"), (4, "nan between progress 0.000 and")])
def test_finite_terms_under_a_huge_weight_are_refused(every: int, when: str) -> None:
    # read back every 4 steps: the weights are NaN a step later and every term with them; the sum went first
    huge = LossTerm("huge", lambda out: out.source_logits.pow(2).mean() + 1.0, weight=1e39)
    with pytest.raises(TrainingError, match=rf"the weighted loss became {when}.*\(terms: source_ce"):
        _engine(_model(), _train_cfg(sync_every_steps=every), loss_terms=[source_cross_entropy(), huge]).fit(
            _toy(32, seed=0))


def test_validation_counts_every_item_beside_a_training_dataloader() -> None:
    """A training set with its own transform goes through torch's DataLoader while validation is resident: the
    validation score must still cover every item (Accelerate's gather_for_metrics once cut it to the training
    loader's remainder: 70 % 64 = 6 of 100 items)."""
    rng = np.random.default_rng(0)
    x, xv = rng.normal(size=(70, 4)).astype(np.float32), rng.normal(size=(100, 4)).astype(np.float32)
    train = DomainDataset(x, (x[:, 0] > 0).astype(np.int64), "t", CLASSES, "vector", transform=torch.as_tensor)
    val = DomainDataset(xv, (xv[:, 0] > 0).astype(np.int64), "v", CLASSES, "vector")
    model = _model()
    result = _engine(model, _train_cfg(epochs=1), batch_size=64).fit(train, val)
    model.eval()
    with torch.no_grad():
        right = (model(torch.from_numpy(xv))[1].argmax(1).numpy() == val.labels).sum()
    assert result.history[0]["val_acc"] == pytest.approx(right / 100)


def test_a_time_due_checkpoint_waits_for_the_optimiser_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The clock is read every 4 steps, the optimiser steps every 3: a checkpoint the clock asked for is written at
    the next optimiser step, not dropped (11 steps: due at step 4, saved at 6; due at 8, saved at 9)."""
    saves: list[int] = []
    original = Engine._checkpoint_mid_epoch

    def spy(self: Engine, f: Any, epoch: int, step: int, sums: Any) -> None:
        saves.append(step)
        original(self, f, epoch, step, sums)

    monkeypatch.setattr(Engine, "_checkpoint_mid_epoch", spy)
    cfg = _train_cfg(epochs=1, grad_accum_steps=3, checkpoint_every_minutes=1e-9, sync_every_steps=4)
    _engine(_model(), cfg, run=RunDir(tmp_path)).fit(_toy(88, seed=0))
    assert saves == [6, 9]


def test_engine_errors() -> None:
    with pytest.raises(ValueError, match="must be unique"):
        _engine(_model(), _train_cfg(), loss_terms=[source_cross_entropy(), source_cross_entropy()])
    with pytest.raises(ValueError, match="must be labelled"):
        _engine(_model(), _train_cfg()).fit(_toy(16, seed=0).unlabelled())
    frozen = _model()
    for p in frozen.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="nothing to train"):
        _engine(frozen, _train_cfg()).fit(_toy(16, seed=0))


def test_cached_preprocessing_trains_exactly_as_uncached() -> None:
    """The in-memory cache of the backbone's transform is an optimisation only: same weights either way."""
    x = np.random.default_rng(3).integers(0, 256, size=(40, 28, 28), dtype=np.uint8)
    train = DomainDataset(x, np.arange(40) % 2, "img", CLASSES)
    states = []
    for cache_mb in (0, 64):
        torch.manual_seed(0)
        model = TransferModel(create_backbone("lenet"), CLASSES)
        _engine(model, _train_cfg(epochs=1), cache_mb=cache_mb).fit(train, target=train.unlabelled())
        states.append(_model_state(model))
    assert _equal_states(*states)


def test_a_callers_transform_is_never_cached() -> None:
    calls = []

    def augment(item: torch.Tensor) -> torch.Tensor:  # may be random: must run every epoch
        calls.append(1)
        return item

    train = _toy(16, 0).with_transform(augment)
    _engine(_model(), _train_cfg(epochs=2)).fit(train)
    assert len(calls) == 2 * 16


def test_precision_can_change_between_runs_in_one_process() -> None:
    """Accelerate refuses a second precision per process; a notebook or a sweep needs both, one after the other."""
    from transferkit.train.engine import get_accelerator

    for precision in ("bf16", "no", "bf16"):
        assert get_accelerator("cpu", precision).mixed_precision == precision
    result = _engine(_model(), _train_cfg(epochs=1, mixed_precision="no")).fit(_toy(32, 0))
    assert result.epochs_run == 1


def test_the_shared_accelerator_forgets_each_fit() -> None:
    """One Accelerator serves every fit of a process; it must not keep their models and loaders (a memory leak
    that grew a 360-run benchmark to 22 GB)."""
    engine = _engine(_model(), _train_cfg(epochs=1))
    for _ in range(3):
        engine.fit(_toy(32, 0), target=_toy(16, 1).unlabelled())
    acc = engine.accelerator
    assert acc._models == [] and acc._optimizers == [] and acc._dataloaders == []


def test_auto_precision_on_a_cpu_is_bf16_where_the_cpu_and_the_model_gain_from_it(monkeypatch) -> None:
    from torch import nn

    from transferkit.train import processes

    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten())
    wide = nn.Sequential(nn.Linear(5000, 256))  # 1.28 M weights: an MLP on 5,000-d features
    small = nn.Sequential(nn.Linear(384, 256), nn.ReLU(), nn.Linear(256, 2))
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    monkeypatch.setattr(processes, "cpu_has_native_bf16", lambda: True)
    assert [processes.resolve_precision("auto", False, m) for m in (conv, wide, small, None)] == [
        "bf16", "bf16", "no", "no"]
    assert processes.resolve_precision("no", False, conv) == "no"  # an explicit setting always wins
    assert processes.resolve_precision("bf16", False, small) == "bf16"
    monkeypatch.setattr(processes, "cpu_has_native_bf16", lambda: False)  # emulated bf16 is slower: fp32
    assert processes.resolve_precision("auto", False, conv) == "no"
    monkeypatch.setattr(processes, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # several CPU processes train in fp32
    assert processes.resolve_precision("auto", False, conv) == "no"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert processes.resolve_precision("auto", True, small) == "bf16"  # accelerate launch's choice on a GPU
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION")
    assert processes.resolve_precision("auto", True, small) == "fp16"


def test_a_fit_reports_the_precision_it_trained_in() -> None:
    result = _engine(_model(), _train_cfg(epochs=1, mixed_precision="bf16")).fit(_toy(32, 0))
    assert result.precision == "bf16"
    result = _engine(_model(), _train_cfg(epochs=1, mixed_precision="no")).fit(_toy(32, 0))
    assert result.precision == "fp32"


# -- torch.compile (train.compile) -----------------------------------------------------------------
def test_compiled_training_steps_use_a_compiled_view(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The training steps call torch.compile's view of the model (dynamo's tracing, eager kernels here: fast);
    validation, checkpoints and the caller keep the plain module with its own parameter names."""
    from transferkit.train import engine as engine_module

    views: list[Any] = []

    def eager_view(model: nn.Module, mode: str) -> Any:
        views.append((mode, torch.compile(model, backend="eager", dynamic=False)))
        return views[-1][1]

    monkeypatch.setattr(engine_module, "compiled", eager_view)
    straight, traced = _model(), _model()
    _engine(straight, _train_cfg()).fit(_toy(32, seed=0), _toy(16, seed=1), target=_toy(24, seed=2).unlabelled())
    run = RunDir(tmp_path)
    engine = _engine(traced, _train_cfg(compile="reduce-overhead"), run=run)
    engine.fit(_toy(32, seed=0), _toy(16, seed=1), target=_toy(24, seed=2).unlabelled())
    assert [m for m, _ in views] == ["reduce-overhead"] and engine._train_model is None
    assert isinstance(traced, TransferModel) and _equal_states(_model_state(traced), _model_state(straight))
    saved = _checkpoint_model(run.checkpoints / "train" / "best" / "model.safetensors")
    assert saved.keys() == _model_state(traced).keys()  # no torch.compile prefix in what is saved


@pytest.mark.slow
def test_compiled_training_with_inductor_matches_eager() -> None:
    """Generated kernels on this CPU: the same training to float rounding (the kernels fuse and reorder)."""
    straight, fused = _model(dropout=0.0), _model(dropout=0.0)
    a = _engine(straight, _train_cfg(epochs=2)).fit(_toy(32, seed=0), _toy(16, seed=1))
    b = _engine(fused, _train_cfg(epochs=2, compile="default")).fit(_toy(32, seed=0), _toy(16, seed=1))
    assert [r["train_loss"] for r in b.history] == pytest.approx([r["train_loss"] for r in a.history], rel=1e-4)
    for k, v in _model_state(straight).items():
        torch.testing.assert_close(_model_state(fused)[k], v, rtol=1e-4, atol=1e-5)


def test_cuda_graphs_refuse_gradient_accumulation() -> None:
    with pytest.raises(ValueError, match="cannot accumulate gradients"):
        TrainConfig(compile="reduce-overhead", grad_accum_steps=2)
    assert TrainConfig(compile="default", grad_accum_steps=2).grad_accum_steps == 2

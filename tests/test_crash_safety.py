"""Crash safety: a run killed at any write leaves its last complete checkpoint loadable and resumes to the same
result; a full disk or a refused permission names the path and stops cleanly, and nothing is lost.

A kill is simulated by raising at the N-th commit point of the run's writes (``os.replace``, which puts each
temporary file in place, and ``Path.rename``, which puts each checkpoint folder in place), for every N.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from transferkit.config import TrainConfig, parse_config
from transferkit.data.domain import DomainDataset
from transferkit.errors import RunDirError
from transferkit.experiment import fit
from transferkit.models.backbones import create_backbone
from transferkit.models.heads import TransferModel
from transferkit.runs import RunDir, read_jsonl
from transferkit.train.checkpoints import newest_checkpoint
from transferkit.train.engine import Engine


class _Killed(BaseException):
    """Not an Exception: nothing in transferkit may catch it, as nothing can catch a SIGKILL."""


def _toy(n: int, seed: int) -> DomainDataset:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    return DomainDataset(x, (x[:, 0] > 0).astype(np.int64), f"toy{seed}", ["neg", "pos"], "vector")


def _fit(run: RunDir | None, resume: bool = False) -> TransferModel:
    torch.manual_seed(0)
    model = TransferModel(create_backbone("mlp", in_features=4, hidden=8, depth=1, dropout=0.1), ["neg", "pos"])
    cfg = TrainConfig(epochs=2, lr=0.01, device="cpu", checkpoint_every_steps=2)
    Engine(model, cfg, run=run, batch_size=8, seed=1, progress=False).fit(_toy(40, 0), _toy(16, 1), resume=resume)
    return model


class _KillAt:
    """Counts commit points (``os.replace`` and ``Path.rename``) and raises :class:`_Killed` at number ``at``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, at: int | None) -> None:
        self.at, self.count = at, 0
        real_replace, real_rename = os.replace, Path.rename

        def replace(src: Any, dst: Any, *a: Any, **k: Any) -> None:
            self._tick()
            real_replace(src, dst, *a, **k)

        def rename(path: Path, target: Any) -> Path:
            self._tick()
            return real_rename(path, target)

        monkeypatch.setattr(os, "replace", replace)
        monkeypatch.setattr(Path, "rename", rename)

    def _tick(self) -> None:
        self.count += 1
        if self.count == self.at:
            raise _Killed


def test_a_kill_at_every_write_leaves_a_loadable_checkpoint_and_resumes_identically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    straight = _fit(None).state_dict()
    with monkeypatch.context() as m:
        counter = _KillAt(m, None)
        _fit(RunDir(tmp_path / "count"))
    points = counter.count
    assert points > 20  # metrics, mid-epoch and epoch checkpoints, the best copy

    for at in range(1, points + 1):
        run = RunDir(tmp_path / f"kill-{at}")
        with monkeypatch.context() as m, pytest.raises(_Killed):
            _KillAt(m, at)
            _fit(run)
        newest = newest_checkpoint(run.checkpoints / "train")
        if newest is not None:  # loadable: weights without pickle, state with weights_only
            load_file(str(newest / "model.safetensors"))
            torch.load(newest / "state.pt", weights_only=True)
        resumed = _fit(run, resume=True)
        assert all(torch.equal(v, resumed.state_dict()[k]) for k, v in straight.items()), f"killed at write {at}"
        assert [r["epoch"] for r in read_jsonl(run.metrics)] == [0, 1], f"killed at write {at}"


def _config(tmp_path: Path, name: str) -> Any:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    data = tmp_path / "toy.npz"
    np.savez(data, x_train=x[:40], y_train=y[:40], x_test=x[40:], y_test=y[40:], classes=np.array(["neg", "pos"]))
    return parse_config({"name": name, "output_dir": str(tmp_path / "runs"),
                         "data": {"source": str(data)}, "model": {"backbone": "mlp"},
                         "train": {"epochs": 2, "device": "cpu"}})


def _no_temporary_files(root: Path) -> bool:
    return not [p for p in root.rglob("*") if p.name.endswith((".tmp", ".partial"))]


def test_disk_full_names_the_file_and_a_resume_finishes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import safetensors.torch

    real_save = safetensors.torch.save_file

    def full_disk(tensors: Any, filename: str, metadata: Any = None) -> None:
        if Path(filename).parent.name == "full":  # the run's final model, after training (not a checkpoint)
            Path(filename).write_bytes(b"\0" * 100)  # part of it made it to disk
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(tensors, filename, metadata=metadata)

    cfg = _config(tmp_path, "full")
    with monkeypatch.context() as m:
        m.setattr(safetensors.torch, "save_file", full_disk)
        with pytest.raises(RunDirError, match=r"cannot write .*full/model\.safetensors: No space left on device"):
            fit(cfg, progress=False)
    run = RunDir(cfg.run_path)
    assert _no_temporary_files(run.path) and not run.model.exists()
    assert [r["epoch"] for r in read_jsonl(run.metrics)] == [0, 1]  # the training is kept
    report = fit(cfg, resume=True, progress=False)  # space freed: the resume only saves and scores
    assert run.model.exists() and report["summary"]["source"]["accuracy"]["mean"] > 0.5
    assert [r["epoch"] for r in read_jsonl(run.metrics)] == [0, 1]  # nothing trained twice


def test_permission_denied_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_replace = os.replace

    def denied(src: Any, dst: Any) -> None:
        if Path(dst).name == "config.yaml":
            raise PermissionError(errno.EACCES, "Permission denied")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", denied)
    cfg = _config(tmp_path, "denied")
    with pytest.raises(RunDirError, match=r"cannot write .*denied/config\.yaml: Permission denied"):
        fit(cfg, progress=False)
    assert _no_temporary_files(cfg.run_path)


def test_output_dir_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "x")
    (tmp_path / "runs").write_text("not a folder")
    with pytest.raises(RunDirError, match=r"cannot create run directory .*runs/x"):
        fit(cfg, progress=False)

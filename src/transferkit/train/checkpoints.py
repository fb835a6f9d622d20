"""One training phase's checkpoints, and the random state that makes a resume exact.

A phase writes ``<run>/checkpoints/<phase>/epoch-NNNN`` at the end of every epoch and ``step-NNNNNNNNN`` within one
(only the newest of those is kept), and copies an improving epoch to ``best``. Every folder is written under a hidden
name and renamed into place, with ``meta.json`` last: a kill at any moment leaves complete checkpoints or none, and
:func:`newest_checkpoint` ignores the rest. Everything read back is checked (a run folder may be damaged or
hostile): a bad checkpoint is a :class:`~transferkit.errors.RunDirError` that names it, never a traceback.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from transferkit.errors import RunDirError
from transferkit.runs import atomic_save_safetensors, atomic_torch_save, atomic_write_json
from transferkit.train.callbacks import EarlyStopping


class CheckpointStore:
    """The checkpoints of one phase in ``folder``; ``keep`` end-of-epoch checkpoints are kept besides ``best``."""

    def __init__(self, folder: Path, phase: str, accelerator: Any, keep: int) -> None:
        self.folder, self.phase, self.accelerator, self.keep = folder, phase, accelerator, keep

    def save_epoch(self, model: nn.Module, extra: nn.Module, optimizer: Any, scheduler: Any, epoch: int,
              global_step: int, stopper: EarlyStopping, history: list[dict[str, Any]], improved: bool) -> None:
        """The end-of-epoch checkpoint; it becomes ``best`` when the epoch improved, and replaces any mid-epoch one."""
        root = self.folder
        final = self.write(f"epoch-{epoch:04d}", model, extra, self.state(
            optimizer, scheduler, epoch, global_step, stopper, history))
        if improved:
            self.promote_best(final)
        kept = sorted(p for p in root.glob("epoch-*") if p.is_dir())
        for p in kept[: -self.keep]:
            shutil.rmtree(p, ignore_errors=True)
        for p in root.glob("step-*"):
            shutil.rmtree(p, ignore_errors=True)

    def promote_best(self, checkpoint: Path) -> None:
        """Copy ``checkpoint`` to ``best``. A directory cannot be replaced atomically, so the copy is made complete
        first (``meta.json`` copied last) and :meth:`best_dir` knows which folder holds the best at any moment."""
        root = self.folder
        new, old = root / ".best.partial", root / ".best.old"
        shutil.rmtree(new, ignore_errors=True)
        new.mkdir(parents=True)
        for name in ("model.safetensors", "state.pt", "meta.json"):
            shutil.copy2(checkpoint / name, new / name)
        shutil.rmtree(old, ignore_errors=True)
        if (root / "best").exists():
            (root / "best").rename(old)
        new.rename(root / "best")
        shutil.rmtree(old, ignore_errors=True)

    def best_dir(self) -> Path | None:
        """The best checkpoint, also after a kill in the middle of :meth:`promote_best`: ``best``, else the complete
        new copy, else the previous best."""
        root = self.folder
        for p in (root / "best", root / ".best.partial", root / ".best.old"):
            if (p / "meta.json").exists():
                return p
        return None

    def repair_best(self, best_epoch: int) -> None:
        """On resume: a kill after an improving epoch's checkpoint but before (or while) it became ``best`` leaves
        the wrong best behind; the early stopper knows the right epoch, whose checkpoint is the newest one."""
        if best_epoch < 0:
            return
        current = self.best_dir()
        if current is not None and checkpoint_epoch(current) == best_epoch:
            if current.name != "best":  # finish the interrupted promotion
                current.rename(self.folder / "best")
            return
        checkpoint = self.folder / f"epoch-{best_epoch:04d}"
        if (checkpoint / "meta.json").exists():
            self.promote_best(checkpoint)

    def save_step(self, model: nn.Module, extra: nn.Module, optimizer: Any, scheduler: Any, epoch: int,
                   global_step: int, stopper: EarlyStopping, history: list[dict[str, Any]],
                   running: dict[str, Any]) -> None:
        """A mid-epoch checkpoint: the epoch's position and running sums besides the usual state; only the newest
        is kept."""
        state = self.state(optimizer, scheduler, epoch, global_step, stopper, history)
        state.update(step_in_epoch=int(running["step_in_epoch"]), epoch_json=json.dumps(running))
        name = f"step-{global_step:09d}"
        self.write(name, model, extra, state)
        for p in self.folder.glob("step-*"):
            if p.name != name:
                shutil.rmtree(p, ignore_errors=True)

    def state(self, optimizer: Any, scheduler: Any, epoch: int, global_step: int, stopper: EarlyStopping,
               history: list[dict[str, Any]]) -> dict[str, Any]:
        state = {
            "epoch": epoch,
            "global_step": global_step,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rng_state(),
            "stopper": stopper.state_dict(),
            "history_json": json.dumps(history),
        }
        scaler = getattr(self.accelerator, "scaler", None)
        if scaler is not None:  # fp16 loss scaling
            state["scaler"] = scaler.state_dict()
        return state

    def write(self, name: str, model: nn.Module, extra: nn.Module, state: dict[str, Any]) -> Path:
        """Write into a hidden folder and rename it into place: a kill at any moment leaves either the complete
        checkpoint or none (``meta.json``, written last, marks it complete)."""
        root = self.folder
        final, tmp = root / name, root / f".{name}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunDirError(f"cannot write checkpoint {tmp}: {exc.strerror or exc}") from exc
        epoch = int(state["epoch"])
        atomic_save_safetensors(weights_of(self.accelerator, model, extra), tmp / "model.safetensors",
                                {"epoch": str(epoch)})
        atomic_torch_save(state, tmp / "state.pt")
        atomic_write_json(tmp / "meta.json", {"epoch": epoch, "global_step": int(state["global_step"]),
                                              "step_in_epoch": int(state.get("step_in_epoch", 0)),
                                              "phase": self.phase, "complete": True})
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        return final

    def load_last(self, model: nn.Module, extra: nn.Module, optimizer: Any, scheduler: Any) -> dict[str, Any] | None:
        """Load the newest complete checkpoint (end of epoch or mid-epoch) into the model, optimiser, scheduler and
        RNGs; return its state, or None when there is none."""
        last = newest_checkpoint(self.folder)
        if last is None:
            return None
        try:
            state = torch.load(last / "state.pt", map_location="cpu", weights_only=True)
        except Exception as exc:
            raise RunDirError(f"checkpoint {last / 'state.pt'} cannot be read safely: {exc}") from exc
        if not isinstance(state, dict) or not set(state) >= STATE_KEYS:
            raise RunDirError(f"checkpoint {last / 'state.pt'} is damaged (not the state transferkit writes); delete "
                              f"{last} to resume from an earlier checkpoint")
        self.load_weights(model, extra, last / "model.safetensors")
        try:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        except (ValueError, KeyError, TypeError, AttributeError, IndexError, RuntimeError) as exc:
            raise RunDirError(
                f"checkpoint {last} does not fit this run's optimiser ({exc}); did the configuration change?"
            ) from exc
        try:
            scaler = getattr(self.accelerator, "scaler", None)
            if scaler is not None and "scaler" in state:
                scaler.load_state_dict(state["scaler"])
            set_rng_state(state["rng"])
        except (ValueError, KeyError, TypeError, AttributeError, IndexError, RuntimeError, OverflowError) as exc:
            raise RunDirError(f"checkpoint {last / 'state.pt'} is damaged ({type(exc).__name__}: {exc}); delete "
                              f"{last} to resume from an earlier checkpoint") from exc
        state["_path"] = str(last)
        return state

    def load_weights(self, model: nn.Module, extra: nn.Module, path: Path) -> None:
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as exc:  # safetensors' own error on a truncated or corrupt file
            raise RunDirError(
                f"checkpoint {path} cannot be read ({exc}); it is damaged: delete its folder to resume from an "
                "earlier checkpoint, or start over with --overwrite"
            ) from exc
        apply_weights(self.accelerator, model, extra, state, str(path))


def weights_of(acc: Any, model: nn.Module, extra: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors a checkpoint holds: the model's as ``model.*``, the loss modules' (a discriminator's) as
    ``extra.*``."""
    state = {f"model.{k}": v for k, v in acc.unwrap_model(model).state_dict().items()}
    state.update({f"extra.{k}": v for k, v in acc.unwrap_model(extra).state_dict().items()})
    return state


def apply_weights(acc: Any, model: nn.Module, extra: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load a checkpoint's ``model.*`` and ``extra.*`` tensors strictly; a mismatch is a RunDirError naming it."""
    m = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    e = {k[len("extra."):]: v for k, v in state.items() if k.startswith("extra.")}
    try:
        acc.unwrap_model(model).load_state_dict(m, strict=True)
        acc.unwrap_model(extra).load_state_dict(e, strict=True)
    except RuntimeError as exc:
        raise RunDirError(
            f"checkpoint {source} does not fit this model ({str(exc).splitlines()[0]}); "
            "did the configuration change since the run started?"
        ) from exc


STATE_KEYS = frozenset({"epoch", "global_step", "optimizer", "scheduler", "rng", "stopper", "history_json"})


def resume_point(state: dict[str, Any], stopper: EarlyStopping) -> tuple[int, int, list[dict[str, Any]],
                                                                        dict[str, Any] | None]:
    """``(global_step, start_epoch, history, partial epoch sums)`` of a checkpoint's state, every value checked: a
    run folder may be damaged or hostile, and a resume must fail with the checkpoint's name, not a traceback."""
    where = state.get("_path", "the checkpoint")
    try:
        global_step, epoch = state["global_step"], state["epoch"]
        step_in_epoch = state.get("step_in_epoch", 0)
        if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 10**12
                   for v in (global_step, epoch, step_in_epoch)):
            raise ValueError("its epoch and step counters are not counters")
        stopper.load_state_dict(state["stopper"])
        history = json.loads(state["history_json"])
        partial = json.loads(state["epoch_json"]) if step_in_epoch > 0 else None
        if not isinstance(history, list) or not all(isinstance(r, dict) for r in history):
            raise ValueError("its history is not a list of records")
        if partial is not None and not (isinstance(partial, dict) and isinstance(partial.get("sums"), dict)
                                        and all(isinstance(partial.get(k), (int, float))
                                                for k in ("step_in_epoch", "correct", "seen", "seconds"))):
            raise ValueError("its running sums are not numbers")
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError, OverflowError) as exc:
        raise RunDirError(f"{where} is damaged ({type(exc).__name__}: {exc}); delete it to resume from an earlier "
                          "checkpoint, or start over with --overwrite") from None
    return global_step, (epoch if partial is not None else epoch + 1), history, partial


def checkpoint_epoch(folder: Path) -> int | None:
    """The epoch a checkpoint's ``meta.json`` names; None where it is damaged."""
    try:
        epoch = json.loads((folder / "meta.json").read_text(encoding="utf-8")).get("epoch")
    except (OSError, ValueError, AttributeError, RecursionError):
        return None
    return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None


def newest_checkpoint(root: Path) -> Path | None:
    """The complete checkpoint (``meta.json`` present and well-formed) with the most steps; an epoch's beats a
    mid-epoch one of the same step. A folder whose ``meta.json`` is damaged counts as incomplete."""
    found = []
    for p in [*root.glob("epoch-*"), *root.glob("step-*")]:
        try:
            meta = json.loads((p / "meta.json").read_text(encoding="utf-8"))
            step, epoch = meta.get("global_step", 0), meta.get("epoch", -1)
            if not all(isinstance(v, int) and not isinstance(v, bool) and -1 <= v < 10**12 for v in (step, epoch)):
                continue
        except (OSError, ValueError, AttributeError, RecursionError):
            continue  # no meta.json: killed before the checkpoint was complete
        found.append(((step, epoch, p.name.startswith("epoch")), p))
    return max(found)[1] if found else None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    py = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "numpy_pos": int(pos),
        "numpy_has_gauss": int(has_gauss),
        "numpy_gauss": float(gauss),
        "python_version": int(py[0]),
        "python_state": torch.tensor(py[1], dtype=torch.int64),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    keys = state["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, state["numpy_pos"], state["numpy_has_gauss"], state["numpy_gauss"]))
    random.setstate((state["python_version"], tuple(int(v) for v in state["python_state"].tolist()), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])

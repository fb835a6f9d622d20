"""Source-only models kept by what they were trained from, so an identical one is never trained twice.

A guarded adaptation run trains a source-only "twin" (same seed, settings and steps, no transfer loss) to compare
with. A plain source-only run of the same settings, the twin of another method's run, or ``--method auto``'s
source-only candidate is that same model: training is deterministic given the seed, so the second one is a copy.
Each is stored under ``<output_dir>/.source-only/<key>.safetensors``, the key a hash of everything that shapes the
trained weights:

- the run's config with the adaptation method set to ``none`` (and ``model.bottleneck_dim`` resolved to the width the
  twin is built with: MCC's own bottleneck makes its twin another model), minus what only names, schedules or judges
  the run (``name``, ``output_dir``, ``seeds``, ``tracking``, the transfer loss's λ, schedule and options, the guard's
  and ``auto``'s settings) and how it is carried out (``config.RESUME_MAY_CHANGE``: threads, checkpoint intervals,
  data workers unless images are augmented in them; a different thread count may change the last bits of a sum, so a
  hit is the same training, not always the same bits);
- the seed and the number of optimiser steps trained;
- content hashes of the labelled data trained and selected on (source train and validation splits, labelled target
  items) and the per-source weights;
- the versions of transferkit and torch.

Anything else that differs gives another key: a miss costs a training run, never a wrong model. The files are
safetensors (no code), written atomically, and checked against the model's own tensor names and shapes before use.
Not used under several processes (``accelerate launch``) or with gradient accumulation, where the step count of
a twin and of a plain run are not counted alike; LoRA models are stored before their adapters are merged.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transferkit.config import RunConfig
    from transferkit.data.domain import DomainDataset

FOLDER = ".source-only"
# adaptation settings that the source-only model never reads
_ADAPT_IGNORED = ("method", "weight", "schedule", "options", "auto_methods", "auto_validator")
_TOP_IGNORED = ("name", "output_dir", "seeds", "tracking")


def twin_key(
    cfg: RunConfig, seed: int, steps: int | None, trained_on: list[DomainDataset | None],
    source_weights: list[float] | None = None,
) -> str | None:
    """The cache key of the source-only model ``cfg`` trains for ``seed`` in ``steps`` steps, or None when it
    cannot be shared (see the module's docstring)."""
    from transferkit import __version__

    if steps is None or cfg.train.grad_accum_steps != 1:
        return None
    from transferkit.config import RESUME_MAY_CHANGE, bottleneck_width

    dumped = cfg.model_dump(mode="json")
    # the width the twin is built with: `auto` resolves per method and data (MCC's own bottleneck), so the same
    # `auto` is two different models for MCC and for any other method
    source = trained_on[0] if trained_on else None
    dumped["model"]["bottleneck_dim"] = bottleneck_width(cfg, None if source is None else len(source))
    for dotted in RESUME_MAY_CHANGE:  # how a run is carried out (threads, checkpoints) shapes no weight...
        if dotted == "data.num_workers" and cfg.data.augment:
            continue  # ...except workers under augmentation: random views drawn in worker processes
        section, key = dotted.split(".")
        dumped.get(section, {}).pop(key, None)
    for k in _TOP_IGNORED:
        dumped.pop(k, None)
    dumped["adapt"] = {k: v for k, v in dumped["adapt"].items()
                       if k not in _ADAPT_IGNORED and not k.startswith("guard")}
    what = {
        "config": dumped,
        "seed": seed,
        "steps": int(steps),
        "data": [None if d is None else d.fingerprint() for d in trained_on],
        "source_weights": source_weights,
        "versions": [__version__, torch.__version__],
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:32]


def cache_path(cfg: RunConfig, key: str) -> Path:
    return Path(cfg.output_dir) / FOLDER / f"{key}.safetensors"


def load_twin(cfg: RunConfig, key: str | None, model: torch.nn.Module) -> bool:
    """Fill ``model`` with the stored source-only weights of ``key``; False (``model`` untouched) when there are none
    or they do not fit ``model`` exactly."""
    if key is None or _several_processes():
        return False
    path = cache_path(cfg, key)
    if not path.is_file():
        return False
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError):
        return False  # a damaged entry is retrained (and rewritten), not an error
    own = model.state_dict()
    if state.keys() != own.keys() or any(state[k].shape != v.shape or state[k].dtype != v.dtype
                                         for k, v in own.items()):
        return False
    model.load_state_dict(state)
    return True


def store_twin(cfg: RunConfig, key: str | None, model: torch.nn.Module) -> None:
    """Keep ``model``'s weights for a later run of the same key (atomically: a crash leaves no half file)."""
    if key is None or _several_processes():
        return
    from transferkit.runs import atomic_save_safetensors

    path = cache_path(cfg, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_safetensors(model.state_dict(), path, {"what": "transferkit source-only model (twin cache)"})


def _several_processes() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def describe(reused: bool) -> str:
    return ("reused: an identical source-only model (same settings, seed, data and steps) was already trained"
            if reused else "trained for this run")


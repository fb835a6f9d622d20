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
  items: inputs, files by their bytes, labels, class names, heads' targets) and the per-source weights;
- content hashes of every file and folder the model starts from (``model.weights``, ``model.init_from``, a
  ``file:``, ``hf:``, ``st:`` or ``onnx:`` backbone and the files a ``file:`` model names beside it), never their
  paths: retraining the model ``--init-from`` names changes the key (:mod:`transferkit.content_digest`);
- the versions of transferkit and torch.

Anything else that differs gives another key: a miss costs a training run, never a wrong model; a file that cannot
be hashed gives no key (no caching). The files are safetensors (no code), written atomically, and verified before
use: the model's own tensor names, shapes and dtypes, finite values, and the digest of their tensors stored in their
metadata; an entry that fails is deleted, with a warning naming it, and trained again. The cache never follows a
link: a ``.source-only`` that is a link or a file, or an entry that is a link or a folder, is left alone and not
used (a warning says so). A cache that cannot be read or written is a warning, never a failed run.
Not used under several processes (``accelerate launch``) or with gradient accumulation, where the step count of
a twin and of a plain run are not counted alike; LoRA models are stored before their adapters are merged.
"""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from transferkit import __version__, runs
from transferkit.config import RESUME_MAY_CHANGE, bottleneck_width
from transferkit.content_digest import DigestError, backbone_source_digest, dataset_digest, path_digest
from transferkit.errors import TransferkitError
from transferkit.models.backbones import META_SPEC, read_metadata
from transferkit.ui import warn_once

if TYPE_CHECKING:
    from transferkit.config import RunConfig
    from transferkit.data.domain import DomainDataset

FOLDER = ".source-only"
META_DIGEST = "transferkit.twin_digest"  # the SHA-256 of the entry's tensors (names, dtypes, shapes, bytes)
# adaptation settings that the source-only model never reads
_ADAPT_IGNORED = ("method", "weight", "schedule", "options", "auto_methods", "auto_validator")
_TOP_IGNORED = ("name", "output_dir", "seeds", "tracking")
_HEADER_BYTES = 32 * 2**20  # an entry is its tensors plus a header; more than this beyond them is not an entry


def twin_key(
    cfg: RunConfig, seed: int, steps: int | None, trained_on: list[DomainDataset | None],
    source_weights: list[float] | None = None,
) -> str | None:
    """The cache key of the source-only model ``cfg`` trains for ``seed`` in ``steps`` steps, or None when it
    cannot be shared (see the module's docstring)."""
    if steps is None or cfg.train.grad_accum_steps != 1:
        return None
    try:
        contents = {"data": [None if d is None else dataset_digest(d) for d in trained_on], "files": model_files(cfg)}
    except (DigestError, TransferkitError) as exc:
        warn_once(f"the source-only twin is not cached: {exc}")
        return None
    what = {
        "config": _shaping_config(cfg, trained_on[0] if trained_on else None),
        "seed": seed,
        "steps": int(steps),
        **contents,
        "source_weights": source_weights,
        "versions": [__version__, torch.__version__],
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:32]


def _shaping_config(cfg: RunConfig, source: DomainDataset | None) -> dict[str, Any]:
    """The config less what names, schedules, judges or carries out the run (see the module's docstring)."""
    dumped = cfg.model_dump(mode="json")
    # the width the twin is built with: `auto` resolves per method and data (MCC's own bottleneck), so the same
    # `auto` is two different models for MCC and for any other method
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
    return dumped


def model_files(cfg: RunConfig) -> dict[str, str]:
    """Content digests of the files and folders the model is built from, by the setting that names them: the same
    path holding other bytes is another model. Raises DigestError / ModelError for one that cannot be read."""
    m = cfg.model
    out = {}
    for field, value in (("model.weights", m.weights), ("model.init_from", m.init_from)):
        if value is not None:
            out[field] = path_digest(value)
    source = backbone_source_digest(m.backbone)  # file:, hf:, st:, onnx: paths, ~ expanded as the loaders do
    if source is not None:
        out["model.backbone"] = source
        prefix, _, name = m.backbone.partition(":")
        path = Path(name).expanduser()
        if prefix == "file" and path.is_file():
            out.update(_named_beside(path))
    return out


def _named_beside(path: Path) -> dict[str, str]:
    """A ``file:`` model's metadata may name backbone files beside it (``<stem>.backbone/``): their content too."""
    spec = read_metadata(path).get(META_SPEC) or ""
    _, _, inner = spec.partition(":")
    beside = path.resolve().parent / inner
    if not inner or not beside.exists():
        return {}
    return {"model.backbone files": path_digest(beside)}


def cache_path(cfg: RunConfig, key: str) -> Path:
    return Path(cfg.output_dir) / FOLDER / f"{key}.safetensors"


def load_twin(cfg: RunConfig, key: str | None, model: torch.nn.Module) -> bool:
    """Fill ``model`` with the stored source-only weights of ``key``; False (``model`` untouched) when there are none,
    or the entry fails its checks (it is then deleted, with a warning that names it, and the twin trained again)."""
    if key is None or _several_processes() or _folder(cfg, create=False) is None:
        return False
    path = cache_path(cfg, key)
    try:
        info = path.lstat()
    except FileNotFoundError:
        return False
    except OSError as exc:
        warn_once(f"cannot read the twin cache entry {path} ({exc.strerror or exc}); the twin is trained again")
        return False
    if not stat.S_ISREG(info.st_mode):
        warn_once(f"the twin cache entry {path} is {_what(info.st_mode)}, not a file transferkit wrote; it is not used "
              "(remove it)")
        return False
    try:
        state = _verified_entry(path, info.st_size, model.state_dict())
    except Exception as exc:  # any damage at all means "train the twin", never a failed run
        _drop(path, str(exc) if isinstance(exc, _BadEntry) else f"cannot be read ({type(exc).__name__}: {exc})")
        return False
    model.load_state_dict(state)
    return True


class _BadEntry(Exception):
    """Why a twin cache entry is not used."""


def _verified_entry(path: Path, size: int, own: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The entry's tensors once every check passed: the file no larger than the model's tensors and a header, the
    model's own names, shapes and dtypes (read from the header, before any tensor is), the digest in its metadata,
    and finite values."""
    from safetensors import safe_open

    expected = sum(v.numel() * v.element_size() for v in own.values())
    if size > expected + _HEADER_BYTES:
        raise _BadEntry(f"is {size:,} bytes, more than the model's {expected:,}")
    with safe_open(str(path), framework="pt", device="cpu") as f:
        stored = (f.metadata() or {}).get(META_DIGEST)
        if set(f.keys()) != set(own):
            raise _BadEntry("holds other tensors than the model")
        for k, v in own.items():
            sl = f.get_slice(k)
            if tuple(sl.get_shape()) != tuple(v.shape) or sl.get_dtype() != _st_dtype(v.dtype):
                raise _BadEntry(f"holds {k} of another shape or type than the model's")
        state = {k: f.get_tensor(k) for k in own}
    if stored is None:
        raise _BadEntry("has no stored digest (an older transferkit wrote it, or not transferkit)")
    if stored != state_digest(state):
        raise _BadEntry("does not match the digest stored with it (damaged, or not written by transferkit)")
    bad = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise _BadEntry(f"holds NaN or infinite values ({bad})")
    return state


def _st_dtype(dtype: torch.dtype) -> str:
    """safetensors' name of a torch dtype (its header's spelling)."""
    names = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
             torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
             torch.bool: "BOOL"}
    return names.get(dtype, str(dtype))


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """The SHA-256 of a state dict's tensors: names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for k in sorted(state):
        v = state[k].detach().to("cpu").contiguous()
        h.update(f"{k}\0{v.dtype}\0{tuple(v.shape)}\0".encode())
        h.update(v.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _drop(path: Path, why: str) -> None:
    """Delete a failed entry (a regular file of the cache's own folder) so that no later run trips on it."""
    try:
        path.unlink()
        done = "deleted it"
    except OSError as exc:
        done = f"could not delete it ({exc.strerror or exc})"
    warn_once(f"the twin cache entry {path} {why}; {done} and training the twin again")


def store_twin(cfg: RunConfig, key: str | None, model: torch.nn.Module) -> None:
    """Keep ``model``'s weights for a later run of the same key (atomically: a crash leaves no half file). A failure
    to write is a warning: the cache is disposable, the run's own files are not."""
    if key is None or _several_processes():
        return
    folder = _folder(cfg, create=True)
    if folder is None:
        return
    path = cache_path(cfg, key)
    if path.is_symlink() or (path.exists() and not path.is_file()):
        warn_once(f"the twin cache entry {path} is {_what(path.lstat().st_mode)}; the twin is not cached (remove it)")
        return
    state = model.state_dict()
    try:
        meta = {"what": "transferkit source-only model (twin cache)", META_DIGEST: state_digest(state)}
        runs.atomic_save_safetensors(state, path, meta)  # looked up at call time (a full disk is tested so)
    except Exception as exc:  # a cache that cannot be written never costs the run
        warn_once(f"the source-only twin is not cached: {type(exc).__name__}: {exc}" if not isinstance(
            exc, TransferkitError) else f"the source-only twin is not cached: {exc}")


def _folder(cfg: RunConfig, *, create: bool) -> Path | None:
    """``<output_dir>/.source-only`` when it is a real folder (made if ``create``); None, with a warning, when it is
    a link (writing through it would write outside the output folder), a file, or cannot be made."""
    folder = Path(cfg.output_dir) / FOLDER
    try:
        info = folder.lstat()
    except FileNotFoundError:
        if not create:
            return None
        try:
            folder.mkdir(parents=True, exist_ok=True)
            info = folder.lstat()
        except OSError as exc:
            warn_once(f"cannot create the twin cache {folder} ({exc.strerror or exc}); the twin is not cached")
            return None
    except OSError as exc:
        warn_once(f"cannot read the twin cache {folder} ({exc.strerror or exc}); it is not used")
        return None
    if not stat.S_ISDIR(info.st_mode):
        warn_once(f"the twin cache {folder} is {_what(info.st_mode)}, not a folder; transferkit does not write through "
              "links or over files: it is not used (remove it)")
        return None
    return folder


def _what(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "a file" if stat.S_ISREG(mode) else "not a regular file"




def _several_processes() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def describe(reused: bool) -> str:
    return ("reused: an identical source-only model (same settings, seed, data and steps) was already trained"
            if reused else "trained for this run")

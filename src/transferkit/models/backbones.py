"""Backbones: a registry of specs that build a feature extractor with its own preprocessing.

A spec names where the architecture comes from:

- ``lenet``, ``mlp``: small built-ins for digits (28x28 grey) and feature vectors.
- ``timm:NAME``: any timm model (``timm:tf_efficientnet_lite0``).
- ``torchvision:NAME``: any torchvision classification model (``torchvision:mobilenet_v2``).
- ``file:PATH``: a backbone or model that transferkit saved (safetensors carrying its architecture).
- ``hf:PATH`` / ``st:PATH`` (text and audio, :mod:`transferkit.models.text`), ``onnx:PATH`` and ``logmel-cnn``
  (audio, :mod:`transferkit.models.audio`): modules that register their own prefixes here.

Weights come from a local file (``weights=PATH``), from an installed pip package (``pretrained=True``,
see :mod:`transferkit.models.pretrained`), or from the hub only when ``online=True``. The classifier of
the original model is removed generically, so every backbone maps inputs to ``(N, out_features)`` and the
task head is a separate module (the tutorial's ``model.fc = nn.Linear(num_ftrs, n)``, for any model).

Example:
    >>> bb = create_backbone("lenet")
    >>> bb.out_features, len(bb.stages())
    (500, 3)

Over 500 lines as one module: the registry, the built-ins and the model-file metadata, which is checked against
the registry's allow-lists and must not drift from it.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from transferkit.data.pixels import EnsureMode  # a pixel transform: below models, beside the image readers
from transferkit.errors import ConfigError, ModelError, RunDirError
from transferkit.models import pretrained as pkg
from transferkit.models.options import (
    LENET_OPTIONS,
    MLP_OPTIONS,
    TIMM_OPTIONS,
    TORCHVISION_OPTIONS,
    Option,
    check_options,
)
from transferkit.models.pretrained import load_state_dict_file
from transferkit.network import offline
from transferkit.runs import atomic_save_safetensors

Transform = Callable[[Any], torch.Tensor]
META_SPEC = "transferkit.backbone"
META_KWARGS = "transferkit.backbone_kwargs"


class Backbone(nn.Module):
    """A feature extractor: ``forward(x) -> (N, out_features)``, with the preprocessing it expects.

    ``stages`` orders the parameters from input to output (stem, blocks, ...). Partial freezing and
    layer-wise learning-rate decay work on these groups, so they work for every architecture.
    """

    def __init__(
        self,
        body: nn.Module,
        out_features: int,
        spec: str,
        transform: Transform | None,
        stage_names: list[list[str]],
        kwargs: dict[str, Any] | None = None,
        input_kind: str = "image",
    ) -> None:
        super().__init__()
        self.body = body
        # What the backbone reads ("image", "vector", "text", "audio"): a dataset of another kind is refused
        # up front with a clear message instead of failing inside the first forward pass.
        self.input_kind = input_kind
        # timm's data config (input size, interpolation, mean/std, crop) for image backbones: what a training
        # transform with random crops and flips is built from (data.augment)
        self.data_config: dict[str, Any] | None = None
        # finetune.freeze_bn: every BatchNorm keeps its running statistics while the rest trains
        self.freeze_bn_stats = False
        self.out_features = int(out_features)
        self.spec = spec
        self.kwargs = dict(kwargs or {})
        self.transform = transform
        # Backbones built from a local folder or file (hf:, st:, onnx:PATH) set this: it writes what rebuilding the
        # architecture needs into a folder and returns the spec's name relative to it, so a saved model carries
        # those files beside itself and its metadata never names a path outside its own folder.
        self.write_files: Callable[[Path], str] | None = None
        names = {n for n, _ in body.named_parameters()}
        covered = [n for group in stage_names for n in group if n in names]
        leftover = [n for n, _ in body.named_parameters() if n not in set(covered)]
        groups = [[n for n in group if n in names] for group in stage_names]
        if leftover:  # parameters no stage claimed belong to the last stage (closest to the head)
            groups.append(leftover)
        self._stage_names = [g for g in groups if g]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return out.flatten(1) if out.dim() > 2 else out

    def stages(self) -> list[list[nn.Parameter]]:
        params = dict(self.body.named_parameters())
        return [[params[n] for n in group] for group in self._stage_names]

    def freeze_stages(self, k: int) -> None:
        """Freeze the first ``k`` stages (``k = len(stages())`` freezes everything)."""
        n = len(self._stage_names)
        if not 0 <= k <= n:
            raise ModelError(f"backbone {self.spec!r} has {n} stages; cannot freeze {k}")
        for i, group in enumerate(self.stages()):
            for p in group:
                p.requires_grad_(i >= k)

    def train(self, mode: bool = True) -> Backbone:
        # A frozen BatchNorm must keep its running statistics: put it in eval mode whatever the caller asks.
        super().train(mode)
        if mode:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    ps = list(m.parameters(recurse=False))
                    if self.freeze_bn_stats or (ps and not any(p.requires_grad for p in ps)):
                        m.eval()
        return self


# -- registry -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Entry:
    build: Callable[..., Backbone]
    description: str
    options: dict[str, Option]


@dataclass(frozen=True)
class _Prefix:
    description: str
    options: dict[str, Option]
    build: Callable[..., Backbone] | None = None  # None: built here (timm, torchvision, file)
    path_names: bool = False  # NAME is a local path (hf:, st:, onnx:), resolved inside a model file's folder
    packaged: frozenset[str] = frozenset()  # names that mean a model a pip package carries, not a path
    takes_weights: bool = True  # a saved model's own weights can be loaded into it (not onnx:, frozen in its file)


_BUILTINS: dict[str, _Entry] = {}
_PREFIXES: dict[str, _Prefix] = {
    "timm": _Prefix("any timm model, e.g. timm:tf_efficientnet_lite0 (pip-packaged ImageNet weights offline)",
                    TIMM_OPTIONS),
    "torchvision": _Prefix("any torchvision classifier, e.g. torchvision:mobilenet_v2", TORCHVISION_OPTIONS),
    "file": _Prefix("a backbone or model saved by transferkit (safetensors with its architecture)", {}),
}
# Prefixes that other modules register (text and audio backbones), built by ``fn(name, weights=, pretrained=,
# online=, **options)``; imported lazily so `import transferkit` does not pull in transformers or onnxruntime.
_PLUGIN_MODULES = ("transferkit.models.text", "transferkit.models.audio")


BackboneBuilder = Callable[..., Backbone]


def register_backbone_prefix(
    prefix: str, description: str, options: dict[str, Option], *, path_names: bool = False,
    packaged: frozenset[str] | set[str] = frozenset(), takes_weights: bool = True,
) -> Callable[[BackboneBuilder], BackboneBuilder]:
    """Decorator: ``PREFIX:NAME`` specs are built by ``fn(NAME, weights=, pretrained=, online=, **options)``.

    ``options`` is the allow-list of ``backbone_kwargs`` keys (:mod:`transferkit.models.options`): nothing else
    reaches the builder. ``path_names``: NAME is a local folder or file (``packaged`` lists the names that mean a
    model a pip package carries instead).
    """

    def wrap(fn: Callable[..., Backbone]) -> Callable[..., Backbone]:
        if prefix in _PREFIXES:
            raise ValueError(f"backbone prefix {prefix!r} registered twice")
        _PREFIXES[prefix] = _Prefix(description, dict(options), fn, path_names, frozenset(packaged), takes_weights)
        return fn

    return wrap


def _ensure_plugins() -> None:
    import importlib

    for module in _PLUGIN_MODULES:
        importlib.import_module(module)


def register_backbone(
    name: str, description: str, options: dict[str, Option]
) -> Callable[[Callable[..., Backbone]], Callable[..., Backbone]]:
    """Decorator: make ``name`` a backbone spec. The builder takes keyword options only, each declared in
    ``options`` (the allow-list)."""

    def wrap(fn: Callable[..., Backbone]) -> Callable[..., Backbone]:
        if name in _BUILTINS:
            raise ValueError(f"backbone {name!r} registered twice")
        _BUILTINS[name] = _Entry(fn, description, dict(options))
        return fn

    return wrap


def list_backbones() -> dict[str, str]:
    """Built-in names and spec prefixes, with a one-line description each."""
    _ensure_plugins()
    out = {name: e.description for name, e in sorted(_BUILTINS.items())}
    out.update({f"{p}:NAME": e.description for p, e in _PREFIXES.items()})
    return out


def backbone_options(spec: str) -> dict[str, Option]:
    """The ``backbone_kwargs`` keys that ``spec``'s family accepts (its allow-list)."""
    _ensure_plugins()
    prefix, _, name = spec.partition(":")
    if not name:
        if spec not in _BUILTINS:
            raise ModelError(f"unknown backbone {spec!r}; known: {', '.join(list_backbones())}")
        return _BUILTINS[spec].options
    if prefix not in _PREFIXES:
        raise ModelError(f"unknown backbone prefix {prefix!r} in {spec!r}; use one of {', '.join(_PREFIXES)}")
    return _PREFIXES[prefix].options


def create_backbone(
    spec: str,
    *,
    weights: str | Path | None = None,
    pretrained: bool = False,
    online: bool = False,
    **kwargs: Any,
) -> Backbone:
    """Build the backbone ``spec`` names, with weights from a file, a package, or (``online``) the hub.

    ``kwargs`` are the family's options (``transferkit backbones``; :func:`backbone_options`): any other key is
    refused before a library sees it. Unless ``online``, nothing inside may reach the network
    (:func:`transferkit.network.offline`).

    Raises:
        ModelError: unknown name; an option the family does not have, or a bad value; weights that do not fit the
            architecture (the message lists the mismatched keys); ``pretrained=True`` with no offline source and
            ``online=False``.
    """
    if weights is not None and pretrained:
        raise ModelError("give either weights=PATH or pretrained=True, not both")
    if not isinstance(spec, str) or not spec:
        raise ModelError(f"a backbone spec is a non-empty string like 'lenet' or 'timm:NAME', got {spec!r}")
    kwargs = check_options(spec, kwargs, backbone_options(spec))
    with offline(not online):
        return _build(spec, weights=weights, pretrained=pretrained, online=online, **kwargs)


def backbone_for(spec: str, dataset: Any, **kwargs: Any) -> Backbone:
    """:func:`create_backbone` with what the data decides: an ``mlp`` reads vectors as wide as the dataset's.

    Every place that builds a backbone for a dataset (fit, the estimator, extract, measure, rank) goes through here,
    so the one data-shaped argument is set, and refused for data an ``mlp`` cannot read, in one way."""
    if spec == "mlp" and "in_features" not in kwargs:
        if getattr(dataset, "kind", None) != "vector":
            raise ConfigError(f"backbone 'mlp' reads feature vectors, but {getattr(dataset, 'domain', 'the data')!r} "
                              f"holds {getattr(dataset, 'kind', 'other')} data; pick a backbone for it "
                              "(`transferkit backbones`)")
        kwargs["in_features"] = _vector_width(dataset)
    return create_backbone(spec, **kwargs)


def _vector_width(dataset: Any) -> int:
    """Values per item of a vector dataset (its preprocessed cache, when it has one, is what the model reads)."""
    cache = getattr(dataset, "cache", None)
    if isinstance(cache, torch.Tensor) and cache.dim() == 2:
        return int(cache.shape[1])
    return int(torch.as_tensor(dataset.inputs[0]).reshape(-1).shape[0])


def _build(spec: str, *, weights: str | Path | None, pretrained: bool, online: bool, **kwargs: Any) -> Backbone:
    prefix, _, name = spec.partition(":")
    if not name:
        if pretrained:
            raise ModelError(f"built-in backbone {spec!r} has no pretrained weights; pass weights=PATH")
        try:
            bb = _BUILTINS[spec].build(**kwargs)
        except TypeError as exc:
            raise ModelError(f"backbone {spec!r}: bad option in model.backbone_kwargs ({exc})") from exc
        if weights is not None:
            _load_into(bb.body, None, _read(weights), str(weights))
        return bb
    if prefix == "timm":
        return _timm_backbone(name, weights=weights, pretrained=pretrained, online=online, **kwargs)
    if prefix == "torchvision":
        return _torchvision_backbone(name, weights=weights, pretrained=pretrained, online=online, **kwargs)
    if prefix == "file":
        if pretrained or weights is not None:
            raise ModelError("file:PATH already carries its weights; drop weights=/pretrained=")
        return load_backbone_file(name)
    build = _PREFIXES[prefix].build
    assert build is not None
    return build(name, weights=weights, pretrained=pretrained, online=online, **kwargs)


def check_input_kind(backbone: Backbone, dataset: Any) -> None:
    """Refuse data the backbone cannot read (texts into an image model, images into an MLP, ...)."""
    if dataset.kind != backbone.input_kind:
        raise ModelError(
            f"backbone {backbone.spec!r} reads {backbone.input_kind} inputs, but {dataset.domain!r} holds "
            f"{dataset.kind} data; pick a backbone for {dataset.kind} data (`transferkit backbones`)"
        )


# -- built-ins ----------------------------------------------------------------------------------
@register_backbone("lenet", "LeNet-style CNN for 28x28 grey digits (500-d features), trained from scratch",
                   LENET_OPTIONS)
def _lenet(in_chans: int = 1, dropout: float = 0.5) -> Backbone:
    from torchvision import transforms as T

    body = nn.Sequential()
    body.add_module(
        "conv1", nn.Sequential(nn.Conv2d(in_chans, 20, kernel_size=5), nn.MaxPool2d(2), nn.ReLU())
    )
    body.add_module(
        "conv2",
        nn.Sequential(nn.Conv2d(20, 50, kernel_size=5), nn.Dropout2d(dropout), nn.MaxPool2d(2), nn.ReLU()),
    )
    body.add_module("fc", nn.Sequential(nn.Flatten(), nn.Linear(50 * 4 * 4, 500), nn.ReLU(), nn.Dropout(dropout)))
    mode = "L" if in_chans == 1 else "RGB"
    mean, std = (0.5,) * in_chans, (0.5,) * in_chans
    transform = T.Compose([EnsureMode(mode), T.Resize((28, 28)), T.ToTensor(), T.Normalize(mean, std)])
    stages = [[n for n, _ in body.named_parameters() if n.startswith(s)] for s in ("conv1", "conv2", "fc")]
    return Backbone(body, 500, "lenet", transform, stages, {"in_chans": in_chans, "dropout": dropout})


@register_backbone("mlp", "MLP for feature vectors (needs in_features); hidden=256, depth=1, dropout=0.1",
                   MLP_OPTIONS)
def _mlp(in_features: int | None = None, hidden: int = 256, depth: int = 1, dropout: float = 0.1,
         standardize: str = "none") -> Backbone:
    """``standardize`` (``source`` or ``per-domain``, see :mod:`transferkit.data.standardize`) puts a
    :class:`Standardize` layer first, whose statistics ``fit`` sets from the source."""
    if in_features is None or in_features < 1:
        raise ModelError("backbone 'mlp' needs in_features (the width of the feature vectors)")
    layers: list[nn.Module] = [Standardize(in_features)] if standardize != "none" else []
    width = in_features
    for _ in range(depth):
        layers.append(nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)))
        width = hidden
    body = nn.Sequential(*layers)
    stages = [[n for n, _ in layer.named_parameters(prefix=str(i))] for i, layer in enumerate(body)]
    kwargs = {"in_features": in_features, "hidden": hidden, "depth": depth, "dropout": dropout}
    if standardize != "none":
        kwargs["standardize"] = standardize
    return Backbone(body, hidden, "mlp", None, stages, kwargs, input_kind="vector")


class Standardize(nn.Module):
    """``(x - mean) / std`` per feature with the source's statistics, kept as buffers (saved with the model)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("std", torch.ones(width))

    def set_statistics(self, mean: Any, std: Any) -> None:
        with torch.no_grad():
            self.mean.copy_(torch.as_tensor(mean, dtype=self.mean.dtype))
            self.std.copy_(torch.as_tensor(std, dtype=self.std.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


# -- timm and torchvision -----------------------------------------------------------------------
def _input_size(data_cfg: dict[str, Any], image_size: int | None, crop_pct: float | None = None) -> dict[str, Any]:
    """``image_size`` (backbone_kwargs) replaces the weights' resolution: small images, or CPU-sized training;
    ``crop_pct`` the evaluation centre crop's share (1.0: the whole image, where a detail near the border counts)."""
    if crop_pct is not None:
        if isinstance(crop_pct, bool) or not isinstance(crop_pct, (int, float)) or not 0.1 <= crop_pct <= 1.0:
            raise ModelError(f"backbone_kwargs.crop_pct must be a number in [0.1, 1], got {crop_pct!r}")
        data_cfg = {**data_cfg, "crop_pct": float(crop_pct)}
    if image_size is None:
        return data_cfg
    if not isinstance(image_size, int) or isinstance(image_size, bool) or not 8 <= image_size <= 4096:
        raise ModelError(f"backbone_kwargs.image_size must be an integer number of pixels (8-4096), got {image_size!r}")
    return {**data_cfg, "input_size": (data_cfg["input_size"][0], image_size, image_size)}


def _timm_backbone(
    name: str, *, weights: Any, pretrained: bool, online: bool, image_size: int | None = None,
    crop_pct: float | None = None, **kwargs: Any
) -> Backbone:
    import timm
    from timm.data import create_transform, resolve_model_data_config
    from timm.models import group_parameters

    spec = f"timm:{name}"
    if not timm.is_model(name):
        raise ModelError(f"timm has no model {name!r} (see timm.list_models()); spec {spec!r}")
    state = _resolve_weights(spec, weights, pretrained)
    use_hub = pretrained and state is None
    if use_hub and not online:
        raise ModelError(_no_offline_weights(spec))
    try:
        model = timm.create_model(name, pretrained=use_hub, **kwargs)
    except TypeError as exc:
        raise ModelError(f"backbone {spec!r}: bad option in model.backbone_kwargs ({exc})") from exc
    if state is not None:
        _load_into(model, lambda: model.reset_classifier(0), state, str(weights or f"package weights for {spec}"))
    model.reset_classifier(0)
    data_cfg = dict(resolve_model_data_config(model))
    if pretrained and spec in pkg.PACKAGE_WEIGHTS_PREPROCESS:
        data_cfg.update(pkg.PACKAGE_WEIGHTS_PREPROCESS[spec])
    data_cfg = _input_size(data_cfg, image_size, crop_pct)
    tf = create_transform(**data_cfg, is_training=False)
    transform = _with_mode(tf, "RGB" if data_cfg["input_size"][0] == 3 else "L")
    groups = group_parameters(model, model.group_matcher(coarse=True))
    stage_names = [groups[k] for k in sorted(groups)]
    bb = Backbone(model, model.num_features, spec, transform, stage_names, _with_size(kwargs, image_size, crop_pct))
    bb.data_config = data_cfg
    return bb


def _with_size(kwargs: dict[str, Any], image_size: int | None, crop_pct: float | None = None) -> dict[str, Any]:
    """The kwargs saved with the model: ``image_size`` and ``crop_pct`` included, so a reloaded model preprocesses
    alike."""
    extra = {k: v for k, v in (("image_size", image_size), ("crop_pct", crop_pct)) if v is not None}
    return {**kwargs, **extra}


def _torchvision_backbone(
    name: str, *, weights: Any, pretrained: bool, online: bool, image_size: int | None = None,
    crop_pct: float | None = None, **kwargs: Any
) -> Backbone:
    import torchvision
    from timm.data import create_transform

    spec = f"torchvision:{name}"
    try:
        builder = torchvision.models.get_model_builder(name)
    except ValueError as exc:
        raise ModelError(f"torchvision has no model {name!r} (see torchvision.models.list_models())") from exc
    state = _resolve_weights(spec, weights, pretrained)
    use_hub = pretrained and state is None
    if use_hub and not online:
        raise ModelError(_no_offline_weights(spec))
    try:
        model = builder(weights="DEFAULT" if use_hub else None, **kwargs)
    except TypeError as exc:
        raise ModelError(f"backbone {spec!r}: bad option in model.backbone_kwargs ({exc})") from exc
    out_features = _strip_last_linear(model, dry_run=True)
    # Headless weights make _load_into strip the classifier itself; strip it exactly once (a model with
    # several nn.Linear, e.g. mobilenet_v3 or convnext, would otherwise lose a second, inner layer).
    stripped: list[int] = []
    if state is not None:
        _load_into(
            model, lambda: stripped.append(_strip_last_linear(model)), state,
            str(weights or f"package weights for {spec}"),
        )
    if not stripped:
        _strip_last_linear(model)
    data_cfg = {
        "input_size": (3, 224, 224),
        "interpolation": "bilinear",
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "crop_pct": 0.875,
    }
    if pretrained and spec in pkg.PACKAGE_WEIGHTS_PREPROCESS:
        data_cfg.update(pkg.PACKAGE_WEIGHTS_PREPROCESS[spec])
    data_cfg = _input_size(data_cfg, image_size, crop_pct)
    transform = _with_mode(create_transform(**data_cfg, is_training=False), "RGB")
    top = [n for n, _ in model.named_children()]
    stage_names = _torchvision_stages(model, top)
    bb = Backbone(model, out_features, spec, transform, stage_names, _with_size(kwargs, image_size, crop_pct))
    bb.data_config = data_cfg
    return bb


def _torchvision_stages(model: nn.Module, top: list[str]) -> list[list[str]]:
    # Most torchvision CNNs keep their blocks in `features` (a Sequential); ResNets list them at top level.
    stages: list[list[str]] = []
    for child in top:
        mod = getattr(model, child)
        if child == "features" and isinstance(mod, nn.Sequential):
            for sub, m in mod.named_children():
                stages.append([f"features.{sub}.{n}" for n, _ in m.named_parameters()])
        else:
            stages.append([f"{child}.{n}" for n, _ in mod.named_parameters()])
    return [s for s in stages if s]


def _strip_last_linear(model: nn.Module, dry_run: bool = False) -> int:
    """Replace the model's final nn.Linear (its ImageNet classifier) by Identity; return its input width."""
    last_name, last = None, None
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            last_name, last = name, m
    if last is None or last_name is None:
        raise ModelError(f"cannot find a final nn.Linear classifier in {type(model).__name__} to replace")
    if not dry_run:
        parent = model
        *path, leaf = last_name.split(".")
        for p in path:
            parent = getattr(parent, p)
        setattr(parent, leaf, nn.Identity())
    return int(last.in_features)


def _with_mode(tf: Any, mode: str) -> Transform:
    from torchvision import transforms as T

    return T.Compose([EnsureMode(mode), tf])


def _no_offline_weights(spec: str) -> str:
    have = ", ".join(pkg.list_package_weights()) or "none installed"
    return (
        f"no offline pretrained weights for {spec!r}: pass weights=PATH (safetensors or a state dict), "
        f"install a package that carries them (offline weights available for: {have}), "
        "or allow downloads with --online"
    )


def _resolve_weights(spec: str, weights: Any, pretrained: bool) -> dict[str, torch.Tensor] | None:
    if weights is not None:
        return _read(weights)
    if pretrained:
        return pkg.package_state_dict(spec)
    return None


def _read(path: str | Path) -> dict[str, torch.Tensor]:
    return load_state_dict_file(path)


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in ("backbone.body.", "body."):
        if state and all(k.startswith(prefix) for k in state):
            return {k[len(prefix) :]: v for k, v in state.items()}
    if any(k.startswith("backbone.body.") for k in state):  # a whole transferkit model: keep the backbone part
        return {k[len("backbone.body.") :]: v for k, v in state.items() if k.startswith("backbone.body.")}
    return state


def _load_into(
    model: nn.Module, strip_head: Callable[[], Any] | None, state: dict[str, torch.Tensor], source: str
) -> None:
    """Load strictly into the full model, else (after removing its head) into the headless body."""
    state = _strip_prefixes(state)
    first = _try_load(model, state)
    if first is None:
        return
    if strip_head is not None:
        strip_head()
        if _try_load(model, state) is None:
            return
    missing, unexpected, shapes = first
    parts = []
    if missing:
        parts.append(f"missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if unexpected:
        parts.append(f"unexpected keys {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
    if shapes:
        parts.append(f"shape mismatches {shapes[:3]}")
    raise ModelError(
        f"weights {source} do not fit this architecture ({'; '.join(parts)}); "
        "was the file saved from a different model?"
    )


def _try_load(model: nn.Module, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str], list[str]] | None:
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        return missing, unexpected, shapes
    model.load_state_dict(state, strict=True)
    return None


# -- saving and loading transferkit files -------------------------------------------------------
# A transferkit file's safetensors header holds tensor names, shapes and a few short metadata strings: a few MiB at
# most even for large models. A claim of more is a damaged file or another format named .safetensors (a pickle, a
# zip), refused before anything is parsed.
MAX_HEADER_BYTES = 32 * 2**20
MAX_METADATA_VALUE = 2**20


def backbone_metadata(backbone: Backbone, model_path: str | Path | None = None) -> dict[str, str]:
    """Safetensors metadata that lets ``file:PATH`` rebuild the architecture without pickle.

    A backbone built from a local folder or file writes what rebuilding it needs into ``<stem>.backbone/`` beside
    ``model_path``, and the metadata names that folder relative to the model file: a saved model refers to nothing
    outside its own folder, so the folder can be moved, and a loader never follows a path out of it.
    """
    spec = backbone.spec
    if backbone.write_files is not None and model_path is not None:
        spec = _write_backbone_files(backbone, Path(model_path))
    return {META_SPEC: spec, META_KWARGS: json.dumps(backbone.kwargs, sort_keys=True)}


def files_folder(model_path: str | Path) -> Path:
    """Where a model file's backbone files live: ``model.safetensors`` -> ``model.backbone/`` beside it."""
    p = Path(model_path)
    return p.with_name(f"{p.stem}.backbone")


def _write_backbone_files(backbone: Backbone, model_path: Path) -> str:
    import shutil

    assert backbone.write_files is not None
    folder = files_folder(model_path)
    tmp, old = folder.with_name(f".{folder.name}.partial"), folder.with_name(f".{folder.name}.old")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        name = backbone.write_files(tmp)
        shutil.rmtree(old, ignore_errors=True)
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RunDirError(f"cannot write the backbone's files to {folder}: {exc.strerror or exc}") from exc
    prefix = backbone.spec.partition(":")[0]
    return f"{prefix}:{folder.name}" if name in ("", ".") else f"{prefix}:{folder.name}/{name}"


def save_backbone(backbone: Backbone, path: str | Path) -> Path:
    state = {f"body.{k}": v for k, v in backbone.body.state_dict().items()}
    return atomic_save_safetensors(state, Path(path), backbone_metadata(backbone, path))


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a safetensors file, after checking that the file is one (a bounded header, not a pickle)."""
    from safetensors import safe_open

    p = Path(path)
    if p.is_dir():
        raise ModelError(f"{p} is a folder; give the .safetensors file inside it (e.g. {p / 'model.safetensors'})")
    if not p.exists():
        raise ModelError(f"model file {p} does not exist")
    if not p.is_file():
        raise ModelError(f"{p} is not a regular file; give a .safetensors file that transferkit wrote")
    _check_header(p)
    try:
        with safe_open(str(p), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise ModelError(f"{p} is not a readable safetensors file: {exc}") from exc


def _check_header(p: Path) -> None:
    try:
        with p.open("rb") as fh:
            head = fh.read(9)
        size = p.stat().st_size
    except OSError as exc:
        raise ModelError(f"cannot read {p}: {exc.strerror or exc}") from exc
    n = int.from_bytes(head[:8], "little") if len(head) >= 8 else -1
    if n < 2 or head[8:9] != b"{":
        raise ModelError(f"{p} is not a safetensors file (a pickle, a zip or another format named like one?); "
                         "transferkit reads only safetensors model files")
    if n > MAX_HEADER_BYTES:
        raise ModelError(f"{p}: its safetensors header claims {n:,} bytes, more than the {MAX_HEADER_BYTES >> 20} MiB "
                         "a model file needs; the file is damaged or not one transferkit wrote")
    if 8 + n > size:
        raise ModelError(f"{p} is truncated: its header claims {n:,} bytes but the file has {size:,}")


def metadata_json(meta: dict[str, str], key: str, path: str | Path, expect: type, default: Any = None) -> Any:
    """One JSON value of a model file's metadata, parsed with bounds and checked for its type (ModelError else)."""
    text = meta.get(key)
    if text is None:
        if default is not None:
            return default
        raise ModelError(f"{path} is not a complete transferkit model file: its metadata lacks {key!r}")
    if len(text) > MAX_METADATA_VALUE:
        raise ModelError(f"{path}: metadata {key!r} is {len(text):,} characters long; a model file transferkit wrote "
                         "keeps it short")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ModelError(f"{path}: metadata {key!r} is not valid JSON ({str(exc)[:100]})") from None
    if not isinstance(value, expect):
        raise ModelError(f"{path}: metadata {key!r} must hold a JSON {expect.__name__}, got {type(value).__name__}")
    return value


# Set while the architecture a model file describes is built on the meta device (no memory), to compare with the
# tensors the file holds before anything real is allocated; holds the file's tensor count (the most layers an
# honest file can describe). Builders that read a model folder build from its config alone then.
_SKELETON: contextvars.ContextVar[int | None] = contextvars.ContextVar("transferkit_skeleton", default=None)


def skeleton_limit() -> int | None:
    """While a model file's architecture is checked (:func:`backbone_from_file`): the number of tensors it holds
    (folder builders refuse a config that describes more layers); None otherwise."""
    return _SKELETON.get()


@contextlib.contextmanager
def _skeleton(tensors: int) -> Iterator[None]:
    token = _SKELETON.set(tensors)
    try:
        with torch.device("meta"):
            yield
    finally:
        _SKELETON.reset(token)


def file_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """The name and shape of every tensor a safetensors file holds, read from its header (nothing loaded)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (safe_open has no iter)
    except Exception as exc:  # safetensors' own error types
        raise ModelError(f"{path} is not a readable safetensors file: {exc}") from exc


def check_fits_file(expected: dict[str, tuple[int, ...]], have: dict[str, tuple[int, ...]], path: str | Path,
                    what: str) -> None:
    """Every tensor of ``expected`` is in the file with the same shape: what the metadata describes is what the file
    holds, so building it allocates no more than the file's own size."""
    missing = [k for k in expected if k not in have]
    wrong = [f"{k}: {have[k]} vs {expected[k]}" for k in expected if k in have and have[k] != expected[k]]
    if missing or wrong:
        raise ModelError(
            f"{path}: the {what} its metadata describes does not match the tensors it holds (missing "
            f"{missing[:3]}{' ...' if len(missing) > 3 else ''}, other shapes {wrong[:3]}); the file is damaged, or "
            "its metadata was changed"
        )


def backbone_from_file(path: str | Path, meta: dict[str, str] | None = None) -> Backbone:
    """Rebuild the backbone a transferkit file names, with the file's weights.

    The file is data, whoever wrote it: its spec may name a built-in, a timm/torchvision architecture, a model a
    pip package carries, or files inside the model file's own folder (never a path out of it, never ``file:``);
    its options pass the family's allow-list (so never ``trust_remote_code``, ``pretrained`` or ``online``); and
    nothing it says can make the build reach the network.
    """
    path = Path(path)
    meta = read_metadata(path) if meta is None else meta
    spec = meta.get(META_SPEC)
    if not isinstance(spec, str) or not spec:
        raise ModelError(
            f"{path} does not say which architecture it holds (no {META_SPEC!r} metadata); "
            "use backbone=ARCH with weights=PATH instead of file:PATH"
        )
    kwargs = metadata_json(meta, META_KWARGS, path, dict, default={})
    _ensure_plugins()
    prefix, _, name = spec.partition(":")
    takes_weights = True
    if name:
        entry = _PREFIXES.get(prefix)
        if entry is None or prefix == "file":
            raise ModelError(
                f"{path}: its metadata names the backbone {spec[:200]!r}; a model file may name a built-in, a "
                f"{' / '.join(p for p in _PREFIXES if p != 'file')} architecture, never another file"
            )
        if entry.path_names and name not in entry.packaged:
            name = str(_inside(path, name))
        takes_weights = entry.takes_weights
    rebuilt = f"{prefix}:{name}" if name else spec
    try:
        kwargs = check_options(rebuilt, kwargs, backbone_options(rebuilt))  # before any key meets a parameter
        if takes_weights:  # the architecture on the meta device first: it must be what the file holds
            shapes = file_shapes(path)
            key = "backbone.body." if any(k.startswith("backbone.body.") for k in shapes) else "body."
            with _skeleton(len(shapes)):
                skeleton = create_backbone(rebuilt, online=False, **kwargs)
            expected = {key + k: tuple(v.shape) for k, v in skeleton.body.state_dict().items()}
            check_fits_file(expected, shapes, path, "backbone")
        return create_backbone(rebuilt, weights=path if takes_weights else None, online=False, **kwargs)
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}" if str(path) not in str(exc) else str(exc)) from exc


def _inside(model_path: Path, name: str) -> Path:
    """``name`` resolved in the model file's folder; refused where it leads out of it (``..``, absolute, a link)."""
    folder = model_path.resolve().parent
    if len(name) > 1000 or any(ord(c) < 32 for c in name):
        raise ModelError(f"{model_path}: its metadata names the backbone files {name[:100]!r}, not a file name")
    absolute = Path(name).is_absolute()
    target = Path(name) if absolute else (folder / name).resolve()
    if absolute or (target != folder and folder not in target.parents):
        where = "an absolute path" if absolute else f"a path outside the model file's folder {folder}"
        raise ModelError(
            f"{model_path}: its metadata points at {name[:200]!r}, {where}; a model file may only name files beside "
            "it (transferkit saves them in <name>.backbone/). If an older transferkit wrote this file, rebuild it "
            "with --backbone SPEC --weights THIS_FILE"
        )
    if not target.exists():
        raise ModelError(f"{model_path} needs its backbone files at {target}, which does not exist; copy the model "
                         "file together with its .backbone folder")
    _only_plain_files_inside(target, folder, model_path)
    return target


def _only_plain_files_inside(target: Path, folder: Path, model_path: Path, most: int = 10_000) -> None:
    """Every file under ``target`` is a regular file or folder that stays inside ``folder``: a link in the backbone
    folder that leads out of it, or a FIFO or device that a library would read forever, is refused."""
    import stat

    todo, seen = [target], 0
    while todo:
        p = todo.pop()
        seen += 1
        if seen > most:
            raise ModelError(f"{model_path}: its backbone folder {target} holds more than {most:,} entries")
        resolved = p.resolve()
        if resolved != folder and folder not in resolved.parents:
            raise ModelError(f"{model_path}: {p} is a link to {resolved}, outside the model file's folder {folder}")
        mode = p.stat().st_mode
        if stat.S_ISDIR(mode):
            todo.extend(p.iterdir())
        elif not stat.S_ISREG(mode):
            raise ModelError(f"{model_path}: {p} is not a regular file (a FIFO, socket or device)")


def load_backbone_file(path: str | Path) -> Backbone:
    """Rebuild a backbone from a transferkit safetensors file (a saved backbone or a whole model)."""
    return backbone_from_file(path)

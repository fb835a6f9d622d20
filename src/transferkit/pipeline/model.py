"""Step 2: the model a run trains (backbone from the data, head, bottleneck, ``init_from``), the loss terms it is
trained with, and the settings that are each valid but cannot work together."""

from __future__ import annotations

import numpy as np
import torch

from transferkit.adapt.auto import ENSV
from transferkit.adapt.methods import build_method, list_methods
from transferkit.config import RunConfig, bottleneck_width, field_problem
from transferkit.data.standardize import statistics
from transferkit.errors import ConfigError, ModelError
from transferkit.features import pick_device
from transferkit.finetune.convex_probe import solver_for
from transferkit.finetune.regularizers import bss, l2_sp
from transferkit.measure.selection import VALIDATORS
from transferkit.models.backbones import Standardize, backbone_for, check_input_kind, metadata_json, read_metadata
from transferkit.models.heads import META_CLASSES, META_TASKS, TransferModel
from transferkit.models.pretrained import load_state_dict_file
from transferkit.pipeline.data import RunData
from transferkit.tasks import Task, default_task, head_loss_terms, is_default
from transferkit.train.schedules import constant, dann_ramp
from transferkit.train.terms import LossTerm, source_cross_entropy, target_cross_entropy


def build_model(cfg: RunConfig, data: RunData) -> TransferModel:
    kwargs = dict(cfg.model.backbone_kwargs)
    if cfg.model.backbone == "mlp":
        kwargs["standardize"] = data.standardize[0]
    backbone = backbone_for(cfg.model.backbone, data.source_train, weights=cfg.model.weights,
                            pretrained=cfg.model.pretrained, online=cfg.online, **kwargs)
    first = next(iter(backbone.body.children()), None)
    if isinstance(first, Standardize):  # the source's statistics, saved with the model

        first.set_statistics(*statistics(np.asarray(data.source_train.inputs)))
    check_input_kind(backbone, data.source_train)
    model = TransferModel(backbone, data.classes, head_dropout=cfg.model.head_dropout,
                          bottleneck_dim=bottleneck_width(cfg, len(data.source_train)), tasks=data.tasks or None)
    if cfg.model.init_from is not None:
        _init_from(model, cfg.model.init_from)
    return model


def _init_from(model: TransferModel, path: str) -> None:
    """Start from an earlier run's model: its backbone and bottleneck must fit. A head is taken where the earlier model
    has a head of the same name and kind predicting the same classes (a regression head's weights are rescaled
    from the earlier source's target statistics to this one's); any other head starts fresh."""
    from pathlib import Path

    if not Path(path).is_file():
        raise ConfigError(f"model.init_from: {path} is not a file (give an earlier run's model.safetensors)")
    state = load_state_dict_file(path)
    own = model.state_dict()
    body = [k for k in own if k.startswith(("backbone.", "bottleneck."))]
    missing = [k for k in body if k not in state]
    wrong = [k for k in body if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or wrong:
        raise ConfigError(f"model.init_from: {path} does not fit this backbone and bottleneck (missing "
                          f"{missing[:3]}, other shapes {wrong[:3]}); use the same model.backbone and "
                          "model.bottleneck_dim as the run that wrote it")
    _check_finite(state, path)
    take = {k: state[k] for k in body}
    meta = read_metadata(path)
    if META_TASKS in meta:
        old = [Task.from_json(t) for t in metadata_json(meta, META_TASKS, path, list)]
    else:  # a model file from before model.heads: one classifier on its classes
        classes = metadata_json(meta, META_CLASSES, path, list, default=[])
        old = [default_task([str(c) for c in classes])]
    old_prefix = {t.name: ("head." if i == 0 else f"aux_heads.{t.name}.") for i, t in enumerate(old)}
    by_name = {t.name: t for t in old}
    for i, t in enumerate(model.tasks):
        was = by_name.get(t.name)
        if was is None or was.kind != t.kind or was.classes != t.classes or was.outputs != t.outputs:
            continue  # another task: this head starts fresh
        prefix = "head." if i == 0 else f"aux_heads.{t.name}."
        weights = {k[len(old_prefix[t.name]):]: v for k, v in state.items() if k.startswith(old_prefix[t.name])}
        if t.kind == "regression":
            weights = _restandardised(weights, was, t)
        take.update({prefix + k: v for k, v in weights.items() if prefix + k in own})
    model.load_state_dict(take, strict=False)


def _check_finite(state: dict[str, torch.Tensor], path: str) -> None:
    """Refuse a starting model with NaN or infinite weights now, naming the file: training from it would stop at the
    first step with advice to lower ``train.lr``, which cannot help."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ModelError(f"model.init_from: {path} holds NaN or infinite weights ({', '.join(bad[:3])}"
                         f"{', ...' if len(bad) > 3 else ''}); it cannot be trained from: start from a model of a "
                         "run that finished, or drop --init-from")


def _restandardised(weights: dict[str, torch.Tensor], was: Task, now: Task) -> dict[str, torch.Tensor]:
    """A regression head's weights re-expressed for ``now``'s standardisation: the same predictions in the target's
    unit (``y = (W f + b)·s_old + m_old = (W' f + b')·s_new + m_new``)."""
    s_old, m_old = torch.tensor(was.scale), torch.tensor(was.offset)
    s_new, m_new = torch.tensor(now.scale), torch.tensor(now.offset)
    out = dict(weights)
    if "fc.weight" in out:
        out["fc.weight"] = out["fc.weight"] * (s_old / s_new)[:, None]
    if "fc.bias" in out:
        out["fc.bias"] = (out["fc.bias"] * s_old + m_old - m_new) / s_new
    return out


def loss_terms(cfg: RunConfig, model: TransferModel) -> list[LossTerm]:
    """The source cross-entropy, the adaptation method's terms and, with labelled target items, their
    cross-entropy: L = L_src + λ(p) · L_transfer + λ_t · L_tgt."""
    a = cfg.adapt
    k = len(cfg.data.sources) if cfg.data.multi_source != "pooled" else 1
    transfer = build_method(a.method, model.feature_dim, len(model.classes), weight=a.weight, schedule=a.schedule,
                            options=a.options, num_sources=k, multi_source=cfg.data.multi_source)
    supervised = ([source_cross_entropy(cfg.train.label_smoothing)] if is_default(model.tasks) else
                  head_loss_terms(model.tasks, cfg.model.head_weighting, cfg.train.label_smoothing))
    terms = [*supervised, *transfer]
    if cfg.data.target_labels_per_class is not None:  # L = L_s + λ_t · L_t (+ λ · L_transfer)

        lam_t = (dann_ramp if cfg.adapt.target_schedule == "ramp" else constant)(cfg.adapt.target_weight)
        terms.append(target_cross_entropy(lam_t, cfg.train.label_smoothing))
    f = cfg.finetune
    if "l2-sp" in f.regularizers:
        heads = torch.nn.ModuleList([m for name, m in model.named_children() if name != "backbone"])
        terms.append(l2_sp(model.backbone, heads, alpha=f.l2_sp_alpha, beta=f.l2_sp_beta))
    if "bss" in f.regularizers:
        terms.append(bss(f.bss_weight, f.bss_k))
    return terms


def source_only_config(cfg: RunConfig) -> RunConfig:
    """``cfg`` without adaptation: the source-only model (the guard's twin, auto's reference)."""
    return cfg.model_copy(update={"adapt": cfg.adapt.model_copy(update={"method": "none"})})


def check_names(cfg: RunConfig, source: str = "config") -> None:
    """The method and validator names of ``adapt`` that the registries must know (``adapt.methods``,
    ``measure.selection``): checked here rather than in config.py, which sits below both; the same words as a
    config error."""
    a = cfg.adapt
    unknown = [m for m in a.auto_methods if m not in list_methods()]
    if unknown:
        raise ConfigError(field_problem("adapt.auto_methods",
                                        f"unknown method(s) {unknown}; choose from {sorted(list_methods())}",
                                        a.auto_methods, source))
    if a.auto_validator not in VALIDATORS and a.auto_validator != ENSV:
        raise ConfigError(field_problem("adapt.auto_validator", f"unknown validator {a.auto_validator!r}; choose "
                                        f"from {sorted([*VALIDATORS, ENSV])}", a.auto_validator, source))
    if a.guard_validator is not None and a.guard_validator not in VALIDATORS:
        raise ConfigError(field_problem("adapt.guard_validator", f"unknown validator {a.guard_validator!r}; choose "
                                        f"from {sorted(VALIDATORS)}", a.guard_validator, source))


def check_combination(cfg: RunConfig) -> None:
    """Settings that are each valid but cannot work together."""
    pick_device(cfg.train.device)
    solver_for(cfg)  # finetune.probe_solver lbfgs on a probe that is more than logistic regression
    method = list_methods().get(cfg.adapt.method)
    frozen = cfg.finetune.strategy == "linear-probe" and bottleneck_width(cfg) is None
    if method is not None and method.aligns_features and frozen:
        raise ConfigError(
            f"adapt.method {cfg.adapt.method!r} aligns features, but finetune.strategy 'linear-probe' freezes "
            "them: set model.bottleneck_dim (a trainable layer to align) or use another strategy"
        )
    if cfg.data.augment and cfg.finetune.strategy == "linear-probe":
        raise ConfigError("data.augment has no effect with finetune.strategy 'linear-probe' (its features are "
                          "extracted once, without augmentation): drop data.augment or fine-tune")
    needs_pairs = cfg.adapt.method != "none" or bottleneck_width(cfg) is not None
    if needs_pairs and cfg.data.batch_size < 2:
        raise ConfigError("data.batch_size must be >= 2 with an adaptation method or a bottleneck (batch statistics)")
    kind = cfg.model.primary_kind
    if kind != "classification" and method is not None and method.reads_classes:
        raise ConfigError(
            f"adapt.method {cfg.adapt.method!r} reads class predictions, but the primary head "
            f"{cfg.model.heads[0].name!r} is {kind}: use a feature-alignment method (dan, coral, dann, afn) or "
            "put a classification head first"
        )
    if cfg.data.target_labels_per_class is not None and not cfg.model.primary_reads_labels:
        raise ConfigError("data.target_labels_per_class picks labelled target items per class and trains the primary "
                          "head on their labels: the first of model.heads must be a classification head on `label`")
    if len(cfg.data.sources) == 1 and cfg.data.source_weighting != "none":
        raise ConfigError("data.source_weighting weighs several sources: give data.source a list of them")

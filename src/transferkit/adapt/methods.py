"""The registry of domain-adaptation methods: name -> the loss terms (and modules) it adds to the engine.

A method never trains anything itself. It returns :class:`~transferkit.train.engine.LossTerm` objects that
read the step's source/target features and logits; the engine adds ``λ(p) · L_transfer`` to the source
cross-entropy, trains the terms' modules (discriminators, adversarial heads) with the model, and saves them
in its checkpoints.

Example:
    >>> terms = build_method("coral", feature_dim=8, num_classes=3)
    >>> [t.name for t in terms]
    ['coral']
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from transferkit.adapt.augment import strong_augment
from transferkit.adapt.losses import (
    RandomizedMultilinearMap,
    afn_loss,
    bnm_loss,
    coral_loss,
    domain_bce,
    entropy_loss,
    entropy_weights,
    grad_reverse,
    jmmd2_unbiased,
    mcc_loss,
    mdd_loss,
    mmd2_linear,
    mmd2_unbiased,
    multilinear_map,
)
from transferkit.errors import ConfigError
from transferkit.models.heads import DomainDiscriminator
from transferkit.train.schedules import constant, dann_ramp
from transferkit.train.terms import LossTerm, StepOutputs


@dataclass(frozen=True)
class MethodSpec:
    name: str
    summary: str
    reference: str
    build: Callable[[int, int, dict[str, Any]], tuple[Callable[[StepOutputs], torch.Tensor], nn.Module | None]]
    default_weight: float = 1.0
    options: dict[str, Any] = field(default_factory=dict)
    aligns_features: bool = False  # its loss moves the features: needs something trainable under them
    # its loss reads the class predictions (a softmax, a margin, pseudo-labels): needs a classification head first
    reads_classes: bool = False
    # computed on the step's batch gathered from every process under `accelerate launch`; False for a mean over
    # items that uses more than the gathered tensors (self-training's strong views of the local inputs)
    global_batch: bool = True
    # several sources: average the loss between each source and the target (statistic matching: DAN, JAN, CORAL)
    per_source: bool = False
    # several sources: a builder of its own, (feature_dim, num_sources, options, multi_source) -> (fn, module)
    build_multi: Callable[[int, int, dict[str, Any], str], tuple[Callable[[StepOutputs], torch.Tensor],
                                                                 nn.Module | None]] | None = None

# What each option must be: a positive integer, a positive number, a number >= 0, a share in [0, 1], a flag.
MAX_COUNT = 65536
_OPTION_KINDS = {
    "kernels": "count", "hidden": "width", "random_dim": "count", "max_product_dim": "count",
    "kernel_mult": "positive", "temperature": "positive", "margin": "positive", "delta": "positive",
    "grl_max": "non-negative", "threshold": "share", "linear": "flag", "grl_ramp": "flag", "strong_views": "flag",
}


def _check_option(method: str, key: str, value: Any) -> None:
    kind = _OPTION_KINDS.get(key, "positive")
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    # bounded: a config is data, and a width of 10^12 would be a denial of service, not a setting
    count = isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_COUNT
    ok = {
        "count": count,
        "width": count or value == "auto",
        "positive": number and value > 0,
        "non-negative": number and value >= 0,
        "share": number and 0 <= value <= 1,
        "flag": isinstance(value, bool),
    }[kind]
    if not ok:
        want = {"count": f"an integer in 1..{MAX_COUNT}", "width": f"'auto' or an integer in 1..{MAX_COUNT}",
                "positive": "a finite number > 0",
                "non-negative": "a finite number >= 0",
                "share": "a number in [0, 1]", "flag": "true or false"}[kind]
        raise ConfigError(f"adapt.options.{key} of method {method!r} must be {want}, got {value!r}")


_METHODS: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec) -> None:
    """Make ``spec`` a method of ``adapt.method``: config validation, ``transferkit methods``, ``auto`` and the
    pipeline read the registry, so a new method is its builder plus this call (docs/architecture.md)."""
    if spec.name in _METHODS or spec.name in ("none", "auto"):
        raise ValueError(f"method {spec.name!r} is registered already (or reserved)")
    _METHODS[spec.name] = spec


def unregister_method(name: str) -> None:
    """Remove a method registered with :func:`register_method` (tests, plugins that unload)."""
    _METHODS.pop(name, None)


def list_methods() -> dict[str, MethodSpec]:
    return dict(_METHODS)


def build_method(
    name: str,
    feature_dim: int,
    num_classes: int,
    *,
    weight: float | None = None,
    schedule: str = "constant",
    options: dict[str, Any] | None = None,
    num_sources: int = 1,
    multi_source: str = "per-source",
) -> list[LossTerm]:
    """The loss terms of method ``name`` (none for ``"none"``), weighted by ``λ`` (``weight``) under ``schedule``.

    ``schedule`` is ``constant`` (λ throughout) or ``ramp`` (``λ · (2/(1+exp(-10p)) - 1)``). With ``num_sources``
    k > 1 (the step's source items carry their source index), ``dann`` trains one binary discriminator per source
    against the target (``multi_source="per-source"``, as MDAN, Zhao et al., 2018) or one (k+1)-way discriminator
    naming each item's domain (``"k+1-way"``; its ``MethodSpec.build_multi``), and the statistic-matching methods
    (``dan``, ``jan``, ``coral``: ``MethodSpec.per_source``) average their loss between each source and the target;
    every other method treats the sources as one pooled domain.
    """
    if name == "none":
        return []
    if name not in _METHODS:
        raise ConfigError(f"adapt.method: unknown method {name!r}; known: none, {', '.join(sorted(_METHODS))}")
    spec = _METHODS[name]
    opts = dict(spec.options)
    unknown = set(options or {}) - set(opts)
    if unknown:
        raise ConfigError(
            f"adapt.options: method {name!r} has no option(s) {sorted(unknown)}; it takes {sorted(opts) or 'none'}"
        )
    opts.update(options or {})
    for key, value in (options or {}).items():
        _check_option(name, key, value)
    lam = spec.default_weight if weight is None else weight
    if lam < 0:
        raise ConfigError(f"adapt.weight must be >= 0, got {lam}")
    if schedule == "constant":
        w: float | Callable[[float], float] = constant(lam)
    elif schedule == "ramp":
        w = dann_ramp(lam)
    else:
        raise ConfigError(f"adapt.schedule must be 'constant' or 'ramp', got {schedule!r}")
    if num_sources > 1 and spec.build_multi is not None:
        fn, module = spec.build_multi(feature_dim, num_sources, opts, multi_source)
    else:
        fn, module = spec.build(feature_dim, num_classes, opts)
        if num_sources > 1 and spec.per_source:
            fn = _per_source(fn)
    return [LossTerm(name, fn, w, module, global_batch=spec.global_batch)]


def _per_source(fn: Callable[[StepOutputs], torch.Tensor]) -> Callable[[StepOutputs], torch.Tensor]:
    """``fn`` between each source's items of the step and the target, averaged with the sources' weights (sources
    with fewer than two items in the step are left out of it: a statistic needs two)."""
    from dataclasses import replace

    def multi(out: StepOutputs) -> torch.Tensor:
        if out.source_domains is None:
            raise ConfigError("a per-source loss needs each source item's source index (several data.source)")
        total, norm = out.source_features.sum() * 0.0, 0.0
        for k in out.source_domains.unique().tolist():
            mask = out.source_domains == k
            if int(mask.sum()) < 2:
                continue
            w = float(out.source_weights[mask][0]) if out.source_weights is not None else 1.0
            part = replace(out, source_features=out.source_features[mask], source_logits=out.source_logits[mask],
                           source_labels=out.source_labels[mask])
            total, norm = total + w * fn(part), norm + w
        return total / norm if norm > 0 else total

    return multi


def _dann_multi(d: int, k: int, o: dict[str, Any], multi_source: str) -> tuple[Callable[[StepOutputs], torch.Tensor],
                                                                               nn.Module]:
    return (_dann_k_plus_1 if multi_source == "k+1-way" else _dann_per_source)(d, k, o)


def _dann_per_source(d: int, k: int, o: dict[str, Any]) -> tuple[Callable[[StepOutputs], torch.Tensor], nn.Module]:
    """DANN with one discriminator per source, each telling its source from the target; their losses averaged with
    the sources' weights. The sources are not asked to look alike, only each like the target."""
    discs = nn.ModuleList([DomainDiscriminator(d, hidden_width(o["hidden"], d)) for _ in range(k)])

    def fn(out: StepOutputs) -> torch.Tensor:
        ft, _ = _target(out)
        if out.source_domains is None:
            raise ConfigError("per-source discriminators need each source item's source index (several data.source)")
        coeff = _grl_coeff(o, out.progress)
        ft_rev = grad_reverse(ft, coeff)
        total, norm = ft.sum() * 0.0, 0.0
        for j in range(k):
            mask = out.source_domains == j
            if int(mask.sum()) < 2:
                continue  # BatchNorm in the discriminator needs two items
            w = float(out.source_weights[mask][0]) if out.source_weights is not None else 1.0
            fs = grad_reverse(out.source_features[mask], coeff)
            logits = discs[j](torch.cat([fs, ft_rev]))
            n = int(mask.sum())
            total, norm = total + w * domain_bce(logits[:n], logits[n:]), norm + w
        return total / norm if norm > 0 else total

    return fn, discs


def _dann_k_plus_1(d: int, k: int, o: dict[str, Any]) -> tuple[Callable[[StepOutputs], torch.Tensor], nn.Module]:
    """DANN with a (k+1)-way discriminator: it names each item's domain (source 0..k-1, or the target k) behind a
    gradient reversal layer, so the features lose what tells any source from the target and the sources apart."""
    disc = DomainDiscriminator(d, hidden_width(o["hidden"], d), outputs=k + 1)

    def fn(out: StepOutputs) -> torch.Tensor:
        ft, _ = _target(out)
        if out.source_domains is None:
            raise ConfigError("a (k+1)-way discriminator needs each source item's source index (several data.source)")
        f = grad_reverse(torch.cat([out.source_features, ft]), _grl_coeff(o, out.progress))
        domains = torch.cat([out.source_domains, torch.full((len(ft),), k, device=ft.device, dtype=torch.long)])
        ce = torch.nn.functional.cross_entropy(disc(f), domains, reduction="none")
        n = out.source_features.shape[0]
        w = torch.ones_like(ce)
        if out.source_weights is not None:
            w[:n] = out.source_weights
        # both sides count equally, as in the two-domain loss: the mean of the sources' and the target's mean
        return 0.5 * ((ce[:n] * w[:n]).sum() / w[:n].sum() + ce[n:].mean())

    return fn, disc


def _target(out: StepOutputs) -> tuple[torch.Tensor, torch.Tensor]:
    if out.target_features is None or out.target_logits is None:
        raise ConfigError("this adaptation method needs unlabelled target batches (set data.target)")
    return out.target_features, out.target_logits


# -- statistic matching ---------------------------------------------------------------------------
def _dan(d: int, c: int, o: dict[str, Any]) -> tuple[Callable[[StepOutputs], torch.Tensor], None]:
    estimator = mmd2_linear if o["linear"] else mmd2_unbiased

    def fn(out: StepOutputs) -> torch.Tensor:
        ft, _ = _target(out)
        return estimator(out.source_features, ft, o["kernels"], o["kernel_mult"])

    return fn, None


def _jan(d: int, c: int, o: dict[str, Any]) -> tuple[Callable[[StepOutputs], torch.Tensor], None]:
    def fn(out: StepOutputs) -> torch.Tensor:
        ft, lt = _target(out)
        return jmmd2_unbiased(
            [out.source_features, out.source_logits.softmax(1)], [ft, lt.softmax(1)], o["kernels"], o["kernel_mult"]
        )

    return fn, None


def _coral(d: int, c: int, o: dict[str, Any]) -> tuple[Callable[[StepOutputs], torch.Tensor], None]:
    def fn(out: StepOutputs) -> torch.Tensor:
        ft, _ = _target(out)
        return coral_loss(out.source_features, ft)

    return fn, None


# -- adversarial ----------------------------------------------------------------------------------
AUTO_WIDTH = (256, 1024)


def hidden_width(option: int | str, in_width: int) -> int:
    """A discriminator's (or MDD's adversarial head's) hidden width: ``auto`` is twice what it reads, clamped to
    256..1024. The papers' fixed 1,024 costs as much as a small backbone on its features; half of it on LeNet's
    500-d features lost 1-4 points of DANN on two of three digit tasks, while 256 on the ``mlp``'s 256-d features
    matched 1,024 (docs/defaults.md).

        >>> hidden_width("auto", 500), hidden_width("auto", 64), hidden_width("auto", 256), hidden_width(128, 500)
        (1000, 256, 512, 128)
    """
    if option != "auto":
        return int(option)
    low, high = AUTO_WIDTH
    return max(low, min(high, 2 * in_width))


def _grl_coeff(o: dict[str, Any], progress: float) -> float:
    return dann_ramp(o["grl_max"])(progress) if o["grl_ramp"] else float(o["grl_max"])


def _dann(d: int, c: int, o: dict[str, Any]) -> tuple[Callable[[StepOutputs], torch.Tensor], nn.Module]:
    disc = DomainDiscriminator(d, hidden_width(o["hidden"], d))

    def fn(out: StepOutputs) -> torch.Tensor:
        ft, _ = _target(out)
        coeff = _grl_coeff(o, out.progress)
        f = grad_reverse(torch.cat([out.source_features, ft]), coeff)
        logits = disc(f)
        n = out.source_features.shape[0]
        return domain_bce(logits[:n], logits[n:])

    return fn, disc


def _cdan_builder(use_entropy: bool) -> Callable[..., tuple[Callable[[StepOutputs], torch.Tensor], nn.Module]]:
    def build(d: int, c: int, o: dict[str, Any]) -> tuple[Callable[[StepOutputs], torch.Tensor], nn.Module]:
        randomized = d * c > o["max_product_dim"]
        mapper = RandomizedMultilinearMap(d, c, o["random_dim"]) if randomized else None
        in_dim = o["random_dim"] if randomized else d * c
        modules = nn.ModuleDict({"discriminator": DomainDiscriminator(in_dim, hidden_width(o["hidden"], in_dim))})
        if mapper is not None:
            modules["map"] = mapper

        def fn(out: StepOutputs) -> torch.Tensor:
            ft, lt = _target(out)
            f = torch.cat([out.source_features, ft])
            logits = torch.cat([out.source_logits, lt])
            g = logits.softmax(1).detach()
            h = mapper(f, g) if mapper is not None else multilinear_map(f, g)
            dlog = modules["discriminator"](grad_reverse(h, _grl_coeff(o, out.progress)))
            n = out.source_features.shape[0]
            if use_entropy:
                return domain_bce(dlog[:n], dlog[n:], entropy_weights(logits[:n]), entropy_weights(logits[n:]))
            return domain_bce(dlog[:n], dlog[n:])

        return fn, modules

    return build


def _mdd(d: int, c: int, o: dict[str, Any]) -> tuple[Callable[[StepOutputs], torch.Tensor], nn.Module]:
    h = hidden_width(o["hidden"], d)
    adv_head = nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Dropout(0.5), nn.Linear(h, c))

    def fn(out: StepOutputs) -> torch.Tensor:
        ft, lt = _target(out)
        coeff = _grl_coeff(o, out.progress)
        adv = adv_head(grad_reverse(torch.cat([out.source_features, ft]), coeff))
        n = out.source_features.shape[0]
        return mdd_loss(out.source_logits, adv[:n], lt, adv[n:], o["margin"])

    return fn, adv_head


# -- prediction-based -----------------------------------------------------------------------------
def _on_target_logits(loss: Callable[..., torch.Tensor], *keys: str):
    def build(d: int, c: int, o: dict[str, Any]) -> tuple[Callable[[StepOutputs], torch.Tensor], None]:
        def fn(out: StepOutputs) -> torch.Tensor:
            _, lt = _target(out)
            return loss(lt, *(o[k] for k in keys))

        return fn, None

    return build


def _afn(d: int, c: int, o: dict[str, Any]) -> tuple[Callable[[StepOutputs], torch.Tensor], None]:
    def fn(out: StepOutputs) -> torch.Tensor:
        ft, _ = _target(out)
        return afn_loss(out.source_features, o["delta"]) + afn_loss(ft, o["delta"])

    return fn, None


def _self_training(d: int, c: int, o: dict[str, Any]) -> tuple[Callable[[StepOutputs], torch.Tensor], None]:
    """Pseudo-labels from the step's own target predictions (the weak view); with ``strong_views`` and image
    inputs, FixMatch: the loss is taken on a strongly augmented copy of the target batch instead."""

    def fn(out: StepOutputs) -> torch.Tensor:
        _, lt = _target(out)
        conf, pseudo = lt.detach().softmax(1).max(1)
        mask = (conf >= o["threshold"]).float()
        x = out.target_inputs
        if o["strong_views"] and out.model is not None and x is not None and x.ndim == 4:
            lt = out.model(strong_augment(x))[1]
        ce = torch.nn.functional.cross_entropy(lt, pseudo, reduction="none")
        return (ce * mask).mean()

    return fn, None


_ADV = {"hidden": "auto", "grl_max": 1.0, "grl_ramp": True}  # hidden: see hidden_width
_KERNEL = {"kernels": 5, "kernel_mult": 2.0}
for _spec in (
    MethodSpec("dan", "multi-kernel MMD between source and target features", "Long et al., ICML 2015", _dan,
               options={**_KERNEL, "linear": False}, aligns_features=True, per_source=True),
    MethodSpec("jan", "joint MMD over features and softmax outputs", "Long et al., ICML 2017", _jan, options=_KERNEL,
               aligns_features=True, reads_classes=True, per_source=True),
    MethodSpec("coral", "match second-order feature statistics (Deep CORAL)", "Sun & Saenko, ECCV-W 2016", _coral,
               aligns_features=True, per_source=True),
    MethodSpec("dann", "domain discriminator behind a gradient reversal layer", "Ganin et al., JMLR 2016", _dann,
               options=dict(_ADV), aligns_features=True, build_multi=_dann_multi),
    MethodSpec("cdan", "discriminator conditioned on features ⊗ predictions", "Long et al., NeurIPS 2018",
               _cdan_builder(False), options={**_ADV, "max_product_dim": 4096, "random_dim": 1024},
               aligns_features=True, reads_classes=True),
    MethodSpec("cdan+e", "CDAN with entropy weighting of certain samples", "Long et al., NeurIPS 2018",
               _cdan_builder(True), options={**_ADV, "max_product_dim": 4096, "random_dim": 1024},
               aligns_features=True, reads_classes=True),
    MethodSpec("mdd", "margin disparity discrepancy with an adversarial head", "Zhang et al., ICML 2019", _mdd,
               options={"hidden": 1024, "grl_max": 0.1, "grl_ramp": True, "margin": 4.0}, aligns_features=True,
               reads_classes=True),
    MethodSpec("mcc", "minimum class confusion on target predictions", "Jin et al., ECCV 2020",
               _on_target_logits(mcc_loss, "temperature"), options={"temperature": 2.5}, reads_classes=True),
    MethodSpec("bnm", "batch nuclear-norm maximisation on target predictions", "Cui et al., CVPR 2020",
               _on_target_logits(bnm_loss), reads_classes=True),
    MethodSpec("entropy", "target entropy minimisation", "Grandvalet & Bengio, NeurIPS 2005",
               _on_target_logits(entropy_loss), default_weight=0.1, reads_classes=True),
    MethodSpec("afn", "stepwise adaptive feature norm", "Xu et al., ICCV 2019", _afn, default_weight=0.05,
               options={"delta": 1.0}, aligns_features=True),
    MethodSpec("self-training", "confident target pseudo-labels, learnt on strongly augmented images",
               "Lee, ICML-W 2013; Sohn et al. (FixMatch), NeurIPS 2020", _self_training,
               options={"threshold": 0.9, "strong_views": True}, global_batch=False, reads_classes=True),
):
    register_method(_spec)

"""Fine-tuning strategies as (config -> which parameters train, at which LR).

- ``full``: everything trains; the backbone's LR is ``lr · backbone_lr_mult`` (the classic 0.1x), and with
  ``layer_decay`` stage ``i`` of ``n`` gets a further ``decay^(n - i)`` (the stage next to the head decays
  once, the stem ``n`` times), as in BEiT/ELECTRA-style layer-wise LR decay.
- ``partial``: the first ``freeze_stages`` stages are frozen (their BatchNorm statistics too).
- ``linear-probe``: the whole backbone is frozen; the experiment extracts its features once and trains
  the head on the cache (:mod:`transferkit.features`).
- ``lp-ft``: a linear-probe phase, then ``full`` from that head (Kumar et al., ICLR 2022): a good head
  first keeps full fine-tuning from distorting the pretrained features.
- ``lora``: PEFT low-rank adapters on the attention projections train with the head; every other backbone
  weight stays frozen (:mod:`transferkit.finetune.lora`).

Example:
    >>> from transferkit.config import FinetuneConfig
    >>> from transferkit.models.backbones import create_backbone
    >>> from transferkit.models.heads import TransferModel
    >>> model = TransferModel(create_backbone("lenet"), [str(i) for i in range(10)])
    >>> groups = param_groups(model, FinetuneConfig(strategy="full", layer_decay=0.5), lr=1.0)
    >>> [g["lr"] for g in groups]
    [0.125, 0.25, 0.5, 1.0]
"""

from __future__ import annotations

from typing import Any

from transferkit.config import FinetuneConfig
from transferkit.errors import ConfigError
from transferkit.finetune.lora import add_lora
from transferkit.models.heads import TransferModel


def apply_strategy(model: TransferModel, cfg: FinetuneConfig, phase: str = "ft") -> None:
    """Set ``requires_grad`` for the strategy (``phase`` "lp" of lp-ft freezes like a linear probe)."""
    backbone = model.backbone
    backbone.freeze_bn_stats = cfg.freeze_bn
    n = len(backbone.stages())
    for p in model.parameters():
        p.requires_grad_(True)
    if cfg.strategy == "linear-probe" or (cfg.strategy == "lp-ft" and phase == "lp"):
        backbone.freeze_stages(n)
    elif cfg.strategy == "partial":
        if cfg.freeze_stages > n:
            raise ConfigError(
                f"finetune.freeze_stages = {cfg.freeze_stages}, but backbone {backbone.spec!r} has {n} stages"
            )
        backbone.freeze_stages(cfg.freeze_stages)
    elif cfg.strategy == "lora":
        add_lora(backbone, r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout, targets=cfg.lora_targets)


def param_groups(model: TransferModel, cfg: FinetuneConfig, lr: float) -> list[dict[str, Any]]:
    """Optimiser groups for the trainable parameters: one per backbone stage, then the head."""
    stages = model.backbone.stages()
    n = len(stages)
    groups: list[dict[str, Any]] = []
    for i, params in enumerate(stages):
        trainable = [p for p in params if p.requires_grad]
        if not trainable:
            continue
        stage_lr = lr * cfg.backbone_lr_mult
        if cfg.layer_decay is not None:
            stage_lr *= cfg.layer_decay ** (n - i)
        groups.append({"params": trainable, "lr": stage_lr, "name": f"backbone.stage{i}"})
    head = [p for name, p in model.named_parameters() if not name.startswith("backbone.") and p.requires_grad]
    groups.append({"params": head, "lr": lr, "name": "head"})
    return groups

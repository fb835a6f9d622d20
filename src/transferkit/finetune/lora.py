"""LoRA through PEFT: low-rank adapters on a backbone's attention projections, merged back before saving.

Only the adapters (and the head) train, so a 22M-parameter encoder fine-tunes with ~1% of its weights moving
(Hu et al., ICLR 2022). The adapters are injected into the backbone's own modules
(``peft.inject_adapter_in_model``), not wrapped in a ``PeftModel``, so the backbone keeps its interface and
every adaptation method works on its features unchanged. Before a model is saved the adapters are merged into
the weights they adapt (``W + BA``) and removed: the saved file has the original architecture and loads with
``file:PATH`` like any other backbone, with no PEFT needed at inference.

Example:
    >>> from torch import nn
    >>> from transferkit.models.backbones import Backbone
    >>> body = nn.Sequential()
    >>> body.add_module("query", nn.Linear(4, 4)); body.add_module("value", nn.Linear(4, 4))
    >>> bb = Backbone(body, 4, "toy", None, [["query.weight", "query.bias"], ["value.weight", "value.bias"]])
    >>> add_lora(bb, r=2)
    ['query', 'value']
    >>> sorted(n for n, p in bb.named_parameters() if p.requires_grad)[:2]
    ['body.query.lora_A.default.weight', 'body.query.lora_B.default.weight']
    >>> merge_lora(bb); sorted(n for n, _ in bb.body.named_parameters())
    ['query.bias', 'query.weight', 'value.bias', 'value.weight']
"""

from __future__ import annotations

import re

from torch import nn

from transferkit.errors import ConfigError
from transferkit.models.backbones import Backbone

# The LoRA paper adapts W_q and W_v; these are their names across transformers / timm families.
DEFAULT_TARGETS = frozenset({"query", "value", "q_proj", "v_proj", "q_lin", "v_lin", "q", "v", "qkv", "c_attn"})
_LORA_PART = re.compile(r"\.lora_(?:A|B|embedding_A|embedding_B|magnitude_vector)\.[^.]+")


def has_lora(backbone: Backbone) -> bool:
    return any("lora_" in n for n, _ in backbone.body.named_parameters())


def lora_targets(body: nn.Module, targets: list[str] | None = None) -> list[str]:
    """The last names of the Linear layers to adapt: ``targets`` if given (checked), else the attention q/v."""
    linear = {name.rsplit(".", 1)[-1] for name, m in body.named_modules() if isinstance(m, nn.Linear) and name}
    if targets:
        missing = [t for t in targets if t not in linear]
        if missing:
            raise ConfigError(f"finetune.lora_targets {missing} name no nn.Linear layer of the backbone; its Linear "
                              f"layers are named: {', '.join(sorted(linear)[:20])}")
        return list(targets)
    found = sorted(linear & DEFAULT_TARGETS)
    if not found:
        raise ConfigError(
            "finetune.strategy 'lora' found no attention projections (query/value, q_proj/v_proj, qkv, ...) in "
            f"this backbone; name the Linear layers to adapt in finetune.lora_targets (it has: "
            f"{', '.join(sorted(linear)[:20]) or 'no Linear layers'})"
        )
    return found


def add_lora(backbone: Backbone, r: int = 8, alpha: float = 16.0, dropout: float = 0.1,
             targets: list[str] | None = None) -> list[str]:
    """Inject adapters (once), freeze every other backbone weight; return the adapted layer names."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as exc:
        raise ConfigError("finetune.strategy 'lora' needs PEFT: `pip install 'transferkit[text]'`") from exc
    if has_lora(backbone):  # already injected (a second call for the same model): only re-freeze
        chosen = sorted({n.split(".lora_", 1)[0].rsplit(".", 1)[-1] for n, _ in backbone.body.named_parameters()
                         if ".lora_" in n})
    else:
        chosen = lora_targets(backbone.body, targets)
        old = backbone._stage_names
        config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=chosen)
        inject_adapter_in_model(config, backbone.body)
        _restage(backbone, old)
    for name, p in backbone.body.named_parameters():
        p.requires_grad_("lora_" in name)
    return chosen


def merge_lora(backbone: Backbone) -> None:
    """Fold every adapter into its layer (``W + BA``) and put the plain layer back; a no-op without adapters."""
    if not has_lora(backbone):
        return
    from peft.tuners.lora import LoraLayer

    old = backbone._stage_names
    for name, module in list(backbone.body.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent = backbone.body.get_submodule(name.rsplit(".", 1)[0]) if "." in name else backbone.body
            setattr(parent, name.rsplit(".", 1)[-1], module.get_base_layer())
    _restage(backbone, old)


def _base_name(name: str) -> str:
    return _LORA_PART.sub("", name).replace(".base_layer.", ".")


def _restage(backbone: Backbone, old: list[list[str]]) -> None:
    """Keep partial freezing / layer-wise LR working: each parameter joins the stage of the layer it adapts."""
    stage_of = {n: i for i, group in enumerate(old) for n in group}
    groups: list[list[str]] = [[] for _ in old] or [[]]
    for name, _ in backbone.body.named_parameters():
        groups[stage_of.get(_base_name(name), len(groups) - 1)].append(name)
    backbone._stage_names = [g for g in groups if g]

"""An inference-only copy of a backbone: BatchNorm folded into the convolution before it, no gradients.

Extraction never touches the caller's backbone (so it stays trainable: running it under inference mode or
changing its memory format in place would turn its parameters into inference tensors), and the copy runs
faster: an eval-mode BatchNorm is an affine map that can be merged into the preceding convolution's weights.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every eval-mode ``BatchNorm2d`` fed only by a ``Conv2d`` into that conv, in place; return the count.

    The graph comes from ``torch.fx`` with Conv2d/BatchNorm2d kept as leaves; a model fx cannot trace is left
    as it is. timm's ``BatchNormAct2d`` (a BatchNorm2d followed by dropout and activation) keeps its
    dropout and activation.
    """
    if not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        return 0  # nothing to fold (transformers, MLPs): do not trace at all
    import torch.fx

    class _Tracer(torch.fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return isinstance(m, (nn.Conv2d, nn.BatchNorm2d)) or super().is_leaf_module(m, qualname)

    try:
        graph = _Tracer().trace(model)
    except Exception:  # data-dependent control flow: run unfolded
        return 0
    mods = dict(model.named_modules())
    folded = 0
    with torch.no_grad():
        for node in graph.nodes:
            bn = mods.get(node.target) if node.op == "call_module" else None
            if not isinstance(bn, nn.BatchNorm2d) or not node.args:
                continue
            src = node.args[0]
            conv = mods.get(src.target) if isinstance(src, torch.fx.Node) and src.op == "call_module" else None
            if not isinstance(conv, nn.Conv2d) or len(src.users) != 1:
                continue
            if bn.running_mean is None or bn.running_var is None or conv.out_channels != bn.num_features:
                continue
            weight = bn.weight if bn.affine else torch.ones_like(bn.running_var)
            shift = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
            scale = weight / torch.sqrt(bn.running_var + bn.eps)
            bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
            conv.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
            conv.bias = nn.Parameter((bias - bn.running_mean) * scale + shift, requires_grad=False)
            rest = nn.Sequential(getattr(bn, "drop", nn.Identity()), getattr(bn, "act", nn.Identity()))
            parent, _, leaf = str(node.target).rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, leaf, rest)
            folded += 1
    return folded


def inference_copy(module: nn.Module, device: torch.device, *, channels_last: bool, fold: bool = True) -> nn.Module:
    """A frozen eval-mode deep copy on ``device``: BatchNorm folded, channels-last for images."""
    with torch.no_grad():  # not inference_mode: the copy's tensors stay ordinary tensors
        model = copy.deepcopy(module).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        if fold:
            fold_batchnorm(getattr(model, "body", model))
        model.to(device)
        if channels_last:
            model.to(memory_format=torch.channels_last)
    return model

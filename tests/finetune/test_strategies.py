"""Fine-tuning strategies: which parameters train, at which LR, and frozen BatchNorm statistics stay frozen."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from transferkit.config import FinetuneConfig
from transferkit.errors import ConfigError
from transferkit.finetune import apply_strategy, param_groups
from transferkit.models.backbones import create_backbone
from transferkit.models.heads import TransferModel

CLASSES = [str(i) for i in range(10)]


def _lenet_model() -> TransferModel:
    torch.manual_seed(0)
    return TransferModel(create_backbone("lenet"), CLASSES)


@pytest.fixture(scope="module")
def resnet_model() -> TransferModel:
    torch.manual_seed(0)
    return TransferModel(create_backbone("torchvision:resnet18"), ["a", "b", "c"])


def _trainable_per_stage(model: TransferModel) -> list[bool]:
    """For every backbone stage: True when all its parameters train, False when none do (mixed fails)."""
    out = []
    for group in model.backbone.stages():
        flags = {p.requires_grad for p in group}
        assert len(flags) == 1, "a stage is half frozen"
        out.append(flags.pop())
    return out


def _head_trains(model: TransferModel) -> bool:
    return all(p.requires_grad for p in model.head.parameters())


# -- requires_grad -----------------------------------------------------------------------------
def test_full_trains_everything() -> None:
    model = _lenet_model()
    apply_strategy(model, FinetuneConfig(strategy="full"))
    assert all(p.requires_grad for p in model.parameters())


def test_linear_probe_freezes_every_backbone_parameter_but_not_the_head() -> None:
    model = _lenet_model()
    apply_strategy(model, FinetuneConfig(strategy="linear-probe"))
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert _head_trains(model)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"head.fc.weight", "head.fc.bias"}


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_partial_freezes_exactly_the_first_k_stages(k: int) -> None:
    model = _lenet_model()
    apply_strategy(model, FinetuneConfig(strategy="partial", freeze_stages=k))
    assert _trainable_per_stage(model) == [i >= k for i in range(3)]
    assert _head_trains(model)


def test_partial_on_resnet(resnet_model: TransferModel) -> None:
    n = len(resnet_model.backbone.stages())
    assert n == 6  # conv1, bn1, layer1..layer4
    apply_strategy(resnet_model, FinetuneConfig(strategy="partial", freeze_stages=4))
    assert _trainable_per_stage(resnet_model) == [False] * 4 + [True] * 2
    body = resnet_model.backbone.body
    assert not body.layer2[1].conv2.weight.requires_grad and body.layer3[0].conv1.weight.requires_grad


def test_freeze_stages_beyond_the_backbone_is_a_config_error() -> None:
    model = _lenet_model()
    with pytest.raises(ConfigError, match=r"finetune.freeze_stages = 4, but backbone 'lenet' has 3 stages"):
        apply_strategy(model, FinetuneConfig(strategy="partial", freeze_stages=4))


def test_lp_ft_phases_and_reapplying_unfreezes() -> None:
    model = _lenet_model()
    cfg = FinetuneConfig(strategy="lp-ft")
    apply_strategy(model, cfg, phase="lp")
    assert not any(p.requires_grad for p in model.backbone.parameters()) and _head_trains(model)
    apply_strategy(model, cfg, phase="ft")
    assert all(p.requires_grad for p in model.parameters())
    # a later strategy starts from scratch: nothing stays frozen from the previous call
    apply_strategy(model, FinetuneConfig(strategy="linear-probe"))
    apply_strategy(model, FinetuneConfig(strategy="partial", freeze_stages=1))
    assert _trainable_per_stage(model) == [False, True, True]


# -- LR groups ---------------------------------------------------------------------------------
def _lrs(groups: list[dict]) -> dict[str, float]:
    return {g["name"]: g["lr"] for g in groups}


def test_param_groups_default_is_one_lr() -> None:
    model = _lenet_model()
    apply_strategy(model, FinetuneConfig())
    groups = param_groups(model, FinetuneConfig(), lr=0.01)
    assert _lrs(groups) == {"backbone.stage0": 0.01, "backbone.stage1": 0.01, "backbone.stage2": 0.01, "head": 0.01}


def test_param_groups_backbone_lr_mult_and_layer_decay() -> None:
    model = _lenet_model()
    cfg = FinetuneConfig(strategy="full", backbone_lr_mult=0.5, layer_decay=0.8)
    apply_strategy(model, cfg)
    groups = param_groups(model, cfg, lr=0.1)
    # stage i of n=3 gets lr * mult * decay^(3 - i); the head keeps lr
    assert _lrs(groups) == pytest.approx(
        {"backbone.stage0": 0.0256, "backbone.stage1": 0.032, "backbone.stage2": 0.04, "head": 0.1}
    )
    assert _lrs(param_groups(model, FinetuneConfig(backbone_lr_mult=0.1), lr=0.1)) == pytest.approx(
        {"backbone.stage0": 0.01, "backbone.stage1": 0.01, "backbone.stage2": 0.01, "head": 0.1}
    )


def test_param_groups_cover_each_trainable_parameter_once() -> None:
    model = _lenet_model()
    cfg = FinetuneConfig(strategy="partial", freeze_stages=1, layer_decay=0.5)
    apply_strategy(model, cfg)
    groups = param_groups(model, cfg, lr=1.0)
    assert _lrs(groups) == {"backbone.stage1": 0.25, "backbone.stage2": 0.5, "head": 1.0}  # stage0 is frozen
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters() if p.requires_grad}
    # the groups build an optimizer and the LRs reach it
    opt = torch.optim.SGD(groups, lr=123.0)
    assert [g["lr"] for g in opt.param_groups] == [0.25, 0.5, 1.0]


def test_param_groups_of_a_linear_probe_hold_only_the_head() -> None:
    model = _lenet_model()
    cfg = FinetuneConfig(strategy="linear-probe")
    apply_strategy(model, cfg)
    groups = param_groups(model, cfg, lr=0.3)
    assert [g["name"] for g in groups] == ["head"]
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in model.head.parameters()}


# -- BatchNorm ---------------------------------------------------------------------------------
def _batchnorms(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]


def test_frozen_batchnorm_stays_in_eval_mode_and_keeps_its_statistics(resnet_model: TransferModel) -> None:
    model = resnet_model
    apply_strategy(model, FinetuneConfig(strategy="partial", freeze_stages=3))  # conv1, bn1, layer1 frozen
    model.train()
    body = model.backbone.body
    frozen_bns = [*_batchnorms(body.layer1), body.bn1]
    live_bns = _batchnorms(body.layer2) + _batchnorms(body.layer4)
    assert frozen_bns and all(not m.training for m in frozen_bns)
    assert live_bns and all(m.training for m in live_bns)
    assert model.training and model.head.training

    before_frozen = [m.running_mean.clone() for m in frozen_bns]
    before_live = [m.running_mean.clone() for m in live_bns]
    model(torch.randn(2, 3, 32, 32))
    assert all(torch.equal(b, m.running_mean) for b, m in zip(before_frozen, frozen_bns, strict=True))
    assert not any(torch.equal(b, m.running_mean) for b, m in zip(before_live, live_bns, strict=True))

    model.eval()
    assert not any(m.training for m in _batchnorms(body))
    apply_strategy(model, FinetuneConfig(strategy="full"))
    model.train()
    assert all(m.training for m in _batchnorms(body))  # unfrozen: statistics update again


def test_linear_probe_puts_every_batchnorm_in_eval_mode(resnet_model: TransferModel) -> None:
    apply_strategy(resnet_model, FinetuneConfig(strategy="linear-probe"))
    resnet_model.train()
    assert not any(m.training for m in _batchnorms(resnet_model))
    apply_strategy(resnet_model, FinetuneConfig(strategy="full"))


def test_freeze_bn_keeps_running_statistics_while_weights_train() -> None:
    import torch

    from transferkit.config import FinetuneConfig
    from transferkit.finetune import apply_strategy
    from transferkit.models.backbones import create_backbone
    from transferkit.models.heads import TransferModel

    model = TransferModel(create_backbone("torchvision:mobilenet_v2", image_size=32), ["a", "b"])
    apply_strategy(model, FinetuneConfig(strategy="full", freeze_bn=True))
    model.train()
    bns = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    assert all(p.requires_grad for p in model.backbone.parameters())  # the affine weights still train
    before = bns[0].running_mean.clone()
    model(torch.randn(4, 3, 32, 32) * 5)
    assert torch.equal(bns[0].running_mean, before)
    apply_strategy(model, FinetuneConfig(strategy="full"))
    model.train()
    assert all(m.training for m in bns)

"""The inference copy: same features as the original backbone, faster graph, original left untouched."""

from __future__ import annotations

import pytest
import torch

from transferkit.models.backbones import create_backbone
from transferkit.models.inference import fold_batchnorm, inference_copy


@pytest.mark.parametrize("spec", ["lenet", "torchvision:mobilenet_v2", "timm:tf_efficientnet_lite0", "timm:resnet18"])
def test_folded_copy_matches_the_original(spec: str) -> None:
    torch.manual_seed(0)
    bb = create_backbone(spec)
    # give BatchNorm non-trivial statistics so that folding is really exercised
    for m in bb.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    bb.eval()
    size = 28 if spec == "lenet" else 64
    x = torch.randn(2, 1 if spec == "lenet" else 3, size, size)
    with torch.no_grad():
        expected = bb(x)
    copy = inference_copy(bb, torch.device("cpu"), channels_last=True)
    with torch.inference_mode():
        got = copy(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4)
    assert bb.training is False and all(p.requires_grad for p in bb.parameters())  # original untouched


def test_fold_counts_conv_bn_pairs() -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                              torch.nn.Conv2d(4, 4, 3), torch.nn.BatchNorm2d(4)).eval()
    assert fold_batchnorm(net) == 2
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())

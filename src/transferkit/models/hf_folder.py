"""Building a transformers model from a local folder, for text and audio alike: with the folder's weights, or from
its config alone when a saved transferkit model brings the weights; ``trust_remote_code`` only inside
:func:`~transferkit.models.pretrained.trusting_remote_code`, never from a file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transferkit.errors import ModelError
from transferkit.models.backbones import skeleton_limit
from transferkit.models.pretrained import remote_code_trusted

# Files that hold a transformers model's weights: a folder without any is built from its config alone, and only when
# the caller brings the weights (a saved transferkit model keeps config and tokenizer beside it, weights inside it).
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")


def has_weight_files(folder: str | Path) -> bool:
    """Whether a transformers folder holds weights (else it can only be built from its config)."""
    return any((Path(folder) / f).exists() for f in _WEIGHT_FILES)


def from_folder(auto_class: Any, folder: str, *, online: bool, weights: Any) -> Any:
    """``auto_class`` built from ``folder``: with its weights, or from its config alone when the folder has none and
    the caller brings ``weights`` (a saved transferkit model). ``trust_remote_code`` only inside
    :func:`~transferkit.models.pretrained.trusting_remote_code`, never from a file."""
    trust = remote_code_trusted()
    limit = skeleton_limit()
    if limit is not None or (weights is not None and Path(folder).is_dir() and not has_weight_files(folder)):
        from transformers import AutoConfig

        if limit is not None:
            _check_layer_counts(Path(folder), limit)
        config = AutoConfig.from_pretrained(folder, local_files_only=not online, trust_remote_code=trust)
        return auto_class.from_config(config, trust_remote_code=trust)
    return auto_class.from_pretrained(folder, local_files_only=not online, trust_remote_code=trust)


def _check_layer_counts(folder: Path, tensors: int) -> None:
    """A config that describes more layers than the model file holds tensors is not that file's architecture (and
    building 10⁵ layers takes minutes even without memory): refused before anything is built."""
    import json

    path = folder / "config.json"
    try:
        text = path.read_text(encoding="utf-8") if path.is_file() and path.stat().st_size <= 2**20 else "{}"
        config = json.loads(text)
    except (OSError, ValueError, RecursionError):
        return  # transformers reports an unreadable config itself
    stack = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(value, int) and not isinstance(value, bool) and "layer" in str(key) and value > tensors:
                    raise ModelError(f"{path}: {key} = {value:,}, but the model file holds {tensors:,} tensors in all; "
                                     "the config does not describe this model")
                stack.append(value)

"""Backbone options: the allow-list of what a config, a flag or a model file may set on a backbone.

``model.backbone_kwargs`` and the ``transferkit.backbone_kwargs`` metadata of a saved model reach a backbone
builder -- and through it timm, torchvision, transformers, sentence-transformers or onnxruntime -- only where
the builder's family declares the key here, with its type and range. Everything else is refused before any
library sees it. A deny-list of known dangers (``trust_remote_code``, ``pretrained_cfg_overlay``, ``token``,
``cache_dir``, ...) would miss the next keyword a library adds; an allow-list cannot.

Keys that a run sets by its own fields (``weights``, ``pretrained``, ``online``) are never options, and code in a
model folder runs only when the user passes ``--trust-remote-code`` on the command line
(:func:`transferkit.models.pretrained.trusting_remote_code`), never because a file says so.

Example:
    >>> check_options("mlp", {"in_features": 8, "hidden": 16}, MLP_OPTIONS)
    {'in_features': 8, 'hidden': 16}
    >>> check_options("mlp", {"hidden": -5}, MLP_OPTIONS)
    Traceback (most recent call last):
    ...
    transferkit.errors.ModelError: backbone 'mlp': backbone_kwargs.hidden must be an integer in 1..65536, got -5
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from transferkit.errors import ModelError

Kind = Literal["int", "float", "str", "bool", "ints"]

# Keys people reach for that are deliberately not options, with the reason the error gives.
_NOT_OPTIONS = {
    "trust_remote_code": "code stored in a model folder runs only when you pass --trust-remote-code on the command "
    "line (or use transferkit.models.pretrained.trusting_remote_code in Python), never because a config or model "
    "file asks for it",
    "online": "downloads are allowed only by --online on the command line (or `online: true` in the run config)",
    "pretrained": "use model.pretrained (or --pretrained), not a backbone option",
    "weights": "use model.weights (or --weights), not a backbone option",
}


@dataclass(frozen=True)
class Option:
    """One allowed key: its type, range or choices, and whether ``null`` is allowed."""

    kind: Kind
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] | None = None
    nullable: bool = False
    max_items: int = 64
    pattern: str | None = None

    def describe(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        what = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
                "ints": f"a list of up to {self.max_items} integers"}[self.kind]
        if self.low is not None and self.high is not None:
            what += f" in {_num(self.low)}..{_num(self.high)}"
        return what + (" (or null)" if self.nullable else "")

    def check(self, value: Any) -> Any:
        """The value, normalised (an integer where a number is asked for becomes a float); ValueError if refused."""
        if value is None:
            if self.nullable:
                return None
            raise ValueError
        if self.choices is not None:
            if isinstance(value, bool) or value not in self.choices:
                raise ValueError
            return value
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise ValueError
            return value
        if self.kind == "str":
            if not isinstance(value, str) or len(value) > 256:
                raise ValueError
            if self.pattern and not re.fullmatch(self.pattern, value):
                raise ValueError
            return value
        if self.kind == "ints":
            if not isinstance(value, (list, tuple)) or not 1 <= len(value) <= self.max_items:
                raise ValueError
            return [self._number(v, integer=True) for v in value]
        return self._number(value, integer=self.kind == "int")

    def _number(self, value: Any, *, integer: bool) -> int | float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError
        if integer and not isinstance(value, int):
            raise ValueError
        if not integer:
            value = float(value)
            if not math.isfinite(value):
                raise ValueError
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise ValueError
        return value


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def check_options(spec: str, kwargs: Mapping[str, Any], allowed: Mapping[str, Option]) -> dict[str, Any]:
    """``kwargs`` with each value checked against ``allowed``; a :class:`ModelError` naming the key otherwise."""
    if not isinstance(kwargs, Mapping):
        raise ModelError(f"backbone {spec!r}: backbone_kwargs must be a mapping of option names to values")
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        if not isinstance(key, str) or key not in allowed:
            reason = _NOT_OPTIONS.get(key) if isinstance(key, str) else None
            known = ", ".join(allowed) or "none"
            if reason:
                raise ModelError(f"backbone {spec!r}: {key!r} is not allowed in backbone_kwargs: {reason}")
            raise ModelError(f"backbone {spec!r} has no option {key!r} in backbone_kwargs; its options: {known}")
        option = allowed[key]
        try:
            out[key] = option.check(value)
        except (ValueError, TypeError):
            shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
            raise ModelError(
                f"backbone {spec!r}: backbone_kwargs.{key} must be {option.describe()}, got {shown}"
            ) from None
    return out


# -- shared option sets --------------------------------------------------------------------------
DROPOUT = Option("float", 0.0, 0.99)
SECONDS = Option("float", 0.05, 600.0)
SAMPLE_RATE = Option("int", 1000, 384000)
MAX_LENGTH = Option("int", 2, 8192)
IMAGE_SIZE = Option("int", 8, 4096)
CROP_PCT = Option("float", 0.1, 1.0)

MLP_OPTIONS = {
    "in_features": Option("int", 1, 10_000_000, nullable=True),  # None: the builder says where it comes from
    "hidden": Option("int", 1, 65536),
    "depth": Option("int", 1, 64),
    "dropout": DROPOUT,
    "standardize": Option("str", choices=("none", "source", "per-domain")),
}
LENET_OPTIONS = {"in_chans": Option("int", choices=(1, 3)), "dropout": DROPOUT}
TIMM_OPTIONS = {
    "image_size": IMAGE_SIZE, "crop_pct": CROP_PCT, "drop_rate": DROPOUT, "drop_path_rate": DROPOUT,
}
TORCHVISION_OPTIONS = {"image_size": IMAGE_SIZE, "crop_pct": CROP_PCT, "dropout": DROPOUT}

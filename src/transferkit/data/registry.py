"""Where named datasets register: ``@register_dataset(name, description)`` on a loader ``(split, root) ->
DomainDataset``; :mod:`transferkit.data.catalog` looks names up (``load_dataset("mnist-5k", split="train")``).
Built-in datasets ship inside pip packages (no download); benchmark datasets read a local root
(``TRANSFERKIT_DATA``) and check SHA-256.
Anything that is not a registered name is treated as a path (see :func:`transferkit.data.load_data`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from transferkit.data.domain import DomainDataset

DatasetLoader = Callable[[str, "Path | None"], DomainDataset]

_REGISTRY: dict[str, tuple[DatasetLoader, str]] = {}

DATA_ROOT_ENV = "TRANSFERKIT_DATA"


def register_dataset(name: str, description: str) -> Callable[[DatasetLoader], DatasetLoader]:
    """Decorator: make ``name`` loadable by :func:`load_dataset`."""

    def wrap(fn: DatasetLoader) -> DatasetLoader:
        if name in _REGISTRY:
            raise ValueError(f"dataset {name!r} is registered twice")
        _REGISTRY[name] = (fn, description)
        return fn

    return wrap


def data_root(root: str | Path | None = None) -> Path | None:
    """The benchmark data root: the argument, else ``$TRANSFERKIT_DATA``, else None."""
    if root is not None:
        return Path(root)
    env = os.environ.get(DATA_ROOT_ENV)
    return Path(env) if env else None


def registered() -> dict[str, tuple[DatasetLoader, str]]:
    """The datasets registered so far (:mod:`transferkit.data.catalog` first imports the modules that register the
    built-in ones)."""
    return _REGISTRY

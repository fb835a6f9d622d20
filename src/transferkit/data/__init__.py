"""Datasets of every modality as :class:`DomainDataset`; ``load_data`` resolves a name or a path.

Example:
    >>> ds = load_data("digits-uci", split="test")
    >>> ds.domain, ds.num_classes, ds.kind
    ('digits-uci', 10, 'image')
"""

from __future__ import annotations

from pathlib import Path

from transferkit.data.catalog import is_registered
from transferkit.data.catalog import list_datasets as list_datasets
from transferkit.data.catalog import load_dataset as load_dataset
from transferkit.data.domain import DomainDataset as DomainDataset
from transferkit.data.domain import PairedLoader as PairedLoader
from transferkit.data.domain import check_label_sets as check_label_sets
from transferkit.data.formats import data_formats, format_for
from transferkit.data.limits import regular_file_problem
from transferkit.errors import DataError

__all__ = ["DomainDataset", "PairedLoader", "check_label_sets", "list_datasets", "load_data", "load_dataset"]


def load_data(spec: str, split: str = "train", root: str | Path | None = None) -> DomainDataset:
    """A registered name (``mnist-5k``), an ImageFolder tree, a ``.npz``/``.npy`` array file, a ``.csv``, or a
    text table (JSON lines, or a CSV with a ``text`` column; options after ``?``, see :mod:`transferkit.data.text`),
    or speech: a folder of WAV files, or a CSV listing them (:mod:`transferkit.data.audio`).

    Feature files (:mod:`transferkit.data.tabular`): ``.csv`` / ``.tsv`` without a ``text`` column, ``.parquet``,
    MATLAB ``.mat`` (``?x=KEY&y=KEY`` names the arrays) and svmlight ``.svm`` / ``.svmlight`` / ``.libsvm``. A run
    config names data by one string, so their options ride on it after ``?`` as well (``&`` between them), and
    ``{split}`` in such a path becomes the split's name
    (one svmlight file per split)::

        feats.parquet?domain=books&label=sentiment     # CSV / Parquet: label, domain, domain_column
        amazon/books_{split}.svmlight?n_features=5000  # svmlight: n_features=N, zero_based=auto|true|false

    An svmlight file's width is the largest feature index it holds, so give every file of a task the same
    ``n_features``; a source and a target of different widths are refused by
    :func:`~transferkit.data.tabular.check_feature_widths`.

    Which loader reads a path is decided by the format records of :mod:`transferkit.data.formats`, tried in order.

    Raises:
        DataError: the name is unknown and no such path exists, or the file cannot be read.
    """
    if is_registered(spec):
        return load_dataset(spec, split, root)
    data_format = format_for(spec, split)
    if data_format is not None:
        return data_format.load(spec, split)
    path = Path(spec).expanduser()
    problem = regular_file_problem(path)
    if path.exists() and not path.is_dir() and problem is not None:  # a FIFO or a device: say so
        raise DataError(f"data {path} {problem}")
    if path.is_file():
        readable = "; ".join(f.description for f in data_formats())
        raise DataError(f"{path}: unsupported data file type {path.suffix.lower()!r}; readable: {readable}")
    known = ", ".join(list_datasets())
    raise DataError(f"data {spec!r} is neither a known dataset ({known}) nor an existing path")

"""Datasets of every modality as :class:`DomainDataset`; ``load_data`` resolves a name or a path.

Example:
    >>> ds = load_data("digits-uci", split="test")
    >>> ds.domain, ds.num_classes, ds.kind
    ('digits-uci', 10, 'image')
"""

from __future__ import annotations

from pathlib import Path

from transferkit.data.catalog import list_datasets as list_datasets
from transferkit.data.catalog import load_dataset as load_dataset
from transferkit.data.domain import DomainDataset as DomainDataset
from transferkit.data.domain import PairedLoader as PairedLoader
from transferkit.data.domain import check_label_sets as check_label_sets
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

    Raises:
        DataError: the name is unknown and no such path exists, or the file cannot be read.
    """
    from transferkit.data.catalog import is_registered

    if is_registered(spec):
        return load_dataset(spec, split, root)
    from transferkit.data.audio import is_audio_spec, load_audio_spec

    if is_audio_spec(spec):  # a folder of WAV files or a CSV listing them (options after ``?``)
        return load_audio_spec(spec, split)
    features = _load_feature_file(spec, split)  # CSV / Parquet / svmlight feature files; None: anything else
    if features is not None:
        return features
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
        raise DataError(
            f"{path}: unsupported data file type {suffix!r}; use a folder, .npz, .npy, .csv, .tsv, .parquet, "
            ".mat, .svm / .svmlight / .libsvm, or a text table (.jsonl)"
        )
    known = ", ".join(list_datasets())
    raise DataError(f"data {spec!r} is neither a known dataset ({known}) nor an existing path")


FEATURE_OPTIONS = {"table": ("label", "domain", "domain_column"), "svmlight": ("n_features", "zero_based"),
                   "mat": ("x", "y")}


def _load_feature_file(spec: str, split: str) -> DomainDataset | None:
    """A CSV / TSV feature table, Parquet or svmlight file read with the options after ``?``; None for anything else
    (a text table, an array file, a folder), which ``load_data`` resolves as before."""
    from transferkit.data import tabular

    file_part, _, query = spec.partition("?")
    path = Path(file_part.replace("{split}", split)).expanduser()
    suffix = path.suffix.lower()
    if suffix in tabular.SVMLIGHT_SUFFIXES:
        kind = "svmlight"
    elif suffix in (".csv", ".tsv", ".parquet"):
        kind = "table"
    elif suffix == ".mat":
        kind = "mat"
    else:
        return None
    if not path.exists():
        split_note = f" (the file of split {split!r})" if "{split}" in file_part else ""
        raise DataError(f"data file {path}{split_note} does not exist; check the path")
    if suffix in (".csv", ".tsv") and path.is_file():
        from transferkit.data.text import is_text_table

        if is_text_table(path):
            return None
    options = _feature_options(spec, query, FEATURE_OPTIONS[kind])
    if kind == "svmlight":
        return tabular.load_svmlight(path, split, **options)
    if kind == "mat":
        return tabular.load_mat(path, split, **options)  # type: ignore[arg-type]
    table = {"label_column": options.get("label", tabular.DEFAULT_LABEL_COLUMN),
             "domain_column": options.get("domain_column", tabular.DOMAIN_COLUMN), "domain": options.get("domain")}
    if suffix == ".parquet":
        return tabular.load_parquet(path, split, **table)
    return tabular.load_csv(path, split=split, **table)


def _feature_options(spec: str, query: str, allowed: tuple[str, ...]) -> dict[str, object]:
    """``n_features=5000&zero_based=true`` -> typed keyword arguments; an unknown or malformed option is an error."""
    options: dict[str, object] = {}
    for part in query.split("&") if query else []:
        key, eq, value = part.partition("=")
        if not eq or key not in allowed or not value:
            raise DataError(
                f"data {spec!r}: options after '?' look like key=value (joined by '&') with key one of "
                f"{', '.join(allowed)}; got {part!r}"
            )
        if key in options:
            raise DataError(f"data {spec!r}: option {key!r} is given twice")
        options[key] = value
    if "n_features" in options:
        text = str(options["n_features"])
        if not text.isdigit() or int(text) < 1:
            raise DataError(f"data {spec!r}: n_features must be a positive whole number (the width), got {text!r}")
        options["n_features"] = int(text)
    if "zero_based" in options:
        flag = str(options["zero_based"]).lower()
        if flag not in ("auto", "true", "false"):
            raise DataError(f"data {spec!r}: zero_based must be auto, true or false, got {options['zero_based']!r}")
        options["zero_based"] = "auto" if flag == "auto" else flag == "true"
    return options

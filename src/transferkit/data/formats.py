"""Which loader reads a path: one record per data format, asked in order by :func:`transferkit.data.load_data`.

A :class:`DataFormat` says, cheaply and without reading the whole file, whether it reads a spec (``sniff``) and
then reads it (``load``). Formats are tried in registration order, so a more specific one (a CSV listing audio
files) comes before a more general one (any CSV of features). A new format is one record here, or
``register_format`` from outside, and its loader module; ``load_data`` does not change.

    >>> [f.name for f in data_formats()][:3]
    ['audio', 'feature-file', 'text-table']
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from transferkit.data import tabular
from transferkit.data.audio import is_audio_spec, load_audio_spec
from transferkit.data.images import load_image_folder
from transferkit.data.tabular import SVMLIGHT_SUFFIXES, load_arrays
from transferkit.data.text import is_text_table, load_text_table, parse_spec
from transferkit.errors import DataError

if TYPE_CHECKING:
    from transferkit.data.domain import DomainDataset


@dataclass(frozen=True)
class DataFormat:
    name: str
    sniff: Callable[[str, str], bool]  # (spec, split) -> whether this format reads it; must be cheap
    load: Callable[[str, str], DomainDataset]  # (spec, split) -> the dataset; raises DataError on a bad file
    description: str  # what it reads, for the error that lists every readable format


_FORMATS: list[DataFormat] = []


def register_format(record: DataFormat, *, before: str | None = None) -> None:
    """Add a format, tried after the ones registered so far, or just ``before`` the named one."""
    if any(f.name == record.name for f in _FORMATS):
        raise ValueError(f"data format {record.name!r} is registered already")
    names = [f.name for f in _FORMATS]
    if before is not None and before not in names:
        raise ValueError(f"no data format {before!r} to insert before; known: {', '.join(names)}")
    _FORMATS.insert(names.index(before) if before is not None else len(_FORMATS), record)


def data_formats() -> tuple[DataFormat, ...]:
    return tuple(_FORMATS)


def format_for(spec: str, split: str) -> DataFormat | None:
    """The first format that reads ``spec``, or None."""
    return next((f for f in _FORMATS if f.sniff(spec, split)), None)


# --- the built-in formats, in the order they are tried -------------------------------------------------------------

def _path(spec: str, split: str = "") -> Path:
    file_part = spec.partition("?")[0]
    return Path(file_part.replace("{split}", split) if split else file_part).expanduser()


def _sniff_audio(spec: str, split: str) -> bool:
    return is_audio_spec(spec)


def _load_audio(spec: str, split: str) -> DomainDataset:
    return load_audio_spec(spec, split)


FEATURE_OPTIONS = {"table": ("label", "domain", "domain_column"), "svmlight": ("n_features", "zero_based"),
                   "mat": ("x", "y")}
_TABLE_SUFFIXES = (".csv", ".tsv", ".parquet")


def _feature_file_kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix in SVMLIGHT_SUFFIXES:
        return "svmlight"
    if suffix in _TABLE_SUFFIXES:
        return "table"
    return "mat" if suffix == ".mat" else None


def _sniff_feature_file(spec: str, split: str) -> bool:
    """A feature suffix, unless the file is a CSV / TSV with a ``text`` column (a text table). A missing file is
    claimed here so that its error names the file (and the split, for ``{split}`` paths)."""
    path = _path(spec, split)
    kind = _feature_file_kind(path)
    if kind is None:
        return False
    if path.suffix.lower() in (".csv", ".tsv") and path.is_file():
        return not is_text_table(path)
    return True


def _load_feature_file(spec: str, split: str) -> DomainDataset:
    file_part, _, query = spec.partition("?")
    path = _path(spec, split)
    if not path.exists():
        split_note = f" (the file of split {split!r})" if "{split}" in file_part else ""
        raise DataError(f"data file {path}{split_note} does not exist; check the path")
    kind = _feature_file_kind(path)
    assert kind is not None  # sniffed
    options = feature_options(spec, query, FEATURE_OPTIONS[kind])
    if kind == "svmlight":
        return tabular.load_svmlight(path, split, **options)  # type: ignore[arg-type]
    if kind == "mat":
        return tabular.load_mat(path, split, **options)  # type: ignore[arg-type]
    table = {"label_column": options.get("label", tabular.DEFAULT_LABEL_COLUMN),
             "domain_column": options.get("domain_column", tabular.DOMAIN_COLUMN), "domain": options.get("domain")}
    if path.suffix.lower() == ".parquet":
        return tabular.load_parquet(path, split, **table)  # type: ignore[arg-type]
    return tabular.load_csv(path, split=split, **table)  # type: ignore[arg-type]


def feature_options(spec: str, query: str, allowed: tuple[str, ...]) -> dict[str, object]:
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


def _sniff_text_table(spec: str, split: str) -> bool:
    """JSON lines or a CSV with a ``text`` column; any other spec with options after ``?`` is read as a text table
    too, whose option parser names the options it knows."""
    if "?" in spec:
        return True
    path = _path(spec)
    if not path.is_file():
        return False

    return is_text_table(path)


def _load_text_table(spec: str, split: str) -> DomainDataset:
    file_part, options = parse_spec(spec)
    return load_text_table(Path(file_part).expanduser(), split, **options)


def _load_image_folder(spec: str, split: str) -> DomainDataset:
    return load_image_folder(_path(spec), split)


def _sniff_arrays(spec: str, split: str) -> bool:
    path = _path(spec)
    return path.is_file() and path.suffix.lower() in (".npz", ".npy")


def _load_arrays(spec: str, split: str) -> DomainDataset:
    return load_arrays(_path(spec), split)


register_format(DataFormat("audio", _sniff_audio, _load_audio,
                           "a folder of WAV files, or a CSV whose path column lists them"))
register_format(DataFormat("feature-file", _sniff_feature_file, _load_feature_file,
                           ".csv / .tsv without a text column, .parquet, .mat, .svm / .svmlight / .libsvm"))
register_format(DataFormat("text-table", _sniff_text_table, _load_text_table,
                           "JSON lines, or a CSV / TSV with a text column"))
register_format(DataFormat("image-folder", lambda spec, split: _path(spec).is_dir(), _load_image_folder,
                           "a folder of class folders (optionally inside split folders)"))
register_format(DataFormat("arrays", _sniff_arrays, _load_arrays,
                           ".npz / .npy arrays: images (N, H, W[, C]) or feature vectors (N, D)"))

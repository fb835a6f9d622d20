"""Arrays and feature tables as :class:`DomainDataset`: ``.npz`` / ``.npy`` (vectors or uint8 images), ``.csv``,
``.parquet`` and svmlight / libsvm text files.

``.npz`` keys: ``x`` (inputs), optional ``y`` (labels) and ``classes`` (names); or per-split keys ``x_<split>``
and ``y_<split>`` (``x_train``, ``y_train``, ``x_test``, ...). uint8 arrays of 3 or 4 dimensions are images
``(N, H, W)`` / ``(N, H, W, C)``; everything else is a 2-D array of feature vectors, stored as float32.

A CSV or Parquet file is a table with named columns; the label column (default ``label``), an optional ``split``
column and an optional ``domain`` column are taken out, every other column is a numeric feature. Both formats
share the column and row rules (and the label mapping), so a table means the same whichever format holds it.

An svmlight file holds one ``label index:value ...`` line per item. Its width is not written in the file: it is
the largest feature index present, so two files of one task can disagree; ``n_features`` fixes it, and
:func:`check_feature_widths` names both files when a source and a target differ.

Over 500 lines as one module: five file formats sharing the label, split, width and index checks.
"""

from __future__ import annotations

import csv
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.data.domain import (
    MAX_EXACT_FLOAT,
    DomainDataset,
    Kind,
    canonical_int,
    integer_classes,
    integer_positions,
    label_range_error,
    numeric_labels,
)
from transferkit.data.limits import allocating, array_bytes, check_allocation, regular_file_problem
from transferkit.data.text import first_undecodable_line
from transferkit.errors import DataError

ALL_SPLITS = "all"
SPLIT_COLUMN = "split"
DOMAIN_COLUMN = "domain"
DEFAULT_LABEL_COLUMN = "label"
SVMLIGHT_SUFFIXES = (".svm", ".svmlight", ".libsvm")


# -- numpy arrays ------------------------------------------------------------------------------
def load_arrays(path: str | Path, split: str = "train") -> DomainDataset:
    """Read a ``.npz`` or ``.npy`` file.

    ``.npz``: per-split keys ``x_<split>`` / ``y_<split>`` when present; otherwise ``x`` / ``y`` (the whole file,
    for any split). ``split="all"`` with only per-split keys concatenates every split. An optional
    ``classes`` key names the classes; without it integer labels are named by the values that occur in any label
    array of the file (so splits share class indices; 1-based labels give ``"1".."K"``) and string labels by the
    sorted names.
    ``.npy``: one unlabelled array.

    Raises:
        DataError: the file is missing or unreadable, has no inputs for ``split``, or its arrays have a bad
            shape, dtype, NaN/Inf, or labels that do not match the inputs.
    """
    path = _existing_file(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        x = _read_npy(path)
        kind, x = _inputs_kind(x, path, "the array")
        return DomainDataset(x, None, path.stem, [], kind, meta={"path": str(path), "split": split})
    if suffix != ".npz":
        raise DataError(f"{path}: expected a .npz or .npy file, got {path.suffix or 'no extension'!r}")

    arrays = _read_npz(path)
    whole_file = False  # one array for every split: a score on "test" is on the training items
    xkeys = sorted(k[2:] for k in arrays if k.startswith("x_") and len(k) > 2)
    if f"x_{split}" in arrays:
        x_key, y_key = f"x_{split}", f"y_{split}"
        parts = [(arrays[x_key], arrays.get(y_key), x_key)]
    elif "x" in arrays:
        parts = [(arrays["x"], arrays.get("y"), "x")]
        whole_file = True
    elif split == ALL_SPLITS and xkeys:
        parts = [(arrays[f"x_{s}"], arrays.get(f"y_{s}"), f"x_{s}") for s in xkeys]
    else:
        have = f"its splits: {', '.join(xkeys)} (or 'all')" if xkeys else f"its keys: {', '.join(sorted(arrays))}"
        raise DataError(
            f"{path} has no array 'x_{split}' or 'x' for split {split!r}; {have}. "
            "Save inputs as x (one split) or x_<split> (e.g. x_train, x_test)"
        )

    xs, ys = [], []
    for x, y, key in parts:
        if y is not None and len(y) != len(x):
            raise DataError(f"{path}: {key} has {len(x)} rows but its labels have {len(y)}")
        xs.append(x)
        ys.append(y)
    if any(y is None for y in ys) and not all(y is None for y in ys):
        raise DataError(f"{path}: some splits have labels (y_<split>) and some do not; label all or none for 'all'")
    x = xs[0] if len(xs) == 1 else _concatenate(xs, path)
    kind, x = _inputs_kind(x, path, parts[0][2] if len(parts) == 1 else "x_<split>")

    if ys[0] is None:
        labels, classes = None, _npz_class_names(arrays, path) or []
    else:
        all_labels = {k: arrays[k] for k in arrays if k == "y" or k.startswith("y_")}
        y = ys[0] if len(ys) == 1 else np.concatenate([np.asarray(v).ravel() for v in ys])
        labels, classes = _npz_labels(y, all_labels, _npz_class_names(arrays, path), path)
    meta: dict[str, Any] = {"path": str(path), "split": split, **_npz_fields(arrays, [k for _, _, k in parts])}
    if whole_file:
        meta["whole_file"] = True
    return DomainDataset(x, labels, path.stem, classes, kind, meta=meta)


# -- MATLAB ------------------------------------------------------------------------------------------------------
MAT_FEATURE_KEYS = ("x", "X", "fts", "feas", "features", "feature", "data")
MAT_LABEL_KEYS = ("y", "Y", "labels", "label", "gnd", "target", "targets")


def load_mat(path: str | Path, split: str = "train", x: str | None = None, y: str | None = None) -> DomainDataset:
    """Feature vectors from a MATLAB ``.mat`` file (format 5, read with scipy; no code runs), the format many classic
    domain-adaptation benchmarks ship one domain per file in.

    The features are the array ``x`` names, else the first of :data:`MAT_FEATURE_KEYS` present; the labels ``y``,
    else the first of :data:`MAT_LABEL_KEYS` (an ``N x 1`` or ``1 x N`` array). Labels 1..K give classes
    ``"1".."K"`` (no empty class ``"0"``). The file holds one domain and no splits: every split is the whole file,
    and a report says that a score on it is on the items trained on.

    Raises:
        DataError: not a readable format-5 file (a MATLAB 7.3 file is HDF5: save with ``-v7``), no such key,
            non-numeric or non-finite features, labels that do not match the rows, or arrays (a sparse matrix
            densified) over the memory budget of :mod:`transferkit.data.limits`.
    """
    import scipy.sparse  # scipy is imported where a file needs it: loading `transferkit.data` does not pay for it

    path = _existing_file(path)
    declared = _mat_variables(path)
    names = sorted(declared)
    x_key = _mat_key(declared, x, MAT_FEATURE_KEYS, path, "features", names)
    y_key = _mat_key(declared, y, MAT_LABEL_KEYS, path, "labels", names, required=False)
    wanted = [k for k in (x_key, y_key) if k is not None]
    check_allocation(sum(_mat_bytes(*declared[k]) for k in wanted),
                     f"{path}: {' and '.join(f'{k} {_shape_text(declared[k][0])} {declared[k][1]}' for k in wanted)}",
                     "save fewer rows or features")
    arrays = _loadmat(path, wanted)
    if any(k not in arrays for k in wanted):
        raise DataError(f"cannot read {path} as a MATLAB .mat file: its variables {wanted} could not be read")
    feats = arrays[x_key]
    if scipy.sparse.issparse(feats):
        feats = _densify(feats, path, x_key)
    kind, feats = _inputs_kind(np.asarray(feats), path, x_key)
    if kind != "vector":
        raise DataError(f"{path}: {x_key} is not a 2-D matrix of feature vectors")
    labels, classes = None, []
    if y_key is not None:
        raw = np.asarray(arrays[y_key])
        if raw.ndim == 2 and 1 in raw.shape:
            raw = raw.ravel()
        if raw.ndim != 1 or len(raw) != len(feats):
            raise DataError(f"{path}: labels {y_key} have shape {arrays[y_key].shape}; need one per row of {x_key} "
                            f"({len(feats)})")
        labels, classes = _npz_labels(raw, {y_key: raw}, None, path)
    meta = {"path": str(path), "split": split, "format": "mat", "features_key": x_key, "labels_key": y_key,
            "whole_file": True}
    return DomainDataset(feats, labels, path.stem, classes, "vector", meta=meta)


def _mat_variables(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """Each variable's declared (shape, MATLAB class), read from the headers alone (``scipy.io.whosmat``): sizes
    are checked before anything is loaded, and only the variables used are."""
    import scipy.io

    try:
        found = scipy.io.whosmat(str(path))
    except NotImplementedError as exc:  # MATLAB 7.3 (HDF5)
        raise DataError(f"{path} is a MATLAB 7.3 (HDF5) file; save it with save(..., '-v7') to read it") from exc
    except Exception as exc:  # scipy raises several types for a damaged or foreign file
        raise DataError(f"cannot read {path} as a MATLAB .mat file: {type(exc).__name__}: {exc}") from exc
    return {name: (tuple(int(n) for n in shape), str(cls)) for name, shape, cls in found if not name.startswith("__")}


# Bytes per element scipy allocates for a MATLAB class (sparse: none until densified, which is checked then; cells
# and structs are arrays of Python object pointers).
_MAT_ITEMSIZE = {"double": 8, "single": 4, "int8": 1, "uint8": 1, "int16": 2, "uint16": 2, "int32": 4, "uint32": 4,
                 "int64": 8, "uint64": 8, "logical": 1, "char": 4, "sparse": 0}


def _mat_bytes(shape: tuple[int, ...], cls: str) -> int:
    return array_bytes(shape, _MAT_ITEMSIZE.get(cls, 8))


def _loadmat(path: Path, variables: list[str]) -> dict[str, Any]:
    import scipy.io

    try:
        with allocating(str(path)):
            return scipy.io.loadmat(str(path), variable_names=variables)
    except NotImplementedError as exc:  # MATLAB 7.3 (HDF5)
        raise DataError(f"{path} is a MATLAB 7.3 (HDF5) file; save it with save(..., '-v7') to read it") from exc
    except DataError:
        raise
    except Exception as exc:  # scipy raises several types for a damaged or foreign file
        raise DataError(f"cannot read {path} as a MATLAB .mat file: {type(exc).__name__}: {exc}") from exc


def _densify(feats: Any, path: Path, key: str) -> np.ndarray:
    """A sparse matrix as dense float32, the dtype kept: converted while sparse, so the dense copy is the only large
    allocation and the budget is checked for it (the float64 densify asked for twice what was checked)."""
    check_allocation(array_bytes(feats.shape, 4), f"{path}: {key} {_shape_text(feats.shape)} as dense float32",
                     "reduce the features (e.g. hashing) first")
    if not (np.issubdtype(feats.dtype, np.number) or feats.dtype == np.bool_) or feats.dtype.kind == "c":
        raise DataError(f"{path}: {key} must be real numbers, got dtype {feats.dtype}")
    with np.errstate(over="ignore"), allocating(f"{path}: {key}"):
        return feats.astype(np.float32).toarray()


def _mat_key(arrays: dict[str, Any], given: str | None, candidates: tuple[str, ...], path: Path, what: str,
             names: list[str], required: bool = True) -> str | None:
    if given is not None:
        if given not in arrays or given.startswith("__"):
            raise DataError(f"{path} has no array {given!r}; its arrays: {', '.join(names)}")
        return given
    for key in candidates:
        if key in arrays:
            return key
    if not required:
        return None
    raise DataError(f"{path}: none of its arrays ({', '.join(names)}) is named like {what} "
                    f"({', '.join(candidates)}); name it: {path.name}?x=KEY&y=KEY")


def _npz_fields(arrays: dict[str, np.ndarray], x_keys: list[str]) -> dict[str, np.ndarray]:
    """Per-item side fields of the split(s) read, for extra heads (``model.heads``): ``<name>_<split>`` next to
    ``x_<split>`` (or ``<name>`` next to ``x``) with one row per input, e.g. ``rating_train`` or ``tags_train``."""
    suffixes = [k[1:] for k in x_keys]  # "_train", or "" for the whole-file "x"
    first = suffixes[0]
    names = {k[: -len(first)] for k in arrays if k.endswith(first)} if first else set(arrays)
    out = {}
    for name in sorted(names - {"", "x", "y", "classes"}):
        if name.startswith(("x_", "y_")):
            continue
        keys = [name + suf for suf in suffixes]
        if not all(k in arrays for k in keys):
            continue
        parts = [arrays[k] for k in keys]
        if all(p.ndim >= 1 and len(p) == len(arrays[x]) for p, x in zip(parts, x_keys, strict=True)):
            out[name] = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return out


def _read_npy(path: Path) -> np.ndarray:
    """The array, after its header's declared shape is checked against the file's size and the memory budget:
    numpy allocates the declared shape before it reads (a 192-byte file declared 37 GiB: a ``MemoryError``)."""
    try:
        with path.open("rb") as f:
            declared = _npy_header(f)
    except (OSError, ValueError, EOFError, SyntaxError) as exc:
        raise DataError(f"cannot read {path} as a .npy array ({exc}); save it with numpy.save") from exc
    if declared is not None:
        shape, dtype, offset = declared
        _check_declared(path, "the array", shape, dtype, path.stat().st_size - offset)
        check_allocation(array_bytes(shape, dtype.itemsize), f"{path}: the array ({_shape_text(shape)} {dtype})",
                         "save a smaller array")
    try:
        with allocating(str(path)):
            return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"cannot read {path} as a .npy array ({exc}); save it with numpy.save") from exc


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not zipfile.is_zipfile(path):  # np.load would read it as a .npy array or try to unpickle it
        raise DataError(
            f"cannot read {path} as a .npz archive: it is not a zip archive (truncated, or another format named "
            ".npz, such as a numpy.save array); save it with numpy.savez"
        )
    unreadable = (OSError, ValueError, EOFError, SyntaxError, zipfile.BadZipFile, zlib.error)
    try:
        keys = _npz_members(path)
    except DataError:
        raise
    except unreadable as exc:
        raise DataError(f"cannot read {path} as a .npz archive ({exc}); save it with numpy.savez") from exc
    try:
        with allocating(str(path)), np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in keys}
    except unreadable as exc:
        raise DataError(
            f"cannot read {path} as a .npz archive ({exc}); save it with numpy.savez (object arrays are refused)"
        ) from exc
    if not arrays:
        raise DataError(f"{path} holds no arrays; save inputs as x (and labels as y) with numpy.savez")
    return arrays


def _npz_members(path: Path) -> list[str]:
    """The keys of the archive's ``.npy`` members (other members are not arrays and are never read), after every
    member's declared shape is checked against its size in the archive and all of them together against the
    memory budget: numpy allocates a member's declared shape before reading it."""
    keys, total, shapes = [], 0, []
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy") or info.is_dir():
                continue
            key = info.filename[: -len(".npy")]
            with archive.open(info) as f:
                declared = _npy_header(f)
                if declared is not None:
                    shape, dtype, offset = declared
                    _check_declared(path, key, shape, dtype, info.file_size - offset)
                    total += array_bytes(shape, dtype.itemsize)
                    shapes.append(f"{key} {_shape_text(shape)} {dtype}")
            keys.append(key)
    check_allocation(total, f"{path}: its arrays ({', '.join(shapes[:4])}{', ...' if len(shapes) > 4 else ''})",
                     "save smaller arrays")
    return keys


def _npy_header(f: Any) -> tuple[tuple[int, ...], np.dtype, int] | None:
    """(shape, dtype, offset of the data) from a ``.npy`` header, read without touching the data; None for a header
    version this numpy reads only privately (np.load then checks it alone)."""
    from numpy.lib import format as npy

    version = npy.read_magic(f)
    if version == (1, 0):
        shape, _, dtype = npy.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, _, dtype = npy.read_array_header_2_0(f)
    else:
        reader = getattr(npy, "_read_array_header", None)
        if reader is None:
            return None
        shape, _, dtype = reader(f, version)
    return tuple(int(n) for n in shape), np.dtype(dtype), int(f.tell())


def _check_declared(path: Path, key: str, shape: tuple[int, ...], dtype: np.dtype, have: int) -> None:
    """A header that declares more data than follows it is a truncated file or a forged header: refused before
    numpy allocates the declared shape."""
    if any(n < 0 for n in shape):
        raise DataError(f"{path}: {key} declares a negative shape {shape}; save it again with numpy")
    need = array_bytes(shape, dtype.itemsize)
    if not dtype.hasobject and need > have:
        raise DataError(
            f"{path}: {key} declares shape {_shape_text(shape)} of {dtype} ({need:,} bytes) but only {max(have, 0):,} "
            "bytes of data follow (truncated, or a forged header); save it again with numpy"
        )


def _shape_text(shape: tuple[int, ...]) -> str:
    return "(" + " x ".join(f"{n:,}" for n in shape) + ")"


def _concatenate(xs: list[np.ndarray], path: Path) -> np.ndarray:
    shapes = {(a.shape[1:], a.dtype) for a in xs}
    if len(shapes) != 1:
        raise DataError(f"{path}: the x_<split> arrays differ in shape or dtype ({shapes}); cannot read split 'all'")
    return np.concatenate(xs)


def _inputs_kind(x: np.ndarray, path: Path, key: str) -> tuple[Kind, np.ndarray]:
    if x.dtype == np.uint8 and x.ndim in (3, 4):
        if x.ndim == 4 and x.shape[-1] not in (1, 3, 4):
            hint = " (channels first? use x.transpose(0, 2, 3, 1))" if x.shape[1] in (1, 3, 4) else ""
            raise DataError(f"{path}: images {key} must be (N, H, W, C) with C in 1, 3, 4; got {x.shape}{hint}")
        if len(x) == 0:
            raise DataError(f"{path}: {key} holds no images")
        return "image", x
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_) or x.dtype.kind == "c":
        raise DataError(f"{path}: {key} must be real numbers, got dtype {x.dtype}")
    if x.ndim != 2:
        raise DataError(
            f"{path}: {key} has shape {x.shape}; feature vectors must be 2-D (N, D), and images uint8 "
            "(N, H, W) or (N, H, W, C)"
        )
    if len(x) == 0:
        raise DataError(f"{path}: {key} holds no rows")
    if x.shape[1] == 0:
        raise DataError(f"{path}: {key} has shape {x.shape}: its rows hold no features")
    if x.dtype != np.float32:
        check_allocation(array_bytes(x.shape, 4), f"{path}: {key} {_shape_text(x.shape)} as float32",
                         "save fewer or narrower rows")
    with allocating(f"{path}: {key}"):
        x = np.asarray(x, dtype=np.float32)
    bad = ~np.isfinite(x)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise DataError(
            f"{path}: {key} has NaN or Inf in {len(rows)} rows (first rows: {rows[:5].tolist()}); "
            "fill or drop them before loading"
        )
    return "vector", x


def _npz_class_names(arrays: dict[str, np.ndarray], path: Path) -> list[str] | None:
    if "classes" not in arrays:
        return None
    names = arrays["classes"]
    if names.ndim != 1 or len(names) == 0:
        raise DataError(f"{path}: 'classes' must be a 1-D array of class names, got shape {names.shape}")
    out = _names(names, path, "classes")
    if len(set(out)) != len(out):
        raise DataError(f"{path}: 'classes' has duplicate names")
    return out


def _names(values: np.ndarray, path: Path, key: str) -> list[str]:
    """Class names or string labels of an array as text. Bytes (``S``) are decoded as UTF-8 (they became
    ``"b'a'"``, or an ``ascii`` traceback), and a lone surrogate, which a ``U`` array can hold, is refused: a name
    goes into reports and model files, which must be text."""
    out = []
    for v in values.tolist():
        if isinstance(v, bytes):
            try:
                v = v.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}: {key} holds {v[:20]!r}, which is not UTF-8 text ({exc.reason}); save names "
                                "as str") from None
        v = str(v)
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            raise DataError(f"{path}: {key} holds {v[:20]!r}, with a lone surrogate: not text; fix the name") from None
        out.append(v)
    return out


def _npz_labels(
    y: np.ndarray, all_labels: dict[str, np.ndarray], names: list[str] | None, path: Path
) -> tuple[np.ndarray, list[str]]:
    """``y`` (the labels of the split read) as class indices. ``all_labels`` holds every label array of the file by
    key (``y`` itself among them): integer class names come from all of them, so splits share indices, and each is
    checked as values first (a ``1e30`` in ``y_test`` is an error naming ``y_test``, not a phantom class)."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"{path}: labels must be 1-D (N,), got shape {y.shape}")
    if y.dtype.kind in "US":
        text = _names(y, path, "labels")
        classes = names if names is not None else sorted(
            {v for key, a in all_labels.items() for v in _names(np.asarray(a).ravel(), path, key)})
        unknown = sorted(set(text) - set(classes))
        if unknown:
            raise DataError(f"{path}: labels {unknown[:10]} are not in 'classes'")
        index = {c: i for i, c in enumerate(classes)}
        return np.asarray([index[v] for v in text], dtype=np.int64), classes
    y = numeric_labels(y, str(path))
    if len(y) and y.min() < 0:
        raise DataError(f"{path}: labels must be >= 0, found {int(y.min())}")
    if names is None:
        # every split's labels, each array once (y is one of them, or their concatenation): shared indices
        numeric = [_class_ids(a, f"{path} ({key})") for key, a in sorted(all_labels.items())
                   if a.size and a.dtype.kind in "biuf"]
        names = integer_classes(np.concatenate(numeric) if numeric else y, str(path))
        return integer_positions(y, names), names
    if len(y) and y.max() >= len(names):
        raise DataError(
            f"{path}: label {int(y.max())} is out of range: 'classes' names {len(names)} classes, so labels must "
            f"lie in 0..{len(names) - 1}"
        )
    return y.astype(np.int64), names


def _class_ids(labels: np.ndarray, where: str) -> np.ndarray:
    """One label array of a file as non-negative int64 class ids, checked as values (see ``numeric_labels``)."""
    ids = numeric_labels(np.asarray(labels).ravel(), where)
    if len(ids) and ids.min() < 0:
        raise DataError(f"{where}: labels must be >= 0, found {int(ids.min())}")
    return ids


# -- CSV ---------------------------------------------------------------------------------------
def load_csv(
    path: str | Path,
    label_column: str | None = DEFAULT_LABEL_COLUMN,
    split: str = "train",
    domain_column: str | None = DOMAIN_COLUMN,
    domain: str | None = None,
) -> DomainDataset:
    """Read a CSV file with a header row as feature vectors.

    Every column except ``label_column``, ``split`` and ``domain_column`` must be numeric; it becomes one float32
    feature. A ``split`` column selects the rows whose value equals ``split`` (``"all"`` keeps every row); without
    one the whole file is read for any split. A domain column lets one file hold several domains: ``domain``
    selects the rows whose value equals it and names the dataset ``<file>/<domain>`` (as text tables do); without
    ``domain`` every row is read. String labels map to the sorted class names, integer labels to the values that
    occur in numeric order (computed over the whole file, so splits and domains share class indices; see
    :func:`~transferkit.data.domain.integer_classes`). Without a ``label``
    column, or with ``label_column=None``, the dataset is unlabelled; a label or domain column given by another
    name must exist. ``.tsv`` files are read tab-separated.

    Raises:
        DataError: the file is missing, unreadable or empty; a feature column is not numeric (named); a
            feature is NaN or Inf; a row has the wrong number of cells; no row belongs to ``split`` or
            ``domain``; or a ``label_column`` / ``domain_column`` other than the default is missing.
    """
    path = _existing_file(path)
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f, delimiter=delimiter))
    except UnicodeDecodeError as exc:
        line = first_undecodable_line(path)
        where = f"line {line} is" if line is not None else "it is"
        raise DataError(f"cannot read {path} as a UTF-8 CSV file: {where} not UTF-8 ({exc.reason}); re-encode the "
                        "file as UTF-8") from None
    except (OSError, csv.Error) as exc:
        raise DataError(f"cannot read {path} as a UTF-8 CSV file ({exc})") from exc
    rows = [r for r in rows if any(cell.strip() for cell in r)]  # blank lines
    if not rows:
        raise DataError(f"{path} is empty; expected a header row naming the columns, then one row per item")
    header = [h.strip() for h in rows[0]]
    body = rows[1:]
    if not body:
        raise DataError(f"{path} has a header but no data rows")
    _check_unique_columns(header, path)
    unnamed = [i + 1 for i, h in enumerate(header) if not h]
    if unnamed:  # "f0,f1," read the label column of every row as a nameless feature, and the file as unlabelled
        raise DataError(f"{path}: column {unnamed[0]} of the header has no name (a trailing or doubled delimiter, or "
                        "pandas' index: to_csv(index=False)); name every column, e.g. 'label' for the labels")
    for i, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise DataError(f"{path}, row {i}: {len(row)} cells but the header has {len(header)} columns")

    roles = _column_roles(header, label_column, domain_column, path)

    def column(at: int | None) -> list[str] | None:
        return None if at is None else [row[at].strip() for row in body]

    keep = _keep_rows(path, len(body), split, column(roles.split), domain, column(roles.domain), domain_column)
    x = _csv_features(body, keep, header, roles.features, path)
    if roles.label is None:
        labels, classes = None, []
    else:
        labels, classes = _class_indices(column(roles.label) or [], keep, label_column, path, first_row=2)
    return _feature_table(x, labels, classes, path, split, domain, [header[i] for i in roles.features])


def _csv_features(
    body: list[list[str]], keep: list[int], header: list[str], feature_at: list[int], path: Path
) -> np.ndarray:
    # Cell by cell into float64: a numpy array of the cells as strings is as wide as the longest cell in every cell
    # (a 778 KB file with one 100,000-digit cell asked for 37 GiB).
    check_allocation(array_bytes((len(keep), len(feature_at)), 8),
                     f"{path}: {len(keep):,} rows x {len(feature_at):,} feature columns", "split the file")
    try:
        x = np.array([[float(body[r][c]) for c in feature_at] for r in keep], dtype=np.float64)
    except (ValueError, OverflowError):
        for col in feature_at:
            for r in keep:
                try:
                    float(body[r][col])
                except (ValueError, OverflowError):
                    value = body[r][col].strip()
                    shown = value if len(value) <= 40 else f"{value[:20]}...({len(value):,} characters)"
                    what = "an empty cell" if value == "" else f"the value {shown!r}"
                    raise DataError(
                        f"{path}: feature column {header[col]!r} is not numeric ({what} in row {r + 2}); "
                        "every column but the label, split and domain columns must be a number"
                    ) from None
        raise
    return _finite_features(x, [header[i] for i in feature_at], [r + 2 for r in keep], path)


# -- tables: what CSV and Parquet share ---------------------------------------------------------
@dataclass(frozen=True)
class _Roles:
    """Column positions of a table: the label, split and domain columns (or None) and the feature columns."""

    label: int | None
    split: int | None
    domain: int | None
    features: list[int]


def _check_unique_columns(header: list[str], path: Path) -> None:
    if len(set(header)) != len(header):
        dupes = sorted({h for h in header if header.count(h) > 1})
        raise DataError(f"{path}: duplicate column names {dupes}; give every column a unique name")


def _column_roles(header: list[str], label_column: str | None, domain_column: str | None, path: Path) -> _Roles:
    """Which column is what. The default label and domain columns are optional; a name the caller chose must exist
    (a typo must not silently turn the labels into a feature, or leave every domain in one dataset)."""
    label_at = header.index(label_column) if label_column in header else None
    if label_at is None and label_column not in (None, DEFAULT_LABEL_COLUMN):
        raise DataError(
            f"{path} has no label column {label_column!r}; its columns: {', '.join(header)} "
            "(pass label_column=None for unlabelled data)"
        )
    split_at = header.index(SPLIT_COLUMN) if SPLIT_COLUMN in header and label_column != SPLIT_COLUMN else None
    domain_at = None
    if domain_column is not None and domain_column not in (label_column, SPLIT_COLUMN):
        if domain_column in header:
            domain_at = header.index(domain_column)
        elif domain_column != DOMAIN_COLUMN:
            raise DataError(f"{path} has no domain column {domain_column!r}; its columns: {', '.join(header)}")
    feature_at = [i for i in range(len(header)) if i not in (label_at, split_at, domain_at)]
    if not feature_at:
        raise DataError(f"{path} has no feature columns (only {header})")
    return _Roles(label_at, split_at, domain_at, feature_at)


def _keep_rows(
    path: Path,
    n: int,
    split: str,
    split_values: list[str] | None,
    domain: str | None,
    domain_values: list[str] | None,
    domain_column: str | None,
) -> list[int]:
    """Indices of the rows of ``split`` (when the table has a split column) and of ``domain`` (when asked for)."""
    keep = list(range(n))
    if split_values is not None and split != ALL_SPLITS:
        keep = [i for i in keep if split_values[i] == split]
        if not keep:
            have = ", ".join(sorted(set(split_values)))
            raise DataError(
                f"{path}: no rows with {SPLIT_COLUMN} == {split!r}; the {SPLIT_COLUMN!r} column holds: {have} "
                "(or use split='all')"
            )
    if domain is not None:
        if domain_values is None:
            raise DataError(
                f"{path} has no domain column {domain_column or DOMAIN_COLUMN!r} to pick domain {domain!r} from; "
                "add one, or drop the domain option to read every row"
            )
        in_split = keep
        keep = [i for i in keep if domain_values[i] == domain]
        if not keep:
            have = ", ".join(sorted({domain_values[i] for i in in_split}))
            where = f" in split {split!r}" if split_values is not None and split != ALL_SPLITS else ""
            raise DataError(f"{path}: no rows of domain {domain!r}{where}; the {domain_column!r} column holds: {have}")
    return keep


def _finite_features(x: np.ndarray, names: list[str], row_numbers: list[int], path: Path) -> np.ndarray:
    """``x`` as float32 after refusing NaN and Inf (also values too large for float32), naming columns and rows."""
    with np.errstate(over="ignore"):
        x = x.astype(np.float32)
    finite = np.isfinite(x)
    if not finite.all():
        cols = [names[j] for j in np.flatnonzero(~finite.all(axis=0))]
        rows = [row_numbers[k] for k in np.flatnonzero(~finite.all(axis=1))]
        raise DataError(
            f"{path}: NaN or Inf in feature columns {cols[:10]} (rows {rows[:5]}); fill or drop them before loading"
        )
    return x


def _class_indices(
    values: list[str], keep: list[int], label_column: str | None, path: Path, first_row: int
) -> tuple[np.ndarray, list[str]]:
    """Labels of the rows ``keep`` as class indices. Classes come from every row of the file (so splits and domains
    read from one file share indices): the integers that occur when every label is a non-negative integer, else the
    sorted distinct strings. ``first_row`` numbers the first value in messages (2: a CSV line after the header)."""
    empty = [i + first_row for i, v in enumerate(values) if v == ""]
    if empty:
        raise DataError(f"{path}: label column {label_column!r} is empty in rows {empty[:5]}; label every row")
    parsed = [canonical_int(v) for v in values]  # "01" and "1" are two names, as in every other loader
    ints = [v for v in parsed if v is not None]
    if len(ints) < len(values):
        classes = sorted(set(values))
        index = {c: i for i, c in enumerate(classes)}
        return np.asarray([index[values[i]] for i in keep], dtype=np.int64), classes
    if min(ints) < 0:
        raise DataError(f"{path}: integer labels in column {label_column!r} must be >= 0, found {min(ints)}")
    classes = integer_classes(ints, f"{path} (label column {label_column!r})")
    return integer_positions([ints[i] for i in keep], classes), classes


# -- Parquet -----------------------------------------------------------------------------------
def load_parquet(
    path: str | Path,
    split: str = "train",
    label_column: str | None = DEFAULT_LABEL_COLUMN,
    domain_column: str | None = DOMAIN_COLUMN,
    domain: str | None = None,
) -> DomainDataset:
    """Read a Parquet file as feature vectors, with the same column and row rules as :func:`load_csv`.

    Feature columns must have a numeric Parquet type (integer, floating point, boolean or decimal) and no nulls;
    a string or list column that is not the label, ``split`` or domain column is refused by name rather than
    guessed at. Labels may be integers (the values that occur), integral floats, or strings (the sorted names),
    mapped over the whole file as in :func:`load_csv`. Rows are numbered from 0 in messages.

    Raises:
        DataError: pyarrow is missing; the file is missing, not Parquet, or has no rows; a feature column is not
            numeric or has nulls (named); a feature is NaN or Inf; a label is null or not an integer or string;
            no row belongs to ``split`` or ``domain``; or a ``label_column`` / ``domain_column`` other than the
            default is missing.
    """
    path = _existing_file(path)
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise DataError(f"reading {path} needs pyarrow: pip install 'transferkit[tabular]'") from exc
    try:
        declared = pq.ParquetFile(path).metadata
        # every column is read, and each feature column becomes float64 before the float32 copy: checked on the
        # declared row count, since a run-length encoded column of a billion rows fits in a few bytes
        check_allocation(array_bytes((declared.num_rows, max(declared.num_columns, 1)), 8),
                         f"{path}: {declared.num_rows:,} rows x {declared.num_columns:,} columns",
                         "split the file or drop columns")
        with allocating(str(path)):
            table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"cannot read {path} as a Parquet file ({exc})") from exc
    header = [str(name) for name in table.column_names]
    if not header:
        raise DataError(f"{path} has no columns; expected numeric feature columns and a label column")
    if table.num_rows == 0:
        raise DataError(f"{path} has columns but no data rows")
    _check_unique_columns(header, path)

    roles = _column_roles(header, label_column, domain_column, path)

    def column(at: int | None) -> list[str] | None:
        return None if at is None else _parquet_strings(table.column(at), header[at], path)

    keep = _keep_rows(path, table.num_rows, split, column(roles.split), domain, column(roles.domain), domain_column)
    x = _parquet_features(table, roles.features, keep, header, path)
    if roles.label is None:
        labels, classes = None, []
    else:
        values = _parquet_labels(table.column(roles.label), header[roles.label], path)
        labels, classes = _class_indices(values, keep, label_column, path, first_row=0)
    return _feature_table(x, labels, classes, path, split, domain, [header[i] for i in roles.features])


def _parquet_features(table: Any, feature_at: list[int], keep: list[int], header: list[str], path: Path) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.types as pat

    rows = pa.array(keep, type=pa.int64())
    columns = []
    for at in feature_at:
        col, name = table.column(at), header[at]
        kind = col.type
        if not (pat.is_integer(kind) or pat.is_floating(kind) or pat.is_boolean(kind) or pat.is_decimal(kind)):
            hint = " (one vector per cell is not read: store one number per column)" if pat.is_list(kind) or \
                pat.is_fixed_size_list(kind) or pat.is_large_list(kind) else ""
            raise DataError(
                f"{path}: feature column {name!r} is not numeric (Parquet type {kind}){hint}; every column but "
                "the label, split and domain columns must be a number"
            )
        col = col.take(rows)
        if col.null_count:
            nulls = [keep[i] for i in np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[:5]]
            raise DataError(
                f"{path}: feature column {name!r} has {col.null_count} missing (null) values (rows {nulls}); "
                "fill or drop them before loading"
            )
        columns.append(pc.cast(col, pa.float64(), safe=False).to_numpy())
    x = np.column_stack(columns) if columns else np.zeros((len(keep), 0))
    return _finite_features(x, [header[i] for i in feature_at], keep, path)


def _parquet_strings(col: Any, name: str, path: Path) -> list[str]:
    """A split or domain column as stripped strings (nulls as ``""``, which no split or domain name matches)."""
    import pyarrow.types as pat

    if pat.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    return ["" if v is None else str(v).strip() for v in col.to_pylist()]


def _parquet_labels(col: Any, name: str, path: Path) -> list[str]:
    """Labels as the strings :func:`_class_indices` maps: integers (and integral floats) as decimal digits."""
    import pyarrow.types as pat

    if pat.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    kind = col.type
    if col.null_count:
        nulls = np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))
        raise DataError(f"{path}: label column {name!r} is null in rows {nulls[:5].tolist()}; label every row")
    values = col.to_pylist()
    if pat.is_integer(kind) or pat.is_boolean(kind):
        return [str(int(v)) for v in values]
    if pat.is_floating(kind):
        bad = [v for v in values if not np.isfinite(v) or v != round(v)]
        if bad:
            raise DataError(
                f"{path}: label column {name!r} holds non-integer numbers (e.g. {bad[0]!r}); labels must be class "
                "ids (integers) or class names (strings)"
            )
        huge = [v for v in values if abs(v) > MAX_EXACT_FLOAT]
        if huge:
            raise label_range_error(f"{path} (label column {name!r})", float(huge[0]))
        return [str(int(v)) for v in values]
    if pat.is_string(kind) or pat.is_large_string(kind):
        return [v.strip() for v in values]
    raise DataError(f"{path}: label column {name!r} has Parquet type {kind}; labels must be integers or strings")


# -- svmlight / libsvm -------------------------------------------------------------------------
def load_svmlight(
    path: str | Path, split: str = "train", n_features: int | None = None, zero_based: bool | str = "auto"
) -> DomainDataset:
    """Read an svmlight / libsvm file (``label index:value ...`` per line) as dense float32 feature vectors.

    The file has no split or domain column: it is read whole for any ``split`` (keep one file per split and
    domain; ``load_data`` fills ``{split}`` in a path). Its width is not written down either: it is the largest
    feature index present, so a file that happens to lack the last feature comes out narrower than its sibling.
    Pass ``n_features`` (the same for every file of a task) to fix the width. ``zero_based="auto"`` (sklearn's
    rule) reads a file as one-based when no line uses index 0; a zero-based file without feature 0 is then
    shifted by one, so pass ``zero_based=True`` / ``False`` where the convention is known (the base, and whether
    it was given, seen (index 0 present) or guessed, is kept in ``meta`` for :func:`check_feature_widths`).

    Labels must be integer class ids: non-negative ones map to the values that occur, as in :func:`load_csv`;
    the binary convention ``-1`` / ``+1`` maps to classes ``["-1", "1"]`` (indices 0, 1). Regression targets
    are refused.

    Raises:
        DataError: the file is missing, empty or not svmlight; ``n_features`` is smaller than the largest index;
            a one-based file uses index 0; a feature is NaN or Inf (or too large for float32); a label is not an
            integer, or negative outside the -1/+1 convention; the dense array would not fit in memory.
    """
    path = _existing_file(path)
    if n_features is not None and (isinstance(n_features, bool) or not isinstance(n_features, int) or n_features < 1):
        raise DataError(f"{path}: n_features must be a positive integer (the feature width), got {n_features!r}")
    if zero_based not in (True, False, "auto"):
        raise DataError(f"{path}: zero_based must be True, False or 'auto', got {zero_based!r}")
    import scipy.sparse
    from sklearn.datasets import load_svmlight_file

    try:
        # Indices exactly as written (zero_based=True never shifts); the base is decided below, where it is known.
        raw, y = load_svmlight_file(str(path), dtype=np.float64, zero_based=True)
    except OverflowError as exc:  # sklearn reads feature indices as C ints: one past 2**31 - 1 is no width
        raise DataError(
            f"{path}: a feature index is too large ({exc}); svmlight indices are feature numbers, at most "
            "2,147,483,647"
        ) from None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise DataError(
            f"cannot read {path} as an svmlight/libsvm file ({exc}); each line must be 'label index:value ...'"
        ) from exc
    n = raw.shape[0]
    if n == 0:
        raise DataError(f"{path} holds no rows (only blank or comment lines); expected 'label index:value ...' lines")
    lowest = int(raw.indices.min()) if raw.nnz else None
    base = 0 if zero_based is True else 1 if zero_based is False else int(lowest is not None and lowest > 0)
    if base == 1 and lowest == 0:
        raise DataError(f"{path} uses feature index 0, so it is zero-based, but zero_based=False was given")
    width = max(raw.shape[1] - base, 0) if raw.nnz else 0
    if n_features is not None:
        if width > n_features:
            raise DataError(
                f"{path} has feature index {width - 1 + base} ({'zero' if base == 0 else 'one'}-based, so {width} "
                f"features) but n_features={n_features}; raise n_features to at least {width}"
            )
        width = n_features
    if width == 0:
        raise DataError(f"{path}: no line has any feature; pass n_features to read all-zero vectors")
    check_allocation(array_bytes((n, width), 4),
                     f"{path}: {n} rows x {width} features of sparse data as dense float32",
                     "reduce the features (e.g. hashing) first, or fix a stray feature index")
    sparse = scipy.sparse.csr_matrix((raw.data, raw.indices - base, raw.indptr), shape=(n, width))
    with np.errstate(over="ignore"):
        data32 = sparse.data.astype(np.float32)
    bad = ~np.isfinite(data32)
    if bad.any():
        rows = np.unique(np.repeat(np.arange(n), np.diff(sparse.indptr))[bad])
        raise DataError(
            f"{path}: NaN or Inf (or a value too large for float32) in {len(rows)} rows (data lines, from 1: "
            f"{(rows[:5] + 1).tolist()}); fill or drop them before loading"
        )
    with allocating(str(path)):
        x = scipy.sparse.csr_matrix((data32, sparse.indices, sparse.indptr), shape=(n, width)).toarray()
    labels, classes = _svmlight_labels(y, path)
    return DomainDataset(
        x,
        labels,
        path.stem,
        classes,
        "vector",
        meta={"path": str(path), "split": split, "format": "svmlight", "n_features": width,
              "zero_based": base == 0, "zero_based_from": "given" if zero_based != "auto" else "index 0" if lowest == 0
              else "guess"},
    )


def _svmlight_labels(y: np.ndarray, path: Path) -> tuple[np.ndarray, list[str]]:
    bad = ~np.isfinite(y) | (y != np.round(y))
    if bad.any():
        raise DataError(
            f"{path}: labels must be integer class ids, found {float(y[bad][0])!r} on data line "
            f"{int(np.flatnonzero(bad)[0]) + 1} (regression targets are not supported)"
        )
    ints = numeric_labels(y, str(path))
    if ints.min() < 0:
        if not np.isin(ints, (-1, 1)).all():
            raise DataError(
                f"{path}: negative labels other than the binary -1/+1 convention ({sorted(set(ints.tolist()))[:10]}); "
                "use class ids 0..K-1"
            )
        return (ints > 0).astype(np.int64), ["-1", "1"]
    everything = list(range(len(ints)))
    return _class_indices([str(v) for v in ints.tolist()], everything, "label", path, first_row=1)


# -- source and target together ----------------------------------------------------------------
def check_feature_widths(source: DomainDataset, target: DomainDataset) -> None:
    """Refuse source and target feature vectors that one model cannot read alike.

    The MLP's input width comes from the source, so a narrower or wider target would fail as a shape error deep
    in training; worse, feature tables with the same width but other columns, or svmlight files read with
    different index bases, would train without complaint on misaligned features. Checked: the width, the column
    names (CSV / Parquet) and the svmlight index base where ``zero_based="auto"`` had to guess it.

    Raises:
        DataError: naming both files and the fix.
    """
    if source.kind != "vector" or target.kind != "vector":
        return
    if not isinstance(source.inputs, np.ndarray) or not isinstance(target.inputs, np.ndarray):
        return
    src, tgt = source.meta.get("path", source.domain), target.meta.get("path", target.domain)
    ws, wt = int(source.inputs.shape[1]), int(target.inputs.shape[1])
    if (
        source.meta.get("format") == target.meta.get("format") == "svmlight"
        and source.meta.get("zero_based") != target.meta.get("zero_based")
        and "guess" in (source.meta.get("zero_based_from"), target.meta.get("zero_based_from"))
    ):
        # Checked before the width: a guessed base also makes the widths differ by one, and n_features would hide it.
        def base(ds: DomainDataset) -> str:
            read = "zero-based" if ds.meta.get("zero_based") else "one-based"
            return f"{read} (a guess: no line uses index 0)" if ds.meta.get("zero_based_from") == "guess" else read

        raise DataError(
            f"svmlight index bases differ: source {src} was read {base(source)}, target {tgt} {base(target)}, which "
            "shifts one domain's features by one; state the convention after both data paths: '?zero_based=true' "
            "(or false; zero_based=... in Python)"
        )
    svmlight = "svmlight" in (source.meta.get("format"), target.meta.get("format"))
    if ws != wt:
        if svmlight:
            fix = (
                "an svmlight file's width is the largest feature index it holds, so files of one task can differ: "
                f"give both the same width, '?n_features={max(ws, wt)}' after both data paths (data.source and "
                f"data.target), or n_features={max(ws, wt)} in Python"
            )
        else:
            fix = "both must hold the same feature columns"
        raise DataError(f"feature widths differ: source {src} has {ws} features, target {tgt} has {wt}; {fix}")
    names_s, names_t = source.meta.get("features"), target.meta.get("features")
    if names_s is not None and names_t is not None and list(names_s) != list(names_t):
        diff = [(i, a, b) for i, (a, b) in enumerate(zip(names_s, names_t, strict=True)) if a != b]
        shown = ", ".join(f"column {i + 1}: {a!r} vs {b!r}" for i, a, b in diff[:3])
        raise DataError(
            f"feature columns differ between source {src} and target {tgt} ({shown}); both files must hold the "
            "same feature columns in the same order"
        )


def _feature_table(x: np.ndarray, labels: np.ndarray | None, classes: list[str], path: Path, split: str,
                   domain: str | None, features: list[str]) -> DomainDataset:
    """A CSV or Parquet table's rows as a vector dataset, named ``<file>/<domain>`` when one domain was picked."""
    meta: dict[str, Any] = {"path": str(path), "split": split, "features": features}
    if domain is not None:
        meta["domain"] = domain
    return DomainDataset(x, labels, f"{path.stem}/{domain}" if domain is not None else path.stem, classes, "vector",
                         meta=meta)


# -- shared ------------------------------------------------------------------------------------
def _existing_file(path: str | Path) -> Path:
    """``path`` when it is a regular, non-empty file. A FIFO or a device (a link to ``/dev/zero``) is said to be
    one: it was reported as "a folder", and reading it would block or never end."""
    path = Path(path).expanduser()
    problem = regular_file_problem(path)
    if problem is not None and path.is_dir():
        raise DataError(f"{path} is a folder, not a data file; for image folders use load_image_folder")
    if problem is not None:
        raise DataError(f"data file {path} {problem}" + ("; check the path" if "exist" in problem else ""))
    if path.stat().st_size == 0:
        raise DataError(f"data file {path} is empty (0 bytes)")
    return path

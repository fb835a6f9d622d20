"""Arrays and CSV files as :class:`DomainDataset`: ``.npz`` / ``.npy`` (vectors or uint8 images) and ``.csv``.

``.npz`` keys: ``x`` (inputs), optional ``y`` (labels) and ``classes`` (names); or per-split keys ``x_<split>``
and ``y_<split>`` (``x_train``, ``y_train``, ``x_test``, ...). uint8 arrays of 3 or 4 dimensions are images
``(N, H, W)`` / ``(N, H, W, C)``; everything else is a 2-D array of feature vectors, stored as float32.

A CSV file has a header row; the label column (default ``label``) and an optional ``split`` column are taken
out, every other column is a numeric feature.
"""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import numpy as np

from transferkit.data.domain import DomainDataset, Kind
from transferkit.errors import DataError

ALL_SPLITS = "all"
SPLIT_COLUMN = "split"
DEFAULT_LABEL_COLUMN = "label"


# -- numpy arrays ------------------------------------------------------------------------------
def load_arrays(path: str | Path, split: str = "train") -> DomainDataset:
    """Read a ``.npz`` or ``.npy`` file.

    ``.npz``: per-split keys ``x_<split>`` / ``y_<split>`` when present; otherwise ``x`` / ``y`` (the whole file,
    for any split). ``split="all"`` with only per-split keys concatenates every split. An optional
    ``classes`` key names the classes; without it integer labels get classes ``"0".."max"`` (the max over
    every label array in the file, so splits share class indices) and string labels the sorted names.
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
    xkeys = sorted(k[2:] for k in arrays if k.startswith("x_") and len(k) > 2)
    if f"x_{split}" in arrays:
        x_key, y_key = f"x_{split}", f"y_{split}"
        parts = [(arrays[x_key], arrays.get(y_key), x_key)]
    elif "x" in arrays:
        parts = [(arrays["x"], arrays.get("y"), "x")]
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
        all_labels = [arrays[k] for k in arrays if k == "y" or k.startswith("y_")]
        y = ys[0] if len(ys) == 1 else np.concatenate([np.asarray(v).ravel() for v in ys])
        labels, classes = _npz_labels(y, all_labels, _npz_class_names(arrays, path), path)
    return DomainDataset(x, labels, path.stem, classes, kind, meta={"path": str(path), "split": split})


def _read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"cannot read {path} as a .npy array ({exc}); save it with numpy.save") from exc


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(
            f"cannot read {path} as a .npz archive ({exc}); save it with numpy.savez (object arrays are refused)"
        ) from exc
    if not arrays:
        raise DataError(f"{path} holds no arrays; save inputs as x (and labels as y) with numpy.savez")
    return arrays


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
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise DataError(f"{path}: {key} must be numeric, got dtype {x.dtype}")
    if x.ndim != 2:
        raise DataError(
            f"{path}: {key} has shape {x.shape}; feature vectors must be 2-D (N, D), and images uint8 "
            "(N, H, W) or (N, H, W, C)"
        )
    if len(x) == 0:
        raise DataError(f"{path}: {key} holds no rows")
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
    out = [str(n) for n in names.tolist()]
    if len(set(out)) != len(out):
        raise DataError(f"{path}: 'classes' has duplicate names")
    return out


def _npz_labels(
    y: np.ndarray, all_labels: list[np.ndarray], names: list[str] | None, path: Path
) -> tuple[np.ndarray, list[str]]:
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"{path}: labels must be 1-D (N,), got shape {y.shape}")
    if y.dtype.kind in "US":
        text = y.astype(str)
        classes = names if names is not None else sorted({str(v) for a in all_labels for v in a.astype(str).tolist()})
        unknown = sorted(set(text.tolist()) - set(classes))
        if unknown:
            raise DataError(f"{path}: labels {unknown[:10]} are not in 'classes'")
        index = {c: i for i, c in enumerate(classes)}
        return np.asarray([index[v] for v in text.tolist()], dtype=np.int64), classes
    if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        y = y.astype(np.int64)
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: labels must be integers or strings, got dtype {y.dtype}")
    if len(y) and y.min() < 0:
        raise DataError(f"{path}: labels must be >= 0, found {int(y.min())}")
    if names is None:
        numeric = [a for a in all_labels if a.size and a.dtype.kind in "iuf" and np.isfinite(a).all()]
        top = max([int(y.max()), *(int(np.max(a)) for a in numeric)])  # every split's labels: shared indices
        names = [str(i) for i in range(top + 1)]
    return y.astype(np.int64), names


# -- CSV ---------------------------------------------------------------------------------------
def load_csv(path: str | Path, label_column: str | None = "label", split: str = "train") -> DomainDataset:
    """Read a CSV file with a header row as feature vectors.

    Every column except ``label_column`` and ``split`` must be numeric; it becomes one float32 feature.
    A ``split`` column selects the rows whose value equals ``split`` (``"all"`` keeps every row); without
    one the whole file is read for any split. String labels map to the sorted class names, integer labels
    to classes ``"0".."max"`` (computed over the whole file, so splits share class indices). Without a
    ``label`` column, or with ``label_column=None``, the dataset is unlabelled; a label column given by
    another name must exist. ``.tsv`` files are read tab-separated.

    Raises:
        DataError: the file is missing, unreadable or empty; a feature column is not numeric (named); a
            feature is NaN or Inf; a row has the wrong number of cells; no row belongs to ``split``; or a
            ``label_column`` other than the default is missing.
    """
    path = _existing_file(path)
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f, delimiter=delimiter))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read {path} as a UTF-8 CSV file ({exc})") from exc
    rows = [r for r in rows if any(cell.strip() for cell in r)]  # blank lines
    if not rows:
        raise DataError(f"{path} is empty; expected a header row naming the columns, then one row per item")
    header = [h.strip() for h in rows[0]]
    body = rows[1:]
    if not body:
        raise DataError(f"{path} has a header but no data rows")
    if len(set(header)) != len(header):
        dupes = sorted({h for h in header if header.count(h) > 1})
        raise DataError(f"{path}: duplicate column names {dupes}; give every column a unique name")
    for i, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise DataError(f"{path}, row {i}: {len(row)} cells but the header has {len(header)} columns")

    label_at = header.index(label_column) if label_column in header else None
    if label_at is None and label_column not in (None, DEFAULT_LABEL_COLUMN):
        raise DataError(
            f"{path} has no label column {label_column!r}; its columns: {', '.join(header)} "
            "(pass label_column=None for unlabelled data)"
        )
    split_at = header.index(SPLIT_COLUMN) if SPLIT_COLUMN in header and label_column != SPLIT_COLUMN else None
    feature_at = [i for i in range(len(header)) if i not in (label_at, split_at)]
    if not feature_at:
        raise DataError(f"{path} has no feature columns (only {header})")

    if split_at is not None and split != ALL_SPLITS:
        values = [row[split_at].strip() for row in body]
        keep = [i for i, v in enumerate(values) if v == split]
        if not keep:
            have = ", ".join(sorted(set(values)))
            raise DataError(
                f"{path}: no rows with {SPLIT_COLUMN} == {split!r}; the {SPLIT_COLUMN!r} column holds: {have} "
                "(or use split='all')"
            )
    else:
        keep = list(range(len(body)))

    x = _csv_features(body, keep, header, feature_at, path)
    if label_at is None:
        labels, classes = None, []
    else:
        labels, classes = _csv_labels(body, keep, label_at, label_column, path)
    return DomainDataset(
        x,
        labels,
        path.stem,
        classes,
        "vector",
        meta={"path": str(path), "split": split, "features": [header[i] for i in feature_at]},
    )


def _csv_features(
    body: list[list[str]], keep: list[int], header: list[str], feature_at: list[int], path: Path
) -> np.ndarray:
    cells = np.asarray([[body[r][c].strip() for c in feature_at] for r in keep], dtype=str)
    try:
        x = cells.astype(np.float64)
    except ValueError:
        for j, col in enumerate(feature_at):
            for k, r in enumerate(keep):
                try:
                    float(cells[k, j])
                except ValueError:
                    value = str(cells[k, j])
                    what = "an empty cell" if value == "" else f"the value {value!r}"
                    raise DataError(
                        f"{path}: feature column {header[col]!r} is not numeric ({what} in row {r + 2}); "
                        "every column but the label and split columns must be a number"
                    ) from None
        raise
    finite = np.isfinite(x)
    if not finite.all():
        cols = [header[feature_at[j]] for j in np.flatnonzero(~finite.all(axis=0))]
        rows = [keep[k] + 2 for k in np.flatnonzero(~finite.all(axis=1))]
        raise DataError(
            f"{path}: NaN or Inf in feature columns {cols[:10]} (rows {rows[:5]}); fill or drop them before loading"
        )
    return x.astype(np.float32)


def _csv_labels(
    body: list[list[str]], keep: list[int], label_at: int, label_column: str | None, path: Path
) -> tuple[np.ndarray, list[str]]:
    values = [row[label_at].strip() for row in body]
    empty = [i + 2 for i, v in enumerate(values) if v == ""]
    if empty:
        raise DataError(f"{path}: label column {label_column!r} is empty in rows {empty[:5]}; label every row")
    try:
        ints = [int(v) for v in values]
    except ValueError:
        classes = sorted(set(values))
        index = {c: i for i, c in enumerate(classes)}
        return np.asarray([index[values[i]] for i in keep], dtype=np.int64), classes
    if min(ints) < 0:
        raise DataError(f"{path}: integer labels in column {label_column!r} must be >= 0, found {min(ints)}")
    classes = [str(i) for i in range(max(ints) + 1)]
    return np.asarray([ints[i] for i in keep], dtype=np.int64), classes


# -- shared ------------------------------------------------------------------------------------
def _existing_file(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"data file {path} does not exist; check the path")
    if not path.is_file():
        raise DataError(f"{path} is a folder, not a data file; for image folders use load_image_folder")
    if path.stat().st_size == 0:
        raise DataError(f"data file {path} is empty (0 bytes)")
    return path

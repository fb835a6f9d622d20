"""Text tables as :class:`DomainDataset`: CSV / TSV and JSON lines (optionally gzipped) with a text column.

One file may hold several domains (a ``domain`` column, as in multi-domain review collections) and splits (a
``split`` column). ``load_data`` takes options after a ``?``, so a YAML config or the CLI can name one domain
of such a file without Python code::

    reviews.jsonl.gz?domain=books                       # rows whose domain column is "books"
    reviews.csv?text=body&label=stars&domain=kitchen     # other column names

Class names are computed over the *whole* file (every domain, every split) before rows are selected, so a
source and a target read from one file share class indices. Integer labels give the values that occur in
numeric order (1-based labels: ``"1".."K"``), other labels the sorted distinct values.

Example:
    >>> import json, tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "r.jsonl"
    >>> rows = [{"text": "good", "label": "pos", "domain": "a"}, {"text": "bad", "label": "neg", "domain": "b"}]
    >>> _ = p.write_text("\\n".join(json.dumps(r) for r in rows))
    >>> ds = load_text_table(p, domain="b")
    >>> ds.kind, ds.domain, ds.classes, ds.inputs, ds.labels.tolist()
    ('text', 'r/b', ['neg', 'pos'], ['bad'], [0])
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import sys
import zlib
from pathlib import Path
from typing import IO, Any

import numpy as np

from transferkit.data.domain import (
    MAX_EXACT_FLOAT,
    DomainDataset,
    canonical_int,
    integer_classes,
    label_range_error,
)
from transferkit.data.limits import check_allocation, data_budget, regular_file_problem
from transferkit.errors import DataError

ALL_SPLITS = "all"
TEXT_SUFFIXES = (".jsonl", ".json", ".ndjson", ".csv", ".tsv")
OPTIONS = ("text", "label", "domain", "domain_column")
_MAX_HEADER_BYTES = 1 << 20  # a CSV header line read to sniff its columns


def is_text_table(path: Path) -> bool:
    """JSON lines always; CSV/TSV only when the header has a ``text`` column (else they are feature tables)."""
    name = path.name.lower().removesuffix(".gz")
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return True
    if name.endswith((".csv", ".tsv")):
        try:  # the header line alone: a bad byte further down is the loader's to name, with its line
            with _open_binary(path) as f:
                first = f.readline(_MAX_HEADER_BYTES).decode("utf-8-sig")
            header = next(csv.reader([first], delimiter="\t" if name.endswith(".tsv") else ","), [])
        except (OSError, UnicodeDecodeError, csv.Error, EOFError, zlib.error):
            return False
        return "text" in [h.strip() for h in header]
    return False


def load_text_table(
    path: str | Path,
    split: str = "train",
    *,
    text: str = "text",
    label: str | None = "label",
    domain: str | None = None,
    domain_column: str = "domain",
) -> DomainDataset:
    """Read texts, labels and (optionally) one domain's rows from a CSV/TSV/JSON-lines file.

    Args:
        path: the file (``.gz`` allowed).
        split: rows whose ``split`` column equals this (``"all"``: every row); without a ``split`` column the
            whole file is read for any split.
        text, label: column names. ``label=None`` or a file without the default ``label`` column gives an
            unlabelled dataset.
        domain: keep only rows whose ``domain_column`` equals it; the dataset is named ``<file>/<domain>``.

    Raises:
        DataError: missing/unreadable/non-UTF-8 file, a missing column (the message lists the columns), an
            empty or non-string text (row named), an empty label, no row left for ``domain`` / ``split``.
    """
    path = Path(path).expanduser()
    problem = regular_file_problem(path)
    if problem is not None:
        raise DataError(f"text file {path} {problem}" + ("; check the path" if "exist" in problem else ""))
    rows = _read_rows(path)
    if not rows:
        raise DataError(f"{path} holds no rows")
    columns = list(rows[0])
    if text not in columns:
        raise DataError(f"{path} has no text column {text!r}; its columns: {', '.join(columns)} (use ?text=NAME)")
    labelled = label is not None and label in columns
    if label is not None and not labelled and label != "label":
        raise DataError(f"{path} has no label column {label!r}; its columns: {', '.join(columns)}")
    classes = _classes([r.get(label) for r in rows], path, label) if labelled else []

    keep = list(range(len(rows)))
    if domain is not None:
        if domain_column not in columns:
            raise DataError(f"{path} has no {domain_column!r} column to select domain {domain!r}; "
                            f"its columns: {', '.join(columns)}")
        keep = [i for i in keep if str(rows[i].get(domain_column)) == domain]
        if not keep:
            have = sorted({str(r.get(domain_column)) for r in rows})
            raise DataError(f"{path}: no rows with {domain_column} == {domain!r}; it holds: {', '.join(have[:20])}")
    if "split" in columns and split != ALL_SPLITS:
        keep = [i for i in keep if str(rows[i].get("split")) == split]
        if not keep:
            raise DataError(f"{path}: no rows with split == {split!r}" + (f" in domain {domain!r}" if domain else ""))

    texts = []
    for i in keep:
        value = rows[i].get(text)
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"{path}, row {i + 1}: the {text!r} field is empty or not a string ({value!r})")
        texts.append(value)
    labels = None
    if labelled:
        index = {c: k for k, c in enumerate(classes)}
        labels = np.asarray([index[_label_key(rows[i].get(label))] for i in keep], dtype=np.int64)
    stem = path.name.split(".")[0]
    name = f"{stem}/{domain}" if domain is not None else stem
    meta: dict[str, Any] = {"path": str(path), "split": split}
    extra = [c for c in columns if c not in (text, label, domain_column, "split")]
    for column in extra:  # numeric side fields (a star rating) travel along for reports and regression
        values = [rows[i].get(column) for i in keep]
        numbers = [isinstance(v, (int, float)) and not isinstance(v, bool) for v in values]
        if any(numbers) and all(ok or v is None for ok, v in zip(numbers, values, strict=True)):
            # a missing value stays as NaN, so a regression head on this field names the items that lack it
            meta[column] = _side_field(values, keep, column, path)
    return DomainDataset(texts, labels, name, classes, "text", meta=meta)


def _side_field(values: list[Any], keep: list[int], column: str, path: Path) -> np.ndarray:
    """A numeric side field as float64; an integer too large for a float (a 400-digit number) is named, not an
    ``OverflowError`` traceback."""
    out = np.empty(len(values), dtype=np.float64)
    for k, v in enumerate(values):
        try:
            out[k] = np.nan if v is None else float(v)
        except OverflowError:
            raise DataError(
                f"{path}, row {keep[k] + 1}: field {column!r} holds a number too large for a float "
                f"({len(str(abs(v)))} digits); fix or drop the field"
            ) from None
    return out


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``"file.jsonl?domain=books&text=body"`` -> ``("file.jsonl", {"domain": "books", "text": "body"})``."""
    path, sep, query = spec.partition("?")
    options: dict[str, str] = {}
    if sep:
        for part in query.split("&"):
            key, eq, value = part.partition("=")
            if not eq or key not in OPTIONS:
                raise DataError(f"{spec!r}: options after '?' look like key=value with key one of {', '.join(OPTIONS)}"
                                f"; got {part!r}")
            options[key] = value
    return path, options


def _open(path: Path) -> IO[str]:
    """The file as UTF-8 text (a byte-order mark dropped), through gzip for ``.gz``; the caller closes it."""
    return io.TextIOWrapper(_open_binary(path), encoding="utf-8-sig", newline="")


class _Capped(io.RawIOBase):
    """A decompressing stream that stops at the data budget: a few MB of ``.gz`` can inflate to any size, and a
    reader (a CSV row, a JSON line without a newline) would hold all of it before any check saw it."""

    def __init__(self, raw: IO[bytes], path: Path) -> None:
        self._raw, self._path, self._budget, self._read = raw, path, data_budget(), 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._raw.readinto(buffer)  # type: ignore[attr-defined]
        self._read += n or 0
        if self._read > self._budget:
            check_allocation(self._read, f"{self._path} (decompressed)", "split the file")
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


def _read_rows(path: Path) -> list[dict[str, Any]]:
    name = path.name.lower().removesuffix(".gz")
    try:
        if not name.endswith((".csv", ".tsv")):
            return _json_rows(path)
        with _open(path) as f:
            return _csv_rows(csv.DictReader(f, delimiter="\t" if name.endswith(".tsv") else ","), path)
    except UnicodeDecodeError as exc:
        line = first_undecodable_line(path)
        where = f", line {line}," if line is not None else ""
        raise DataError(f"{path}{where} is not UTF-8 text ({exc.reason}); re-encode the file as UTF-8") from None
    except (OSError, EOFError, csv.Error, zlib.error) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc


def _json_rows(path: Path) -> list[dict[str, Any]]:
    """JSON lines, each decoded strictly on its own so that a bad byte, a lone surrogate (``"\\ud800"``), nesting
    too deep to parse or a number too long to read is named with its line, not a traceback later (a tokenizer
    raised ``TypeError`` on the surrogate)."""
    rows = []
    budget, read = data_budget(), 0
    with _open_binary(path) as f:
        n = 0
        while raw := f.readline(budget - read + 1):  # never more than the budget, even a line without a newline
            n += 1
            read += len(raw)
            if read > budget:  # every row is kept in memory: the text read so far is its floor
                check_allocation(read, f"{path} (up to line {n})", "split the file")
            try:
                line = raw.decode("utf-8-sig" if n == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}, line {n}, is not UTF-8 text ({exc.reason} at byte {exc.start + 1}); "
                                "re-encode the file as UTF-8") from None
            if not line.strip():
                continue
            row = _json_line(line, path, n)
            if not isinstance(row, dict):
                raise DataError(f"{path}, line {n}: expected a JSON object per line, got {type(row).__name__}")
            _refuse_surrogates(row, path, n)
            rows.append(row)
    return rows


def _json_line(line: str, path: Path, n: int) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}, line {n}: not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise DataError(f"{path}, line {n}: JSON nested too deeply to read; a row is one flat object") from None
    except ValueError as exc:  # a number past Python's digit limit (sys.get_int_max_str_digits), or the like
        why = (f"a number of more than {sys.get_int_max_str_digits()} digits" if "digits" in str(exc)
               else str(exc))
        raise DataError(f"{path}, line {n}: cannot read this JSON ({why}); fix the row") from None


def _refuse_surrogates(row: dict[str, Any], path: Path, n: int) -> None:
    """Refuse a lone surrogate in a key or a string value: it is no Unicode text (it cannot be encoded, so a
    tokenizer, a report or a model file would fail on it later). Nested values are never read as text."""
    for key, value in row.items():
        for s in (key, value) if isinstance(value, str) else (key,):
            try:
                s.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise DataError(
                    f"{path}, line {n}: field {key.encode('utf-8', 'backslashreplace').decode()!r} holds a lone "
                    f"surrogate ({s[exc.start]!r}), which is not text; fix the escape (\\uD800-\\uDFFF come in pairs)"
                ) from None


def first_undecodable_line(path: Path) -> int | None:
    """The line of the first byte that is not UTF-8 (re-read only when decoding failed, to name it; a CSV's
    quoted field may span lines, so this is the file's line, as an editor shows it)."""
    try:
        with _open_binary(path) as f:
            for n, raw in enumerate(f, start=1):
                try:
                    raw.decode("utf-8-sig" if n == 1 else "utf-8")
                except UnicodeDecodeError:
                    return n
    except (OSError, EOFError, zlib.error):
        return None
    return None


def _open_binary(path: Path) -> IO[bytes]:
    if path.name.lower().endswith(".gz"):
        return io.BufferedReader(_Capped(gzip.open(path, "rb"), path))
    return path.open("rb")


def _csv_rows(reader: csv.DictReader, path: Path) -> list[dict[str, Any]]:
    """The rows of a text CSV; a row with more or fewer cells than the header is refused (an unquoted comma in a
    text would otherwise shift its label into the next column)."""
    rows = []
    for row in reader:
        extra, short = row.get(None), None in row.values()  # DictReader's restkey / restval for such rows
        if extra or short:
            cells = len(reader.fieldnames or []) + (len(extra) if extra else -sum(v is None for v in row.values()))
            raise DataError(
                f"{path}, line {reader.line_num}: {cells} cells but the header has {len(reader.fieldnames or [])} "
                "columns; quote fields that hold the delimiter (\"like, this\")"
            )
        rows.append(row)
    return rows


def _label_key(value: Any) -> str:
    """A label as the string classes are made of. A JSON number is a class id, like a number in any other format:
    a finite whole number, exact as a float (at most 2**53), or refused by :func:`_classes`."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= MAX_EXACT_FLOAT:
        value = int(value)
    return str(value).strip()


def _classes(values: list[Any], path: Path, label: str | None) -> list[str]:
    nested = [i + 1 for i, v in enumerate(values) if isinstance(v, (dict, list))]
    if nested:
        raise DataError(f"{path}: label {label!r} is a list or an object in rows {nested[:5]}; each label must be one "
                        "class name or integer")
    for i, v in enumerate(values):
        if isinstance(v, float) and not (v.is_integer() and abs(v) <= MAX_EXACT_FLOAT):
            if v.is_integer():
                raise label_range_error(f"{path}, row {i + 1} (label {label!r})", v)
            raise DataError(
                f"{path}, row {i + 1}: label {label!r} is the number {v!r}, not a whole number: numeric labels are "
                "class ids (regression targets are not class labels); write it as a string (\"0.5\") to use it as a "
                "class name"
            )
    keys = [_label_key(v) if v is not None else "" for v in values]
    empty = [i + 1 for i, k in enumerate(keys) if k in ("", "None")]
    if empty:
        raise DataError(f"{path}: label {label!r} is empty in rows {empty[:5]}; label every row or drop the column")
    distinct = set(keys)
    parsed = [canonical_int(k) for k in distinct]  # "01", "+1": names, so the rows' lookup by text finds them
    if any(v is None for v in parsed):
        return sorted(distinct)
    ints = sorted(v for v in parsed if v is not None)
    if ints[0] < 0:
        raise DataError(f"{path}: integer labels in {label!r} must be >= 0, found {ints[0]}")
    return integer_classes([int(k) for k in keys], f"{path} (label {label!r})")

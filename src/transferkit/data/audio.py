"""Folders of WAV files as :class:`DomainDataset`, and the waveform preprocessing audio backbones share.

A dataset holds file paths (``kind="audio"``); an item is decoded by :func:`read_audio` into a
:class:`Waveform` (mono float32 in [-1, 1] at the file's own rate) and turned into a fixed-length tensor by the
backbone's :class:`AudioTransform` (resampled to the backbone's rate, padded or centre-cropped), so batches
stack and the decoded inputs can be cached in memory.

Labels, and optionally domains (speakers, microphones, rooms), come from

- the file names, by a regular expression with named groups ``label`` (required), ``domain``, ``index`` and
  ``split`` (optional), matched against the whole file name (or, when the pattern holds a ``/``, the path
  relative to the folder). The default, :data:`DEFAULT_PATTERN`, reads ``<label>_<domain>_<index>.wav``
  (the Free Spoken Digit Dataset's naming) and ``<label>_<index>.wav``;
- one folder per class (``root/<class>/*.wav``) when no pattern is given and no file lies directly in root;
- a CSV file with the columns ``path,label`` and optionally ``domain`` and ``split`` (paths relative to
  the folder).

A folder with top-level ``train/``, ``val/``, ``test/`` (...) subfolders is read one split folder at a time;
otherwise a ``split`` group or column picks the split, and without either the whole folder is every split.

From a config or the command line, a folder (or such a CSV file) is given as a path, with options after a
``?`` (see :func:`load_audio_spec`)::

    data.source: my_recordings?exclude=george        # every speaker but george
    data.target: my_recordings?domain=george
    data.source: my_recordings/labels.csv?domain=alice,bob
    data.source: my_recordings?pattern=(?P<domain>[a-z]+)-(?P<label>[a-z]+)-\\d+\\.wav
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from math import gcd
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import torch

from transferkit.data.domain import DomainDataset, bad_files_error
from transferkit.data.images import IMAGE_EXTENSIONS
from transferkit.data.limits import regular_file_problem
from transferkit.data.waveform import Waveform as Waveform  # re-exported: audio's public vocabulary
from transferkit.data.waveform import header_problem, info_problem, soundfile_module
from transferkit.data.waveform import read_audio as read_audio
from transferkit.errors import DataError

AUDIO_EXTENSIONS = frozenset({".wav"})
DEFAULT_PATTERN = r"(?P<label>[^_/]+)_(?:(?P<domain>[^/]+)_)?(?P<index>\d+)\.wav"
SPLIT_FOLDERS = frozenset({"train", "training", "val", "valid", "validation", "dev", "test", "testing", "eval"})
ALL_SPLITS = "all"
SPEC_OPTIONS = ("pattern", "csv", "domain", "exclude")
_MAX_LISTED = 10  # bad files named in one error
# a label, domain or split from a labels CSV is a name; the per-item array of domains is as wide as the longest one
# in every item (one 131,072-character cell in a 50,000-row CSV made 26 GB)
MAX_NAME_CHARS = 256
_IGNORED_DIRS = frozenset({"__MACOSX", "__pycache__"})
_SCAN_DEPTH = 3  # folder levels searched when deciding whether a path holds audio


def verify_audio(paths: Iterable[str | Path]) -> None:
    """Check every file's header (no decoding): readable, not empty, not truncated; one error lists them all.

    Reading headers only keeps this fast (thousands of files a second) and needs no progress bar.
    """
    sf = soundfile_module()
    bad: list[tuple[str, str]] = []
    n = 0
    for p in paths:
        n += 1
        path = Path(p)
        problem = "missing" if not os.path.lexists(path) else regular_file_problem(path) or header_problem(path)
        if problem is None:
            try:
                info = sf.info(str(path))
                problem = "holds no samples" if info.frames <= 0 else info_problem(info)
            except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
                problem = str(exc) or type(exc).__name__
        if problem is not None:
            bad.append((str(path), problem))
    if bad:
        raise bad_files_error(bad, n, "audio files cannot be used (missing, empty, truncated or not audio)",
                              "remove or replace these files, then run again", _MAX_LISTED)


# -- preprocessing -----------------------------------------------------------------------------
def resample(samples: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Polyphase resampling (scipy's ``resample_poly``, anti-aliased) from ``orig_rate`` to ``target_rate`` Hz.

    Example:
        >>> resample(np.zeros(8000, np.float32), 8000, 16000).shape
        (16000,)
    """
    if orig_rate <= 0 or target_rate <= 0:
        raise DataError(f"sample rates must be positive, got {orig_rate} -> {target_rate} Hz")
    if orig_rate == target_rate:
        return np.asarray(samples, dtype=np.float32)
    from scipy.signal import resample_poly

    g = gcd(int(orig_rate), int(target_rate))
    out = resample_poly(np.asarray(samples, dtype=np.float32), int(target_rate) // g, int(orig_rate) // g)
    return out.astype(np.float32, copy=False)


def resample_to_length(samples: np.ndarray, orig_rate: int, target_rate: int, length: int) -> np.ndarray:
    """``fit_length(resample(samples, orig_rate, target_rate), length)``, bit for bit, without resampling what the
    crop throws away.

    Resampling first made the output as long as the whole recording at the new rate: a 2 MB WAV that declares 1 Hz
    became 16,000 times longer (59.6 GiB) before its centre was kept. Only the input samples under the kept window,
    plus the filter's half-length on each side, are resampled now; the piece starts on a multiple of the
    decimation factor, so its output samples are the full output's own (same taps, same order).

    Example:
        >>> x = np.random.default_rng(0).standard_normal(44100).astype(np.float32)
        >>> bool(np.array_equal(resample_to_length(x, 44100, 16000, 8000),
        ...                     fit_length(resample(x, 44100, 16000), 8000)))
        True
    """
    if orig_rate <= 0 or target_rate <= 0:
        raise DataError(f"sample rates must be positive, got {orig_rate} -> {target_rate} Hz")
    g = gcd(int(orig_rate), int(target_rate))
    up, down = int(target_rate) // g, int(orig_rate) // g
    n_in = len(samples)
    n_out = -(-n_in * up // down)
    if up == down or n_out <= length:  # nothing is cropped: resample it all
        return fit_length(resample(samples, orig_rate, target_rate), length)
    start = (n_out - length) // 2  # fit_length keeps the centre
    margin = 10 * max(up, down) // up + 2  # resample_poly's filter half-length, in input samples
    first = max(0, start * down // up - margin)
    first -= first % down
    last = min(n_in, -(-(start + length) * down // up) + margin)
    out = resample(samples[first:last], orig_rate, target_rate)
    offset = first * up // down
    return out[start - offset : start - offset + length]


def fit_length(samples: np.ndarray, length: int) -> np.ndarray:
    """Zero-pad equally on both sides, or keep the centre, to exactly ``length`` samples.

    Centring keeps a short word in the middle of the window, where a pooled embedding sees all of it.

    Example:
        >>> fit_length(np.ones(2, np.float32), 4).tolist(), fit_length(np.arange(5.0), 3).tolist()
        ([0.0, 1.0, 1.0, 0.0], [1.0, 2.0, 3.0])
    """
    n = len(samples)
    if n == length:
        return samples
    if n > length:
        start = (n - length) // 2
        return samples[start : start + length]
    out = np.zeros(length, dtype=np.float32)
    start = (length - n) // 2
    out[start : start + n] = samples
    return out


NORMALIZE = ("none", "peak", "rms")


class AudioTransform:
    """``Waveform -> float32 tensor (num_samples,)``: resampled to ``sample_rate``, level-normalised, fixed length.

    ``normalize``: ``"peak"`` scales the loudest sample to ``level`` and ``"rms"`` the root mean square to
    ``level / 4``; recording gain is a large part of the difference between microphones and speakers, and
    neither a log-mel front end nor a pretrained embedding is insensitive to it. ``"none"`` keeps the file's
    level. The ``repr`` names every setting: it is part of the feature-cache key.

    Example:
        >>> t = AudioTransform(16000, 8000, normalize="peak")
        >>> x = t(Waveform(np.full(4000, 0.1, np.float32), 8000))
        >>> tuple(x.shape), round(float(x.abs().max()), 2)
        ((8000,), 0.9)
    """

    def __init__(self, sample_rate: int, num_samples: int, normalize: str = "none", level: float = 0.9) -> None:
        if normalize not in NORMALIZE:
            raise DataError(f"audio normalize must be one of {', '.join(NORMALIZE)}; got {normalize!r}")
        if num_samples < 1 or sample_rate < 1:
            raise DataError(f"audio transform needs positive sample_rate and length, got {sample_rate}, {num_samples}")
        self.sample_rate = int(sample_rate)
        self.num_samples = int(num_samples)
        self.normalize = normalize
        self.level = float(level)

    def __call__(self, item: Waveform) -> torch.Tensor:
        if not isinstance(item, Waveform):
            raise DataError(f"an audio backbone reads decoded audio (Waveform), got {type(item).__name__}")
        x = resample_to_length(item.samples, item.sample_rate, self.sample_rate, self.num_samples)
        if self.normalize == "peak":
            peak = float(np.abs(x).max())
            x = x * (self.level / peak) if peak > 1e-8 else x
        elif self.normalize == "rms":
            rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
            x = x * (self.level / 4 / rms) if rms > 1e-8 else x
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))

    def __repr__(self) -> str:
        return (f"AudioTransform(sample_rate={self.sample_rate}, num_samples={self.num_samples}, "
                f"normalize={self.normalize!r}, level={self.level})")


# -- folders -----------------------------------------------------------------------------------
@dataclass
class _Item:
    path: Path
    label: str
    domain: str | None = None
    index: int | None = None
    split: str | None = None


def load_audio_folder(
    root: str | Path,
    split: str = "train",
    pattern: str | None = None,
    labels_csv: str | Path | None = None,
    domains: Iterable[str] | None = None,
    exclude_domains: Iterable[str] | None = None,
    verify: bool = True,
) -> DomainDataset:
    """Read a folder of WAV files as a labelled :class:`DomainDataset` of file paths.

    Args:
        root: the folder (searched recursively; hidden files and folders are skipped).
        split: ``train``, ``test``, ... or ``all``. Used when the folder has split subfolders, the pattern a
            ``split`` group or the CSV a ``split`` column; otherwise every split is the whole folder.
        pattern: a regular expression with a named group ``label`` and optional ``domain``, ``index`` and
            ``split`` groups, matched against the whole file name (against the path relative to ``root``, or to
            the split folder, when it contains ``/``). Every audio file must match. Default: class folders when
            the files lie in subfolders, else :data:`DEFAULT_PATTERN`.
        labels_csv: a CSV with columns ``path,label`` (optionally ``domain``, ``split``) instead of a pattern; a
            relative CSV path, and the relative paths in it, are looked up in ``root``.
        domains, exclude_domains: keep only these domains, or all but these (the ``domain`` group or column).
        verify: check every file's header now (missing, empty, truncated, not audio), all listed in one error.

    Returns:
        A dataset with ``inputs`` the file paths (str), ``kind="audio"``, ``classes`` the sorted label names of
        the whole folder (every split and domain, so datasets cut from one folder share class indices),
        ``domain`` the folder's name (with the kept or excluded domains), and ``meta["item_domains"]`` /
        ``meta["item_indices"]`` each item's domain ("" where none) and index (-1 where none).

    Raises:
        DataError: a missing folder, no audio files, a pattern without a ``label`` group or that some files do not
            match, a bad CSV, an unknown split or domain, or (with ``verify``) unusable files.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise DataError(f"audio folder {root} {what}; pass the folder that holds the WAV files")
    if not split or "/" in split or "\\" in split:
        raise DataError(f"split must be a name such as 'train', 'test' or 'all'; got {split!r}")
    if pattern is not None and labels_csv is not None:
        raise DataError("give either a file-name pattern or a labels CSV for an audio folder, not both")

    split_dirs = [d for d in _subdirs(root) if d.name.lower() in SPLIT_FOLDERS]
    if labels_csv is not None:
        items = _items_from_csv(_csv_path(root, labels_csv), root)
        by_folder = False
    elif split_dirs:
        items = [it for d in split_dirs for it in _items_from_names(d, pattern, split=d.name)]
        by_folder = True
    else:
        items = _items_from_names(root, pattern)
        by_folder = False
    classes = sort_labels({it.label for it in items})

    items = _select_split(items, split, root, by_folder)
    items, name = _select_domains(items, root, domains, exclude_domains)
    paths = [str(it.path) for it in items]
    if verify:
        verify_audio(paths)
    index = {c: i for i, c in enumerate(classes)}
    return DomainDataset(
        inputs=paths,
        labels=np.asarray([index[it.label] for it in items], dtype=np.int64),
        domain=name,
        classes=classes,
        kind="audio",
        # per-item arrays: DomainDataset.subset keeps them aligned with the items
        meta={"root": str(root), "split": split,
              "item_domains": np.asarray([it.domain or "" for it in items], dtype=str),
              "item_indices": np.asarray([-1 if it.index is None else it.index for it in items], dtype=np.int64)},
    )


def sort_labels(labels: Iterable[str]) -> list[str]:
    """Class names in order: numerically when every label is an integer ("2" before "10"), else as strings.

    Example:
        >>> sort_labels({"10", "2", "1"}), sort_labels({"dog", "cat"})
        (['1', '2', '10'], ['cat', 'dog'])
    """
    names = set(labels)
    if names and all(re.fullmatch(r"-?\d+", n) for n in names):
        return sorted(names, key=int)
    return sorted(names)


def _items_from_names(folder: Path, pattern: str | None, split: str | None = None) -> list[_Item]:
    files = audio_files(folder)
    if not files:
        exts = ", ".join(sorted(AUDIO_EXTENSIONS))
        raise DataError(f"no audio files ({exts}) in {folder} or its subfolders")
    if pattern is None:
        nested = [f for f in files if f.parent != folder]
        if nested and len(nested) == len(files):  # one folder per class
            return [_Item(f, f.relative_to(folder).parts[0], split=split) for f in files]
        if nested:
            raise DataError(
                f"{folder} mixes WAV files in the folder itself ({files[0].name}, ...) with files in subfolders "
                f"({nested[0].relative_to(folder)}, ...): use one folder per class, or give a pattern or a CSV"
            )
        pattern = DEFAULT_PATTERN
    regex = compile_pattern(pattern)
    on_path = "/" in pattern
    items, unmatched = [], []
    for f in files:
        text = f.relative_to(folder).as_posix() if on_path else f.name
        m = regex.fullmatch(text)
        if m is None or not m.group("label"):
            unmatched.append(text)
            continue
        groups = m.groupdict()
        index = groups.get("index")
        items.append(_Item(f, groups["label"], groups.get("domain") or None,
                           int(index) if index is not None and index.isdigit() else None,
                           groups.get("split") or split))
    if unmatched:
        listed = ", ".join(unmatched[:_MAX_LISTED]) + (" ..." if len(unmatched) > _MAX_LISTED else "")
        raise DataError(
            f"{len(unmatched)} of {len(files)} audio files in {folder} do not match the file-name pattern "
            f"{pattern!r} (or match it with an empty label): {listed}; rename them or give a pattern that fits"
        )
    return items


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """The file-name regex, checked: valid, and with a named group ``label``."""
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise DataError(f"file-name pattern {pattern!r} is not a valid regular expression: {exc}") from exc
    if "label" not in regex.groupindex:
        raise DataError(
            f"file-name pattern {pattern!r} has no named group 'label': mark the class part of the name with "
            r"(?P<label>...), e.g. (?P<label>[a-z]+)_(?P<domain>\w+)_(?P<index>\d+)\.wav"
        )
    return regex


def _csv_path(root: Path, labels_csv: str | Path) -> Path:
    p = Path(labels_csv).expanduser()
    if not p.is_absolute() and (root / p).is_file():
        p = root / p
    if not p.is_file():
        raise DataError(f"labels CSV {labels_csv} not found (looked in {root} and the working directory)")
    return p


def _items_from_csv(path: Path, root: Path) -> list[_Item]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            fields = [c.strip() for c in reader.fieldnames or []]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read labels CSV {path}: {exc}") from exc
    missing = [c for c in ("path", "label") if c not in fields]
    if missing:
        raise DataError(f"labels CSV {path} needs the columns path,label (optionally domain, split); "
                        f"missing {', '.join(missing)} (header: {', '.join(fields) or 'none'})")
    if not rows:
        raise DataError(f"labels CSV {path} has a header but no rows")
    items = []
    for line, row in enumerate(rows, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        if not row["path"] or not row["label"]:
            raise DataError(f"labels CSV {path}, line {line}: empty path or label")
        long = next((c for c in ("label", "domain", "split") if len(row.get(c) or "") > MAX_NAME_CHARS), None)
        if long is not None:
            raise DataError(f"labels CSV {path}, line {line}: the {long} is {len(row[long]):,} characters long; a "
                            f"{long} is a name of at most {MAX_NAME_CHARS} characters")
        file = Path(row["path"]).expanduser()
        items.append(_Item(file if file.is_absolute() else root / file, row["label"],
                           row.get("domain") or None, None, row.get("split") or None))
    return items


def _select_split(items: list[_Item], split: str, root: Path, by_folder: bool) -> list[_Item]:
    have = sorted({it.split for it in items if it.split is not None})
    if split == ALL_SPLITS or not have:
        return items  # no split information: the whole folder is every split
    kept = [it for it in items if (it.split or "").lower() == split.lower()]
    if not kept:
        where = "split folders" if by_folder else "splits (pattern group or CSV column 'split')"
        raise DataError(f"audio data {root} has no split {split!r}; its {where}: {', '.join(have)} (or 'all')")
    return kept


def _select_domains(items: list[_Item], root: Path, domains: Iterable[str] | None,
                    exclude: Iterable[str] | None) -> tuple[list[_Item], str]:
    name = root.resolve().name or str(root)
    keep = [d for d in (domains or []) if d]
    drop = [d for d in (exclude or []) if d]
    if not keep and not drop:
        return items, name
    known = sorted({it.domain for it in items if it.domain is not None})
    if not known:
        raise DataError(f"audio data {root} has no domains to select: add a (?P<domain>...) group to the pattern "
                        "or a 'domain' column to the CSV")
    unknown = [d for d in keep + drop if d not in known]
    if unknown:
        raise DataError(f"audio data {root}: unknown domain(s) {', '.join(unknown)}; its domains: {', '.join(known)}")
    if keep:
        items, name = [it for it in items if it.domain in keep], f"{name}/{'+'.join(keep)}"
    if drop:
        items, name = [it for it in items if it.domain not in drop], f"{name}/not-{'+'.join(drop)}"
    if not items:
        raise DataError(f"audio data {root}: no files left after selecting domains ({name})")
    return items, name


def audio_files(folder: Path) -> list[Path]:
    """Every audio file under ``folder`` (recursively, sorted; hidden files and folders skipped)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _IGNORED_DIRS)
        out.extend(Path(dirpath) / f for f in filenames
                   if not f.startswith(".") and Path(f).suffix.lower() in AUDIO_EXTENSIONS)
    return sorted(out)


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")
                  and p.name not in _IGNORED_DIRS)


# -- specs: a path with options ------------------------------------------------------------------
def parse_audio_spec(spec: str) -> tuple[Path, dict[str, str]]:
    """``"PATH?key=value&key=value"`` -> ``(PATH, options)``; values may be %-escaped (``%26`` for ``&``)."""
    path, _, query = spec.partition("?")
    options: dict[str, str] = {}
    for part in query.split("&") if query else []:
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in SPEC_OPTIONS:
            raise DataError(f"audio data {spec!r}: option {part!r} is not one of {', '.join(SPEC_OPTIONS)} "
                            "(write PATH?domain=a,b&exclude=c&pattern=REGEX&csv=FILE)")
        options[key] = unquote(value)
    return Path(path).expanduser(), options


def is_audio_spec(spec: str) -> bool:
    """Whether ``spec`` names audio data: a folder holding audio files, or a CSV whose ``path`` column lists them.

    Cheap: the folder search stops at the first audio file, and at the first image (an image folder).
    """
    path, _, _ = spec.partition("?")
    p = Path(path).expanduser()
    if p.is_file():
        return p.suffix.lower() == ".csv" and _csv_lists_audio(p)
    return p.is_dir() and _holds_audio(p)


def load_audio_spec(spec: str, split: str = "train") -> DomainDataset:
    """Load ``PATH[?options]``: a folder (:func:`load_audio_folder`) or a CSV of audio files.

    Options: ``pattern=REGEX`` (file names), ``csv=FILE`` (labels CSV in the folder), ``domain=a,b`` (keep
    these domains), ``exclude=a,b`` (drop these).

    Example:
        >>> path, options = parse_audio_spec("recordings?exclude=george,theo&csv=labels.csv")
        >>> str(path), options
        ('recordings', {'exclude': 'george,theo', 'csv': 'labels.csv'})
    """
    path, opts = parse_audio_spec(spec)
    domains = [d.strip() for d in opts.get("domain", "").split(",") if d.strip()]
    exclude = [d.strip() for d in opts.get("exclude", "").split(",") if d.strip()]
    if path.is_file():
        if "csv" in opts or "pattern" in opts:
            raise DataError(f"audio data {spec!r}: a CSV path already says where the labels are; drop csv=/pattern=")
        return load_audio_folder(path.parent, split, labels_csv=path, domains=domains, exclude_domains=exclude)
    return load_audio_folder(path, split, pattern=opts.get("pattern"), labels_csv=opts.get("csv"),
                             domains=domains, exclude_domains=exclude)


def _holds_audio(folder: Path) -> bool:
    base = len(folder.parts)
    for dirpath, dirnames, filenames in os.walk(folder):
        for f in filenames:
            suffix = Path(f).suffix.lower()
            if suffix in AUDIO_EXTENSIONS:
                return True
            if suffix in IMAGE_EXTENSIONS:
                return False
        if len(Path(dirpath).parts) - base >= _SCAN_DEPTH:
            dirnames[:] = []
        else:
            dirnames.sort()
    return False


def _csv_lists_audio(path: Path) -> bool:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if "path" not in [c.strip() for c in reader.fieldnames or []]:
                return False
            row = next(reader, None)
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    if row is None:
        return False
    value = next((v for k, v in row.items() if (k or "").strip() == "path"), "") or ""
    return Path(value.strip()).suffix.lower() in AUDIO_EXTENSIONS

"""Reading a run folder back for its report: the folder may come from someone else, so what it holds is data.

``transferkit report`` and ``report.html`` read plots, configs, seeds' folders and numbers that a run wrote. A run
folder received from elsewhere may hold anything in their place: a ``report.json`` that lists ``/etc/passwd`` or
``../../secret.png`` as a plot, a ``config.yaml`` that is a link to a private file, a seed named
``x/../../victim``, a 400-digit accuracy. Everything here is an allow-list of what transferkit itself writes:

- a plot is one of the file names transferkit draws (:data:`PLOT_NAME`), a regular PNG file directly inside the
  folder, opened without following a link (``O_NOFOLLOW``);
- a configuration is a regular file opened the same way, of bounded size, strict UTF-8;
- a seed is an integer within the config's range, and its folder a real folder inside the run (not a link);
- an evaluation's name (``source``, ``target_adapted``, ...) becomes part of a file name only if it matches
  :data:`ROLE_NAME`;
- numbers in a report are those a run can write: integers within ±2⁶³ (larger ones cannot become floats).

Whatever fails these checks is never read, embedded or written to: a plot or a config shows a note in its place
on the page; a seed, an evaluation name or a number is a :class:`~transferkit.errors.RunDirError` naming the file.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path
from typing import Any

from transferkit.config import MAX_CONFIG_BYTES, MAX_SEED
from transferkit.errors import RunDirError

# every PNG transferkit draws into a run or demo folder (evaluate.report, demo.py): nothing else is ever embedded
PLOT_NAME = re.compile(r"(?:learning_curves|feature_map|comparison|confusion_[a-z][a-z0-9_]{0,63})\.png")
ROLE_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")  # evaluations' keys: source, target, target_adapted, ...
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MAX_PLOT_BYTES = 32 * 2**20  # a plot at 110 dpi is well under 1 MiB
MAX_REPORT_INT = 2**63  # counts, seeds, epochs: a run writes none larger, and larger ones overflow a float
MAX_FEATURE_MAP_BYTES = 64 * 2**20  # the map holds at most 2 x 2 x 500 x 50 float32: 400 KB
MAX_FEATURE_MAP_ROWS = 5000  # per domain (the map samples 500): more would make the t-SNE take minutes
FEATURE_MAP_KEYS = ("after_source", "after_target", "before_source", "before_target", "source_labels",
                    "source_split", "target_split", "note")


# -- files ---------------------------------------------------------------------------------------------------------
def read_own_file(folder: Path, name: str, what: str, limit: int) -> bytes:
    """The bytes of ``folder/name``, a regular file of at most ``limit`` bytes; never through a link.

    ``O_NOFOLLOW`` makes the check and the read one step (no window to swap a file for a link), and
    ``O_NONBLOCK`` keeps a FIFO from hanging the open; either is then refused as not a regular file."""
    if not name or "/" in name or name in (".", ".."):
        raise RunDirError(f"{what} {name!r} is not a file name inside {folder}")
    path = Path(folder) / name
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RunDirError(f"{what} {path} is a symbolic link, not a regular file the run wrote; transferkit "
                              "does not follow links out of a run folder") from None
        if exc.errno == errno.ENOENT:
            raise RunDirError(f"{what} {path} does not exist") from None
        raise RunDirError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise RunDirError(f"{what} {path} is not a regular file")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise RunDirError(f"{what} {path} is larger than {limit:,} bytes, more than a run writes")
    return data


def refuse_link(path: Path, what: str) -> None:
    """A RunDirError if ``path`` is a symbolic link: what a report reads or writes stays in the run folder."""
    if Path(path).is_symlink():
        raise RunDirError(f"{what} {path} is a symbolic link, not a regular file the run wrote; transferkit does not "
                          "follow links out of a run folder: remove the link")


def read_plot(folder: Path, name: Any) -> bytes:
    """A PNG that transferkit drew into ``folder``, to embed in a page: the name must be one transferkit writes."""
    if not isinstance(name, str) or not PLOT_NAME.fullmatch(name):
        raise RunDirError(f"{str(name)[:80]!r} is not the name of a plot transferkit draws; it is not embedded")
    data = read_own_file(folder, name, "plot", MAX_PLOT_BYTES)
    if not data.startswith(PNG_MAGIC):
        raise RunDirError(f"plot {Path(folder) / name} is not a PNG image")
    return data


def config_text(path: Path) -> tuple[str | None, str]:
    """``(text, "")`` of a run's ``config.yaml``, or ``(None, why)`` when it cannot be shown (a link, not a
    regular file, too large, not UTF-8): the page says why rather than embedding it or failing the report."""
    try:
        data = read_own_file(Path(path).parent, Path(path).name, "config", MAX_CONFIG_BYTES)
        return data.decode("utf-8"), ""
    except RunDirError as exc:
        return None, str(exc)
    except UnicodeDecodeError as exc:
        return None, f"{path} is not UTF-8 text (byte {exc.start}); it is not shown"


# -- folders -------------------------------------------------------------------------------------------------------
def check_seed(value: Any, where: Path | str) -> int:
    """A seed from a report: an integer in the config's range, as ``seed-<int>`` folders are named."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise RunDirError(f"{where} names seed {str(value)[:80]!r}; a seed is an integer from 0 to {MAX_SEED}: it "
                          "is not a transferkit report")
    return value


def seed_folder(run_dir: Path, seed: Any) -> Path | None:
    """``run_dir/seed-<seed>`` when ``seed`` is a valid seed and that is a real folder (not a link out)."""
    try:
        seed = check_seed(seed, run_dir)
    except RunDirError:
        return None
    path = Path(run_dir) / f"seed-{seed}"
    return path if path.is_dir() and not path.is_symlink() else None


def check_role(role: Any, where: Path) -> str:
    """An evaluation's name, before it becomes part of a plot's file name."""
    if not isinstance(role, str) or not ROLE_NAME.fullmatch(role):
        raise RunDirError(f"{where} holds an evaluation named {str(role)[:80]!r}, not a name transferkit writes "
                          "(lower-case letters, digits, '_'): it is not a transferkit report")
    return role


def evaluations_folder(run_dir: Path) -> Path:
    """``run_dir/evaluations``, where ``transferkit evaluate`` writes: a real folder inside the run (or absent),
    never a link that would carry the write elsewhere."""
    path = Path(run_dir) / "evaluations"
    if path.is_symlink():
        raise RunDirError(f"{path} is a symbolic link (to {os.readlink(path)}); transferkit does not write through "
                          "links out of a run folder: remove the link")
    if path.exists() and not path.is_dir():
        raise RunDirError(f"{path} exists and is not a folder; move it away to keep evaluations")
    return path


# -- numbers -------------------------------------------------------------------------------------------------------
def check_numbers(report: Any, where: Path | str) -> None:
    """Refuse integers a run never writes (beyond ±2⁶³): formatting one as a float raises OverflowError.

    Iterative, so a deep report cannot exhaust the stack (``json`` itself stops at about 1,000 levels)."""
    stack: list[tuple[str, Any]] = [("", report)]
    while stack:
        key, value = stack.pop()
        if isinstance(value, dict):
            stack.extend((f"{key}.{k}" if key else str(k), v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((f"{key}[{i}]", v) for i, v in enumerate(value))
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) >= MAX_REPORT_INT:
            raise RunDirError(f"{where} holds a {len(str(abs(value)))}-digit number at {key[:120] or 'its top'}; a "
                              "run writes none so large: it is not a transferkit report")


# -- the feature map -----------------------------------------------------------------------------------------------
def load_feature_map(path: Path) -> dict[str, Any] | None:
    """The arrays of a seed's ``feature_map.npz``, or None when it is absent, a link, damaged or not what
    :func:`transferkit.pipeline.report.save_feature_map` writes (the report then says there is no map).

    Each array's declared size is read from its header before anything is loaded: a few hundred bytes may
    declare terabytes."""
    import zipfile

    import numpy as np

    path = Path(path)
    if path.is_symlink() or not path.is_file():
        return None
    try:
        if _declared_bytes(path) > MAX_FEATURE_MAP_BYTES:
            return None
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files if k in FEATURE_MAP_KEYS}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, RunDirError, MemoryError):
        return None
    return arrays if _map_shapes_ok(arrays) else None


def _declared_bytes(path: Path) -> int:
    """The bytes the arrays of an ``.npz`` declare, read from the headers alone."""
    import zipfile

    import numpy as np

    fmt = np.lib.format
    total = 0
    with zipfile.ZipFile(path) as zf:
        members = zf.infolist()
        if len(members) > 2 * len(FEATURE_MAP_KEYS):
            raise RunDirError(f"{path} holds {len(members)} arrays, not a feature map")
        for member in members:
            with zf.open(member) as f:
                version = fmt.read_magic(f)
                if version == (1, 0):
                    shape, _, dtype = fmt.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, _, dtype = fmt.read_array_header_2_0(f)
                else:
                    raise RunDirError(f"{path}: array format {version} is not one a feature map is written in")
            if dtype.hasobject:
                raise RunDirError(f"{path} holds Python objects")
            if any(int(n) < 0 for n in shape):  # summed in, (3e9,) and (-3e9,) declared nothing at all
                raise RunDirError(f"{path}: an array declares a negative size {shape}")
            nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
            if nbytes > member.file_size:  # a header cannot declare more than its member holds
                raise RunDirError(f"{path}: an array declares {nbytes:,} bytes in a member of {member.file_size:,}")
            total += nbytes
    return total


def _map_shapes_ok(arrays: dict[str, Any]) -> bool:
    """The shapes and types the writer produces: numeric 2-D features of one width per pair, integer labels."""
    def features(a: Any) -> bool:
        return a.ndim == 2 and a.dtype.kind in "fiu" and a.shape[1] > 0 and a.shape[0] <= MAX_FEATURE_MAP_ROWS

    pairs = [("after_source", "after_target")]
    if "before_source" in arrays or "before_target" in arrays:
        pairs.append(("before_source", "before_target"))
    for s, t in pairs:
        if s not in arrays or t not in arrays or not (features(arrays[s]) and features(arrays[t])):
            return False
        if arrays[s].shape[1] != arrays[t].shape[1]:
            return False
    labels = arrays.get("source_labels")
    if labels is not None and not (labels.ndim == 1 and labels.dtype.kind in "iu"
                                   and len(labels) == len(arrays["after_source"])):
        arrays.pop("source_labels")  # the map is still right without the class colouring
    for key in ("source_split", "target_split", "note"):
        if key in arrays and not (arrays[key].ndim == 0 and arrays[key].dtype.kind == "U"):
            arrays.pop(key)
    return True

"""The run directory: one folder per run, written so that a crash never leaves a half-written file.

Layout of ``runs/<name>/`` (one seed)::

    config.yaml        the resolved configuration (every default filled in)
    metrics.jsonl      one JSON record per epoch and phase
    checkpoints/       <phase>/last and <phase>/best: model.safetensors + state.pt (weights_only) + meta.json
    model.safetensors  the selected model (architecture in its metadata), for evaluate / predict / file:
    report.json        metrics of the selected model; report.md; *.png plots

With several seeds each seed gets the same layout under ``seed-<s>/`` and the top level holds the
config and the report aggregated over seeds (mean ± std).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from transferkit.errors import RunDirError

RUN_MARKER = "config.yaml"


# -- atomic writes ------------------------------------------------------------------------------
def _not_replaceable(path: Path) -> str | None:
    """Why ``path`` must not be replaced by a regular file, or None. What exists there is a regular file (or a link
    to one), or nothing, or a link leading nowhere; anything else (a device node, a FIFO, a socket, a folder, a link
    to one of them) is never replaced: run as root, ``--out /dev/null`` would swap the system's device for a file."""
    import stat

    try:
        mode = path.stat().st_mode
    except OSError:
        return None  # nothing there, a dangling link (os.replace replaces the link itself), or the write will fail
    if stat.S_ISREG(mode):
        return None
    kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else
            "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else
            "not a regular file")
    link = f" (a link to {os.readlink(path)})" if path.is_symlink() else ""
    return f"it is {kind}{link}"


def check_output_file(path: str | Path, *, overwrite: bool, flag: str = "--out") -> Path:
    """Check a file the user named for output before any work starts: it may be replaced only when it is a regular
    file and ``overwrite`` says so; a device, FIFO, folder or a link to one is never replaced."""
    path = Path(path)
    problem = _not_replaceable(path)
    if problem is not None:
        raise RunDirError(f"{flag} {path}: {problem}; transferkit writes only regular files: give a file path")
    if os.path.lexists(path) and not overwrite:
        raise RunDirError(f"{flag} {path} already exists; pass --overwrite to replace it, or give another path")
    return path


@contextlib.contextmanager
def atomic_path(path: Path, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds.

    What is at ``path`` is checked before and again just before the move (the block may take minutes): only a
    regular file is ever replaced, and with ``overwrite=False`` not even that."""
    path = Path(path)
    _check_target(path, overwrite)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise RunDirError(f"cannot write {path}: {exc.strerror or exc}") from exc
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes it owner-only; a plain open() would not
        _check_target(path, overwrite)
        os.replace(tmp_path, path)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        raise RunDirError(f"cannot write {path}: {exc.strerror or exc}") from exc
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _check_target(path: Path, overwrite: bool) -> None:
    problem = _not_replaceable(path)
    if problem is not None:
        raise RunDirError(f"cannot write {path}: {problem}; only a regular file is replaced")
    if not overwrite and os.path.lexists(path):
        raise RunDirError(f"cannot write {path}: it already exists (pass --overwrite to replace it)")


def _read_umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it: put it back at once (done once, at import)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def atomic_write_text(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_json(path: Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def atomic_save_safetensors(state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> Path:
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)


def atomic_torch_save(obj: Any, path: Path) -> Path:
    """torch.save for plain containers of tensors and numbers: read back with ``weights_only=True``."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one record and flush it to disk: a killed run keeps every finished epoch's metrics."""
    line = json.dumps(record, default=_json_default) + "\n"
    try:
        with open(path, "a+b") as f:
            if f.tell() > 0:  # a torn last line (killed mid-write) must not swallow this record
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    line = "\n" + line
            f.write(line.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise RunDirError(f"cannot append to {path}: {exc.strerror or exc}") from exc


MAX_RUN_FILE_BYTES = 256 * 2**20  # report.json, metrics.jsonl: far larger than any run writes


def _read_run_file(path: Path, what: str) -> bytes:
    """The bytes of a file of a run folder: a regular file of bounded size (a run folder may come from elsewhere:
    a link to /dev/zero or a FIFO must not hang or exhaust memory)."""
    import stat

    try:
        info = Path(path).stat()
        if not stat.S_ISREG(info.st_mode):
            raise RunDirError(f"{what} {path} is not a regular file")
        if info.st_size > MAX_RUN_FILE_BYTES:
            raise RunDirError(f"{what} {path} is {info.st_size:,} bytes, more than a run writes; it is not a run's")
        return Path(path).read_bytes()
    except OSError as exc:
        raise RunDirError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc


# metrics records: flat values only, and the counters are integers (what the engine writes)
_COUNTERS = ("epoch", "step", "seed")


def _is_record(record: Any) -> bool:
    if not isinstance(record, dict):
        return False
    if not all(isinstance(v, (str, int, float, bool)) or v is None for v in record.values()):
        return False
    return all(isinstance(record[k], int) and not isinstance(record[k], bool) for k in _COUNTERS if k in record)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Records of a metrics file; a torn last line (killed mid-write) is ignored, and so is any line that is not
    a record the engine writes (not UTF-8 JSON, nested values, counters that are not integers)."""
    if not Path(path).exists():
        return []
    records = []
    for line in _read_run_file(path, "metrics file").splitlines():
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            continue
        if _is_record(record):
            records.append(record)
    return records


def read_json(path: Path, what: str = "file") -> Any:
    """A JSON file of a run folder; a damaged or foreign one is a RunDirError naming it, not a traceback."""
    data = _read_run_file(path, what)
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise RunDirError(f"{what} {path} is damaged (not UTF-8 JSON: {str(exc)[:80]}); rebuild it or start the "
                          "run again") from None


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):  # numpy / torch scalars and arrays (.item() fails on more than one element)
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _seed_number(name: str) -> float:
    suffix = name[len("seed-") :]
    return int(suffix) if suffix.isdigit() else float("inf")


# -- the run directory --------------------------------------------------------------------------
class RunDir:
    """Paths of one run (or one seed of a run) and the rules for creating it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    # paths
    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def model(self) -> Path:
        return self.path / "model.safetensors"

    @property
    def report_json(self) -> Path:
        return self.path / "report.json"

    @property
    def report_md(self) -> Path:
        return self.path / "report.md"

    def seed(self, seed: int) -> RunDir:
        return RunDir(self.path / f"seed-{seed}")

    def seed_dirs(self) -> list[RunDir]:
        # a seed folder that is a link leads out of the run (a run folder may come from someone else): not a seed's
        dirs = [p for p in self.path.glob("seed-*") if p.is_dir() and not p.is_symlink()]
        # numeric order (seed-2 before seed-10), so "the first seed" is the lowest one
        return [RunDir(p) for p in sorted(dirs, key=lambda p: (_seed_number(p.name), p.name))]

    def exists(self) -> bool:
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"{self.path} exists and is a file, not a run directory; choose another --name or "
                              "--output-dir")
        try:
            return self.path.exists() and any(self.path.iterdir())
        except OSError as exc:
            raise RunDirError(f"cannot read run directory {self.path}: {exc.strerror or exc}") from exc

    def prepare(self, *, overwrite: bool = False, resume: bool = False) -> None:
        """Create the folder; refuse to touch an existing run unless ``overwrite`` (or ``resume``).

        A run directory that is a symbolic link is refused: writing (or ``--overwrite`` deleting) through it would
        act on a folder outside the output directory."""
        if self.path.is_symlink():
            raise RunDirError(
                f"run directory {self.path} is a symbolic link (to {os.readlink(self.path)}); transferkit does not "
                "write through links out of the output directory: remove the link or choose another --name"
            )
        if self.exists():
            if resume:
                return
            if not overwrite:
                raise RunDirError(
                    f"run directory {self.path} already exists; pass --overwrite to replace it, "
                    "--resume to continue it, or choose another --name"
                )
            if not (self.path / RUN_MARKER).exists() and not self.seed_dirs():
                raise RunDirError(f"{self.path} exists but is not a transferkit run; refusing to delete it")
            shutil.rmtree(self.path)
        elif resume:
            raise RunDirError(f"cannot resume: run directory {self.path} does not exist")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunDirError(f"cannot create run directory {self.path}: {exc.strerror or exc}") from exc

    def find_model(self, seed: int | None = None) -> Path:
        """The selected model of this run (of ``seed``, or the first seed of a multi-seed run)."""
        if self.model.exists() and seed is None:
            return _not_a_link(self.model)
        seeds = self.seed_dirs()
        if seed is not None:
            cand = self.seed(seed).model
            if cand.exists():
                _not_a_link(cand.parent)
                return _not_a_link(cand)
            raise RunDirError(f"run {self.path} has no finished model for seed {seed}")
        for s in seeds:
            if s.model.exists():
                return _not_a_link(s.model)
        if not self.path.exists():
            raise RunDirError(f"run directory {self.path} does not exist")
        raise RunDirError(f"run {self.path} has no finished model.safetensors (did training finish? try --resume)")


def _not_a_link(path: Path) -> Path:
    """``path`` itself, refused if it is a symbolic link: what a run folder holds is read from inside it, never from
    wherever a link in a folder received from someone else points."""
    if path.is_symlink():
        raise RunDirError(f"{path} is a symbolic link (to {os.readlink(path)}); transferkit reads a run's files from "
                          "inside its folder only: replace the link with the file")
    return path

"""The one memory budget for what a data loader allocates from sizes a file *declares*, and the file checks every
loader shares.

A file can declare far more than it holds: a 192-byte ``.npy`` header a 37 GiB shape, a 216-byte sparse ``.mat`` a
2,000,000,000-row matrix, a one-line svmlight file feature index 1,999,999,999, a compressed WAV a billion frames.
Each loader computes the bytes it is about to allocate, with the dtype it will really allocate, and asks
:func:`check_allocation` first, so such a file is a one-line :class:`~transferkit.errors.DataError` naming it, never
a ``MemoryError`` traceback or a machine that starts swapping. :func:`allocating` turns a ``MemoryError`` that still
happens (a budget too generous for what is free right now) into the same kind of error.

The budget is the smallest of

- :data:`DEFAULT_MAX_DATA_BYTES` (8 GiB), the limit svmlight files had before, now every loader's;
- a quarter of the machine's physical memory: a loaded array is copied at least once more (splits, float32, the
  training cache), so more would not train anyway;
- half of the address space still free under ``ulimit -v`` (``RLIMIT_AS``), when one is set.

``TRANSFERKIT_MAX_DATA_GIB`` (an environment variable, the user's own: a file cannot set it) replaces the first two.
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from transferkit.errors import DataError

DEFAULT_MAX_DATA_BYTES = 8 * 2**30
BUDGET_ENV = "TRANSFERKIT_MAX_DATA_GIB"
_GIB = 2**30


def data_budget() -> int:
    """The most bytes one data file may make a loader allocate (see the module docstring)."""
    configured = _configured_budget()
    limits = [configured] if configured is not None else [DEFAULT_MAX_DATA_BYTES, _physical_memory() // 4]
    free_address_space = _free_address_space()
    if free_address_space is not None:
        limits.append(free_address_space // 2)
    return max(min(limits), 0)


def check_allocation(nbytes: int, what: str, fix: str) -> None:
    """Refuse ``nbytes`` over :func:`data_budget` before anything is allocated.

    ``what`` names the file and the array (``"x.npz: x_train (100,000 x 100,000 float32)"``); ``fix`` says what to
    do (``"reduce the features first"``). Sizes are Python integers, so a declared shape cannot overflow them.
    """
    budget = data_budget()
    if nbytes > budget:
        raise DataError(
            f"{what} would take {_gib(nbytes)} in memory, over the {_gib(budget)} a data file may ask for "
            f"({_budget_reason()}); {fix}, or raise the limit with {BUDGET_ENV}=N if this machine has the memory"
        )


def array_bytes(shape: tuple[int, ...] | list[int], itemsize: int) -> int:
    """Bytes of an array of ``shape``, computed on Python integers (no overflow, whatever a header declares)."""
    return math.prod(int(n) for n in shape) * int(itemsize)


@contextmanager
def allocating(what: str) -> Iterator[None]:
    """Turn a ``MemoryError`` inside the block (the budget allowed it but the memory is not free now) into a
    :class:`DataError` naming ``what``."""
    try:
        yield
    except MemoryError as exc:
        raise DataError(
            f"not enough memory to load {what} ({exc or 'MemoryError'}); free memory, or reduce the data"
        ) from None


def regular_file_problem(path: Path) -> str | None:
    """Why ``path`` (followed through links) is not a regular file a loader may read, or None.

    A FIFO blocks a reader forever and ``/dev/zero`` never ends; neither is "a folder" or "missing", so the message
    says what it is.
    """
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "does not exist" if not path.is_symlink() else "is a link to nothing (a dangling symbolic link)"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a folder, not a data file"
    kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a character device" if stat.S_ISCHR(mode)
            else "a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a file")
    return f"is {kind}, not a regular file; give a data file"


# -- where the budget comes from ------------------------------------------------------------------------------------
def _configured_budget() -> int | None:
    text = os.environ.get(BUDGET_ENV, "").strip()
    if not text:
        return None
    try:
        gib = float(text)
    except ValueError:
        raise DataError(f"{BUDGET_ENV}={text!r} is not a number of GiB (e.g. {BUDGET_ENV}=16)") from None
    if not math.isfinite(gib) or gib <= 0:
        raise DataError(f"{BUDGET_ENV}={text!r} must be a positive number of GiB (e.g. {BUDGET_ENV}=16)")
    return int(gib * _GIB)


def _physical_memory() -> int:
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):  # not POSIX: the configured budget alone
        return 4 * DEFAULT_MAX_DATA_BYTES


def _free_address_space() -> int | None:
    """Bytes of address space left under ``ulimit -v``, or None where no limit is set (or it cannot be read)."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    except (ImportError, OSError, ValueError):
        return None
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return None
    return max(int(soft) - _virtual_size(), 0)


def _virtual_size() -> int:
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _budget_reason() -> str:
    """Which of the three limits is the budget, so the message says what to change."""
    budget = data_budget()
    if budget == _configured_budget():
        return f"set by {BUDGET_ENV}"
    if budget == DEFAULT_MAX_DATA_BYTES:
        return "the default limit"
    if budget == _physical_memory() // 4:
        return f"a quarter of this machine's {_gib(_physical_memory())} of memory"
    return "half the address space left under ulimit -v"


def _gib(n: int) -> str:
    return f"{n / _GIB:,.1f} GiB" if n >= _GIB // 10 else f"{n / 2**20:,.1f} MiB"

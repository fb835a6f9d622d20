"""What many test modules share: tiny data (Gaussian classes in memory, in ``.npz``/CSV files, as a
:class:`DomainDataset`), the config of a small MLP run on such files, and the CLI called in process.

Plain functions, not fixtures: tests call them with arguments, several times in one test and from their own helpers,
which a fixture cannot be. ``import helpers`` works from any test module because pytest puts ``tests/`` (where the
root conftest.py lives) on ``sys.path``. Each helper draws its numbers exactly as the copies it replaced did (same
generator calls in the same order), so every test sees the data it was written against."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from typer.testing import CliRunner

from transferkit.cli import app
from transferkit.config import RunConfig, parse_config
from transferkit.data import DomainDataset

runner = CliRunner()


# -- the CLI -------------------------------------------------------------------------------------------------------
def invoke(*args: Any, show_crash: bool = False) -> tuple[int, str]:
    """``transferkit ARGS`` in this process: ``(exit code, output)``. ``show_crash`` appends the exception of a
    command that neither succeeded (0) nor failed as a user error (2), so a failed assertion on the code names it."""
    result = runner.invoke(app, [str(a) for a in args])
    extra = f"\n{result.exception!r}" if show_crash and result.exit_code not in (0, 2) else ""
    return result.exit_code, result.output + extra


def invoke_ok(*args: Any) -> str:
    """``transferkit ARGS``, which must succeed: its output."""
    code, out = invoke(*args)
    assert code == 0, out
    return out


# -- data ------------------------------------------------------------------------------------------------------------
def two_blobs(n: int, rng: np.random.Generator | int, *, centre: float = 1.5, noise: float = 0.5,
              shift: tuple[float, float] = (0.0, 0.0), swap: bool = False,
              dtype: type | None = np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Two Gaussian classes in 2-D at x = -centre (class 0) and x = +centre (class 1), moved by ``shift``;
    ``swap`` puts class 0 on the right (a conditional shift). ``rng``: a generator, or the seed of a new one."""
    rng = np.random.default_rng(rng) if isinstance(rng, int) else rng
    y = rng.integers(0, 2, n)
    side = np.where((y == 1) != swap, centre, -centre)
    x = np.stack([side, np.zeros(n)], 1) + rng.normal(0, noise, (n, 2)) + np.asarray(shift)
    return (x if dtype is None else x.astype(dtype)), y


def gaussian_classes(n: int, d: int, classes: int | Sequence[str], *, seed: int = 0, centre_sd: float = 4.0,
                     spread: float = 1.0, shift: float = 0.0, per_class: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)``: classes around random centres (drawn with standard deviation ``centre_sd``) with noise ``spread``,
    the labels cycling through the classes (``n`` items), or ``n`` items of each class in a row (``per_class``).
    ``classes``: a count (integer labels) or names (the labels are the names)."""
    k = classes if isinstance(classes, int) else len(classes)
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, centre_sd, (k, d))
    y = np.repeat(np.arange(k), n) if per_class else np.arange(n) % k
    x = (centres[y] + rng.normal(0, spread, (len(y), d)) + shift).astype(np.float32)
    return x, (y if isinstance(classes, int) else np.asarray(classes)[y])


def save_splits(path: Path, x: np.ndarray, y: np.ndarray, n_train: int,
                classes: Sequence[str] | None = None) -> Path:
    """An ``.npz`` vector task: the first ``n_train`` items its train split, the rest its test split."""
    named = {} if classes is None else {"classes": np.array(classes)}
    np.savez(path, x_train=x[:n_train], y_train=y[:n_train], x_test=x[n_train:], y_test=y[n_train:], **named)
    return path


def vector_dataset(n: int, d: int, *, classes: int | Sequence[str] = 2, labelled: bool = True,
                   seed: int | None = 0, domain: str = "toy") -> DomainDataset:
    """``n`` feature vectors of width ``d``, labels cycling through the classes (names ``c0``, ``c1``... for a
    count). ``seed``: standard normal inputs from it; None: the inputs count up (0, 1, 2, ...), easy to follow
    through subsets and splits."""
    names = [f"c{i}" for i in range(classes)] if isinstance(classes, int) else list(classes)
    if seed is None:
        x = np.arange(n * d, dtype=np.float32).reshape(n, d)
    else:
        x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    y = np.arange(n) % len(names) if labelled else None
    return DomainDataset(x, y, domain, names, "vector")


def vectors_npz(path: Path, n: int = 12, width: int = 4, classes: tuple[str, ...] = ("neg", "pos"),
                **arrays: np.ndarray | None) -> Path:
    """A separable ``.npz`` vector task (keys ``x``, ``y``, ``classes``); ``arrays`` replace or add keys, and a key
    given None is left out."""
    y = np.arange(n) % len(classes)
    x = np.random.default_rng(0).normal(size=(n, width)).astype(np.float32) + 2.0 * y[:, None]
    content = {"x": x, "y": y, "classes": np.array(classes), **arrays}
    np.savez(path, **{k: v for k, v in content.items() if v is not None})
    return path


def vectors_csv(path: Path, n: int = 40, labels: list[str] | None = None) -> Path:
    """A CSV of three feature columns and a ``label`` column (0/1 alternating, or ``labels``), one file, no splits."""
    rows = ["f0,f1,f2,label"]
    for i in range(n):
        label = labels[i] if labels else str(i % 2)
        rows.append(f"{(i % 2) + 0.1 * (i % 5)},{i % 3},{0.5 * (i % 2)},{label}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


# -- run configs -----------------------------------------------------------------------------------------------------
def mlp_config(out: Path, name: str, source: Any, target: Any, *, mlp: dict[str, Any] | None = None,
               train: dict[str, Any] | None = None, adapt: dict[str, Any] | None = None,
               model: dict[str, Any] | None = None, seeds: list[int] | None = None, **dotted: Any) -> RunConfig:
    """A run of an ``mlp`` (``mlp``: its backbone_kwargs; ``model``: more model settings, as heads) from ``source``
    to ``target`` written under ``out``, through :func:`parse_config` with ``dotted`` overrides (``"adapt.method":
    "dann"``) as the CLI's ``--set`` gives them."""
    raw: dict[str, Any] = {"name": name, "output_dir": str(out), "data": {"source": source, "target": target},
                           "model": {"backbone": "mlp", **({"backbone_kwargs": mlp} if mlp is not None else {}),
                                     **(model or {})}}
    if seeds is not None:
        raw["seeds"] = seeds
    if adapt is not None:
        raw["adapt"] = adapt
    if train is not None:
        raw["train"] = train
    return parse_config(raw, dotted)

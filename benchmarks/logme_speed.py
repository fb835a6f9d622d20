"""Seconds per LogME score of 10,000 x 2,048 features with 100 classes (issue 4: under 1 s on this 2-core CPU).

Ours is ``transferkit.measure.transferability.logme`` as a user calls it: float32 features in, validation,
conversion to float64, the Gram matrix ``FᵀF`` and the class sums ``FᵀY``, the tridiagonal reduction
``FᵀF = QTQᵀ`` with ``QᵀFᵀY`` and the eigenvalues of ``T``, then the per-class search for the fixed point of
``α, β`` (relative tolerance 1e-8 on ``α/β``). The baseline is the textbook route the issue describes: the same
checks, Gram matrix and class sums, a full ``numpy.linalg.eigh(FᵀF)`` (eigenvectors included), the class sums
projected onto the eigenvectors, and the same fixed-point search in that (diagonal) basis. So the two differ
only in the decomposition, and must agree to 1e-9 (the script exits 1 otherwise).

Two kinds of features, both float32 and seeded: ``blobs``, Gaussian noise around a random mean per class (what
a useful pre-trained backbone gives), and ``noise``, features that say nothing about the labels (a randomly
initialised backbone: the evidence is flat and the fixed point far out). Labels are balanced, N/C per class.

Both sides run in this process on the same arrays, alternating (the order flips every repeat), with the BLAS
threads pinned to ``--threads`` by threadpoolctl. Ours runs its tridiagonal reduction on one BLAS thread
whatever ``--threads`` says (see ``_tridiagonalize``). Wall and CPU seconds are reported (CPU seconds are
steadier when another process shares the machine; the load average is printed at the start and the end),
min/median/max over ``--repeats``, and the ratio baseline/ours per repeat. One extra untimed run of ours times
its stages.

Run:  .venv/bin/python benchmarks/logme_speed.py [--threads 2] [--repeats 5] [--n 10000] [--d 2048] [--classes 100]
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime
from importlib.metadata import version

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from transferkit.measure import transferability as tr


def make_features(kind: str, n: int, d: int, c: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % c)
    features = rng.standard_normal((n, d), dtype=np.float32)
    if kind == "blobs":
        features += 0.5 * rng.standard_normal((c, d), dtype=np.float32)[labels]
    return features, labels


def logme_full_eigh(features: np.ndarray, labels: np.ndarray) -> float:
    """The baseline: ours with ``numpy.linalg.eigh`` in place of the tridiagonal reduction (N > D only)."""
    f = tr._check_features(features)
    y, c = tr._check_labels(labels, len(f))
    n, d = f.shape
    if n <= d:
        raise SystemExit("the baseline covers N > D only")
    sigma, v = np.linalg.eigh(f.T @ f)
    sigma = np.clip(sigma, 0.0, None)
    # in the eigenbasis the "tridiagonal" matrix is diagonal: the same search runs on it unchanged
    basis = tr._Tridiagonal(sigma, np.zeros(d - 1), sigma, v.T @ tr._class_sums(f, y, c).T)
    per_class, _ = tr._logme_fixed_point(basis, np.bincount(y).astype(np.float64), n, False, 100, 1e-8)
    return float(per_class.mean())


def timed(fn: Callable[[], float]) -> tuple[float, float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    value = fn()
    return time.perf_counter() - w0, time.process_time() - c0, value


def stages(features: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Seconds of each stage of ours, run by hand in the order ``logme`` runs them (N > D)."""
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    f = tr._check_features(features)
    y, c = tr._check_labels(labels, len(f))
    out["checks + float64"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    gram = f.T @ f
    out["FᵀF"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    sums = tr._class_sums(f, y, c).T
    out["FᵀY"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    tri = tr._tridiagonalize(gram, sums)
    out["tridiagonal + eigenvalues"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    tr._logme_fixed_point(tri, np.bincount(y).astype(np.float64), len(f), False, 100, 1e-8)
    out["fixed point"] = time.perf_counter() - t0
    return out


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def fmt(xs: list[float]) -> str:
    return f"{min(xs):.3f} | {statistics.median(xs):.3f} | {max(xs):.3f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="BLAS threads for both sides (default 2: all cores here)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--d", type=int, default=2048)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--kinds", default="blobs,noise")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    print(f"command: `{shlex.join(['.venv/bin/python', *sys.argv])}`")
    print(f"date: {datetime.now().isoformat(timespec='seconds')}")
    print(f"machine: {platform.platform()}; {cpu_model()}; os.cpu_count() = {os.cpu_count()}; "
          f"load average at start {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    pkgs = ("numpy", "scipy", "scikit-learn", "threadpoolctl", "transferkit")
    print(f"software: Python {platform.python_version()}; " + ", ".join(f"{k} {version(k)}" for k in pkgs))
    blas = sorted({f"{i['internal_api']} {i.get('version')} ({i['prefix']})" for i in threadpool_info()})
    print(f"BLAS: {'; '.join(blas)}; pinned to {args.threads} thread(s)")
    print(f"data: {args.n} x {args.d} float32 features, {args.classes} balanced classes, seed {args.seed}; "
          f"{args.repeats} repeats per side, alternating\n")

    failed = False
    rows = []
    with threadpool_limits(limits=args.threads):
        for kind in args.kinds.split(","):
            features, labels = make_features(kind, args.n, args.d, args.classes, args.seed)
            sides: dict[str, Callable[[], float]] = {
                "ours": lambda f=features, y=labels: tr.logme(f, y),
                "full eigh": lambda f=features, y=labels: logme_full_eigh(f, y),
            }
            wall: dict[str, list[float]] = {k: [] for k in sides}
            cpu: dict[str, list[float]] = {k: [] for k in sides}
            values: dict[str, float] = {}
            for r in range(args.repeats):
                for name in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
                    w, c, v = timed(sides[name])
                    wall[name].append(w)
                    cpu[name].append(c)
                    values[name] = v
            gap = abs(values["ours"] - values["full eigh"])
            failed |= gap > 1e-9
            ratios = [b / a for a, b in zip(wall["ours"], wall["full eigh"], strict=True)]
            rows.append((kind, wall, cpu, ratios, values["ours"], gap, stages(features, labels)))

    print("| features | side | wall s min | median | max | CPU s min | median | max | LogME |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for kind, wall, cpu, _, value, _, _ in rows:
        for name in wall:
            print(f"| {kind} | {name} | {fmt(wall[name])} | {fmt(cpu[name])} | {value:.6f} |")
    print("\n| features | baseline/ours wall per repeat, min | median | max | ratio of medians | abs(ours - baseline) "
          "| ours under 1 s (median wall) |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for kind, wall, _, ratios, _, gap, _ in rows:
        med = statistics.median(wall["full eigh"]) / statistics.median(wall["ours"])
        under = "yes" if statistics.median(wall["ours"]) < 1.0 else "no"
        print(f"| {kind} | {fmt(ratios)} | {med:.2f}x | {gap:.1e} | {under} |")
    print("\nstages of ours (one untimed run each, wall s):")
    for kind, *_, st in rows:
        print(f"  {kind}: " + ", ".join(f"{k} {v:.3f}" for k, v in st.items()))
    print(f"\nload average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if failed:
        print("FAILED: ours and the baseline disagree by more than 1e-9")
        sys.exit(1)


if __name__ == "__main__":
    main()

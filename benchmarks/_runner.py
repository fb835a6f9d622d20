"""Shared plumbing of the issue-8 benchmarks: run many ``transferkit.experiment.fit`` configs, each in its own
process (``--jobs`` at a time, one torch thread each), append every finished run to a JSON-lines file at once (an
interrupted table keeps what it measured; ``--skip-done`` resumes it), and print mean ± std tables.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import date
from multiprocessing import get_context
from pathlib import Path
from typing import Any

Job = dict[str, Any]


def common_args(p: argparse.ArgumentParser, name: str) -> None:
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time, each in its own process with one thread")
    p.add_argument("--output-dir", default=f"runs/bench-{name}")
    p.add_argument("--results-jsonl", default=f"benchmarks/results/{name}-{date.today()}.jsonl")
    p.add_argument("--skip-done", action="store_true", help="skip runs already in --results-jsonl")


def header(args: argparse.Namespace) -> None:
    import torch

    import transferkit

    print(f"# {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"# {date.today()} {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"torch {torch.__version__}, transferkit {getattr(transferkit, '__version__', '?')}, "
          f"TRANSFERKIT_DATA={os.environ.get('TRANSFERKIT_DATA')}")
    print(f"# {vars(args)}", flush=True)


def _child(fn: Callable[[Job], dict[str, Any]], job: Job) -> dict[str, Any]:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(job.get("threads", 1))  # a warm-up run that extracts features may take every core
    t0 = time.perf_counter()
    out = fn(job)
    return {**{k: v for k, v in job.items() if k != "args"}, **out, "seconds": round(time.perf_counter() - t0, 1)}


def run_all(jobs: list[Job], fn: Callable[[Job], dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run ``fn(job)`` for every job not already in the results file; return every row of it for these jobs."""
    path = Path(args.results_jsonl)
    path.parent.mkdir(parents=True, exist_ok=True)
    done = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    key = lambda j: json.dumps({k: v for k, v in j.items() if k not in ("args", "seconds", "threads", "arrays_dir")  # noqa: E731
                                and not k.startswith("r_")}, sort_keys=True)
    have = {key(r) for r in done} if args.skip_done else set()
    todo = [j for j in jobs if key(j) not in have]
    print(f"# {len(jobs)} runs, {len(jobs) - len(todo)} already done", flush=True)
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(_child, fn, j): j for j in todo}
        for f in as_completed(futures):
            try:
                row = f.result()
            except Exception as exc:  # one failed run must not lose the others
                print(f"FAILED {futures[f]}: {exc!r}", flush=True)
                continue
            with open(path, "a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    latest = {}  # the newest row of each job (a rerun replaces what an earlier one measured)
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            latest[key(row)] = row
    return [latest[key(j)] for j in jobs if key(j) in latest]


def run_warm(first: list[Job], jobs: list[Job], fn: Callable[[Job], dict[str, Any]],
             args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run ``first`` one at a time with every core (runs that extract and cache features, which parallel runs
    would all do at once), then every job of ``jobs`` not yet done (the warm-up runs count)."""
    run_all([{**j, "threads": args.jobs} for j in first], fn, argparse.Namespace(**{**vars(args), "jobs": 1}))
    return run_all(jobs, fn, argparse.Namespace(**{**vars(args), "skip_done": True}))


def mean_std(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    if not values:
        return "–"
    m = statistics.mean(values) * scale
    s = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{m:.{digits}f} ± {s:.{digits}f}" + (f" (n={len(values)})" if len(values) != 3 else "")


def capture_guard_arrays(prefix: Path | None) -> None:
    """Save, at every call of the guard's signals in this process, both candidates' label-free arrays (logits,
    features, source-validation labels; nothing from the target's labels) as ``{prefix}-call{i}.npz``, so a guard
    rule can be designed and re-judged later without training again. An ``--method auto`` run calls the guard once
    per adapted candidate, in the order of ``adapt.auto_methods``. ``None`` restores the plain guard."""
    import numpy as np

    from transferkit.measure import guard

    original = getattr(guard.guard_signals, "__wrapped__", guard.guard_signals)
    if prefix is None:
        guard.guard_signals = original
        return
    calls = [0]

    def wrapped(source_only: Any, adapted: Any, **kw: Any) -> dict[str, Any]:
        arrays = {}
        for c in (source_only, adapted):
            for k in ("target_logits", "target_features", "source_val_logits", "source_val_labels",
                      "source_val_features", "source_train_features"):
                v = getattr(c, k)
                if v is not None:
                    v = v[:: max(1, len(v) // 5000)] if k == "source_train_features" else v
                    arrays[f"{c.name}/{k}"] = v.astype(np.float16) if "features" in k else v
        np.savez_compressed(f"{prefix}-call{calls[0]}.npz", **arrays)
        calls[0] += 1
        return original(source_only, adapted, **kw)

    wrapped.__wrapped__ = original  # type: ignore[attr-defined]
    guard.guard_signals = wrapped

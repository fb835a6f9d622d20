"""Bounded memory: peak RSS of ``transferkit extract`` as the image count grows, and of ``transferkit measure``
on 50,000 x 50,000 feature vectors (issue 6, item 7).

Two goals:

(a) the peak RSS of ``transferkit extract`` over 2,000 / 10,000 / 20,000 images stays flat: features are
    streamed to the ``.npz`` batch by batch, so memory should not grow with the number of images;
(b) ``transferkit measure`` (its default measures: MMD² with the permutation test, proxy A-distance, CORAL,
    Wasserstein-1, sliced Wasserstein) on 50,000 x 50,000 samples of 256-d features stays under 2 GiB.

Every measured command is the real CLI (``.venv/bin/transferkit``) in a fresh child process; its peak RSS is
the kernel's ``ru_maxrss`` for that child alone (``os.wait4``), so runs do not see each other's peaks. The
children get one thread (``OMP_NUM_THREADS=1`` etc.) and a fresh, empty ``TRANSFERKIT_CACHE`` each.

Data, all synthetic and seeded: 64x64 RGB JPEGs (a random two-colour gradient plus noise), the ImageFolder
layout ``root/train/<class>/<i>.jpg`` that ``transferkit extract --data <folder>`` reads, one pool of the
largest count with every smaller tree hard-linking its first N files; for (b) two ``.npy`` files of float32
features, source ``N(0, I)`` and target ``N(0.1, 1.1² I)`` (a shift the tests should detect).

``--full-mmd`` adds the library's blocked, quadratic-time MMD² (``transferkit.measure.discrepancy.mmd2``) on
*all* 50,000 x 50,000 samples, which the CLI never computes on the whole samples (its MMD row is the
permutation test on ``--max-samples`` per domain); that child is this script with ``--child mmd2``.

    .venv/bin/python benchmarks/memory.py --full-mmd --out benchmarks/results/memory.md   # the recorded run, 22 min
    .venv/bin/python benchmarks/memory.py --counts 200,1000 --measure-n 5000   # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_name, write_results

GIB = 1 << 30
MIB = 1 << 20
MEASURE_BOUND = 2 * GIB
FLAT_RATIO = 1.10  # "flat": the largest count's peak RSS within 10% of the smallest count's, and it grew by less
FLAT_SHARE = 0.5  # than half of what keeping the extra images' features in memory would add
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--counts", default="2000,10000,20000", help="image counts for extract (default 2000,10000,20000)")
    p.add_argument("--repeats", type=int, default=2, help="extract runs per count, order alternating (default 2)")
    p.add_argument("--backbone", default="lenet", help="backbone spec for extract, random weights (default lenet)")
    p.add_argument("--image-size", type=int, default=64, help="side of the synthetic images in px (default 64)")
    p.add_argument("--classes", type=int, default=10, help="class folders (default 10)")
    p.add_argument("--measure-n", type=int, default=50000, help="samples per domain for measure (default 50000)")
    p.add_argument("--dim", type=int, default=256, help="feature width for measure (default 256)")
    p.add_argument(
        "--max-samples",
        default="1000,2000",
        help="measure --max-samples values to run, the CLI default first (default 1000,2000)",
    )
    p.add_argument("--permutations", type=int, default=500, help="measure --permutations (default 500, the CLI's)")
    p.add_argument("--full-mmd", action="store_true", help="also the blocked MMD² on all samples (library call)")
    p.add_argument("--threads", type=int, default=1, help="threads for every child (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic data (default 0)")
    p.add_argument("--workdir", type=Path, default=None, help="where to write the data (default: a temp dir)")
    p.add_argument("--skip-extract", action="store_true", help="only the measure part")
    p.add_argument("--skip-measure", action="store_true", help="only the extract part")
    p.add_argument("--out", type=Path, default=None, help="write the report here (markdown) and its numbers (.json)")
    p.add_argument("--child", choices=("mmd2",), help=argparse.SUPPRESS)
    p.add_argument("--source", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--target", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    try:
        args.counts = sorted({int(c) for c in args.counts.split(",") if c.strip()})
        args.max_samples = [int(c) for c in args.max_samples.split(",") if c.strip()]
    except ValueError:
        p.error("--counts and --max-samples take comma-separated integers")
    if not args.counts or min(args.counts) < args.classes:
        p.error("--counts must be >= --classes")
    if args.repeats < 1 or args.threads < 1 or args.measure_n < 10 or args.dim < 1:
        p.error("--repeats, --threads and --dim must be >= 1, --measure-n >= 10")
    if any(m < 10 for m in args.max_samples):
        p.error("--max-samples values must be >= 10 (the CLI's limit)")
    return args


# -- children -------------------------------------------------------------------------------------
def child_env(threads: int, cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    for var in THREAD_VARS:
        env[var] = str(threads)
    env["TRANSFERKIT_CACHE"] = str(cache)  # fresh and empty: nothing is served from an earlier run
    env.pop("MALLOC_MMAP_MAX_", None)
    return env


def sample_memory(pid: int, stop: threading.Event, out: list[tuple[float, int, int]], every: float = 0.05) -> None:
    """Append ``(seconds, VmRSS, RssAnon)`` (bytes) of ``pid`` from /proc every ``every`` s until ``stop``."""
    t0 = time.perf_counter()
    while not stop.is_set():
        try:
            fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
            rss, anon = (int(fields[k].split()[0]) * 1024 for k in ("VmRSS", "RssAnon"))
        except (OSError, KeyError, ValueError):  # gone, or a zombie without memory lines
            return
        out.append((time.perf_counter() - t0, rss, anon))
        stop.wait(every)


def run_measured(cmd: list[str], env: dict[str, str], log: Path) -> dict[str, float]:
    """Run ``cmd``; return its wall and CPU seconds, its peak RSS (bytes, this child only: ``wait4``'s
    ``ru_maxrss``, exact) and, sampled from /proc every 50 ms, its peak anonymous RSS (the heap: RSS less the
    mapped library files) and when in the run the sampled RSS peaked (0 = start, 1 = end)."""
    samples: list[tuple[float, int, int]] = []
    stop = threading.Event()
    with open(log, "w") as fh:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
        sampler = threading.Thread(target=sample_memory, args=(proc.pid, stop, samples), daemon=True)
        sampler.start()
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        stop.set()
        sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"command failed (exit {proc.returncode}): {shlex.join(cmd)}\n{log.read_text()[-4000:]}")
    t_peak = max(samples, key=lambda s: s[1])[0] / wall if samples else float("nan")
    return {"wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime, "peak_rss": ru.ru_maxrss * 1024,
            "peak_anon": max((s[2] for s in samples), default=0), "peak_at": t_peak}


def cli() -> list[str]:
    script = Path(sys.executable).parent / "transferkit"
    return [str(script)] if script.exists() else [sys.executable, "-m", "transferkit.cli"]


def child_mmd2(args: argparse.Namespace) -> int:
    """The blocked quadratic-time MMD² on every sample (``mmd2``): what the CLI's MMD row subsamples."""
    import torch

    from transferkit.measure.discrepancy import mmd2

    torch.set_num_threads(args.threads)
    xs, xt = np.load(args.source), np.load(args.target)
    t0 = time.perf_counter()
    value = mmd2(xs, xt, seed=0)
    print(json.dumps({"mmd2": value, "seconds": time.perf_counter() - t0}))
    return 0


# -- data -----------------------------------------------------------------------------------------
def write_image_pool(pool: Path, n: int, size: int, seed: int) -> None:
    """``n`` seeded 64x64 RGB JPEGs: a random two-colour gradient at a random angle plus Gaussian noise."""
    from PIL import Image

    pool.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    for i in range(n):
        c0, c1 = rng.uniform(0, 255, (2, 3)).astype(np.float32)
        angle = rng.uniform(0, 2 * np.pi)
        t = np.cos(angle) * xx + np.sin(angle) * yy
        t = (t - t.min()) / (t.max() - t.min())
        img = c0 + (c1 - c0) * t[..., None] + rng.normal(0, 12, (size, size, 3)).astype(np.float32)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(pool / f"{i:06d}.jpg", quality=90)


def build_tree(pool: Path, root: Path, n: int, classes: int) -> None:
    """``root/train/c<k>/<i>.jpg`` for the pool's first ``n`` images (hard links; copies where links fail)."""
    for k in range(classes):
        (root / "train" / f"c{k:02d}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        src, dst = pool / f"{i:06d}.jpg", root / "train" / f"c{i % classes:02d}" / f"{i:06d}.jpg"
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)


def write_features(path: Path, n: int, dim: int, shift: float, scale: float, seed: int) -> None:
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
    rng = np.random.default_rng(seed)
    for start in range(0, n, 10000):
        stop = min(start + 10000, n)
        out[start:stop] = rng.standard_normal((stop - start, dim), dtype=np.float32) * scale + shift
    out.flush()
    del out


def npz_shape(path: Path) -> tuple[tuple[int, ...], int]:
    """The features' shape (read from the header only) and the number of labels in a feature file."""
    with zipfile.ZipFile(path) as zf:
        with zf.open("features.npy") as f:
            major, _ = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape = read_header(f)[0]
        with zf.open("labels.npy") as f:
            labels = np.lib.format.read_array(f)
    return tuple(shape), len(labels)


# -- reporting ------------------------------------------------------------------------------------
def pkg_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def mib(b: float) -> str:
    return f"{b / MIB:,.0f}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_mmd2(args)
    import PIL
    import torch

    cores = os.cpu_count() or 1
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / GIB
    command = shlex.join([".venv/bin/python", "benchmarks/memory.py", *(sys.argv[1:] if argv is None else argv)])
    header = [
        f"command: `{command}`",
        f"date: {datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"machine: {platform.platform()}; CPU: {cpu_name()}; os.cpu_count()={cores}; "
        f"load average at start {os.getloadavg()[0]:.2f}; memory {memory:.1f} GiB",
        f"versions: python {platform.python_version()}, torch {torch.__version__}, "
        f"torchvision {pkg_version('torchvision')}, timm {pkg_version('timm')}, "
        f"transferkit {pkg_version('transferkit')}, "
        f"pillow {PIL.__version__}, numpy {np.__version__}, pot {pkg_version('pot')}, "
        f"scikit-learn {pkg_version('scikit-learn')}, glibc {platform.libc_ver()[1]}",
        f"config: extract --backbone {args.backbone} (random weights, nothing downloaded) --device cpu, default batch "
        f"size; counts {args.counts}, {args.repeats} run(s) each (order alternating); {args.image_size}x"
        f"{args.image_size} RGB JPEGs in {args.classes} classes; measure on {args.measure_n:,} x {args.measure_n:,} "
        f"samples of {args.dim}-d float32, --max-samples {args.max_samples}, --permutations {args.permutations}; "
        f"{args.threads} thread(s) per child ({', '.join(THREAD_VARS)}); peak RSS = ru_maxrss of each child (wait4)",
    ]
    for line in header:
        print(line, flush=True)

    numbers: dict = {"command": command, "startup": None, "extract": [], "measure": [], "full_mmd": None}
    with tempfile.TemporaryDirectory(prefix="tk-memory-bench-", dir=args.workdir) as tmp_name:
        tmp = Path(tmp_name)
        runs = 0

        def fresh_cache() -> Path:
            nonlocal runs
            runs += 1
            return tmp / f"cache-{runs}"

        # What the CLI costs before it touches any data: its imports (torch, torchvision, timm, ...).
        startup = run_measured([*cli(), "--help"], child_env(args.threads, fresh_cache()), tmp / "help.log")
        numbers["startup"] = startup
        print(f"  transferkit --help (imports only): peak RSS {mib(startup['peak_rss'])} MiB (anonymous "
              f"{mib(startup['peak_anon'])}), {startup['wall_s']:.1f} s wall", flush=True)

        if not args.skip_extract:
            t0 = time.perf_counter()
            write_image_pool(tmp / "pool", max(args.counts), args.image_size, args.seed)
            for n in args.counts:
                build_tree(tmp / "pool", tmp / f"images-{n}", n, args.classes)
            pool_bytes = sum(f.stat().st_size for f in (tmp / "pool").iterdir())
            print(f"data: {max(args.counts):,} JPEGs, {pool_bytes / MIB:.1f} MiB, written in "
                  f"{time.perf_counter() - t0:.1f} s", flush=True)
            peaks: dict[int, list[dict]] = {n: [] for n in args.counts}
            for r in range(args.repeats):
                for n in args.counts if r % 2 == 0 else args.counts[::-1]:
                    out = tmp / f"features-{n}.npz"
                    out.unlink(missing_ok=True)
                    cmd = [*cli(), "extract", "--data", str(tmp / f"images-{n}"), "--out", str(out),
                           "--backbone", args.backbone, "--device", "cpu"]
                    res = run_measured(cmd, child_env(args.threads, fresh_cache()), tmp / f"extract-{n}.log")
                    shape, n_labels = npz_shape(out)
                    if shape[0] != n or n_labels != n:
                        raise SystemExit(f"{out}: features {shape}, {n_labels} labels; expected {n} rows")
                    res.update(count=n, repeat=r, file_bytes=out.stat().st_size, dim=int(shape[1]))
                    peaks[n].append(res)
                    numbers["extract"].append(res)
                    print(f"  extract {n:>6,} images (repeat {r + 1}): peak RSS {mib(res['peak_rss'])} MiB "
                          f"(anonymous {mib(res['peak_anon'])}, peak at {res['peak_at']:.0%} of the run), "
                          f"{res['wall_s']:.1f} s wall, {res['cpu_s']:.1f} s CPU, {n / res['wall_s']:.0f} images/s, "
                          f"file {res['file_bytes'] / MIB:.1f} MiB {shape}", flush=True)

        if not args.skip_measure:
            src, tgt = tmp / "source.npy", tmp / "target.npy"
            write_features(src, args.measure_n, args.dim, 0.0, 1.0, args.seed)
            write_features(tgt, args.measure_n, args.dim, 0.1, 1.1, args.seed + 1)
            print(f"data: {src.name}, {tgt.name}: {args.measure_n:,} x {args.dim} float32 each "
                  f"({src.stat().st_size / MIB:.1f} MiB each)", flush=True)
            for k in args.max_samples:
                js = tmp / f"measure-{k}.json"
                cmd = [*cli(), "measure", "--source", str(src), "--target", str(tgt), "--device", "cpu",
                       "--max-samples", str(k), "--permutations", str(args.permutations), "--json", str(js)]
                res = run_measured(cmd, child_env(args.threads, fresh_cache()), tmp / f"measure-{k}.log")
                res.update(max_samples=k, gaps=json.loads(js.read_text())["gaps"])
                numbers["measure"].append(res)
                gaps = ", ".join(f"{g['name']} {g['value']:.4g}" + ("" if g["p_value"] is None else
                                 f" (p {g['p_value']:.3g})") for g in res["gaps"])
                print(f"  measure --max-samples {k}: peak RSS {mib(res['peak_rss'])} MiB (anonymous "
                      f"{mib(res['peak_anon'])}, peak at {res['peak_at']:.0%} of the run), {res['wall_s']:.1f} s wall, "
                      f"{res['cpu_s']:.1f} s CPU; {gaps}", flush=True)
            if args.full_mmd:
                cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "mmd2", "--source", str(src),
                       "--target", str(tgt), "--threads", str(args.threads)]
                log = tmp / "mmd2.log"
                res = run_measured(cmd, child_env(args.threads, fresh_cache()), log)
                res.update(json.loads(log.read_text().strip().splitlines()[-1]))
                numbers["full_mmd"] = res
                print(f"  mmd2 (blocked, all samples): peak RSS {mib(res['peak_rss'])} MiB (anonymous "
                      f"{mib(res['peak_anon'])}), "
                      f"{res['wall_s']:.1f} s wall; MMD² {res['mmd2']:.4g}", flush=True)

    lines = ["# Bounded memory (issue 6, item 7)", "", *[f"- {h}" for h in header], ""]
    verdicts = []
    if numbers["extract"]:
        dim = numbers["extract"][0]["dim"]
        lines += [
            f"## (a) `transferkit extract`: peak RSS against the image count (`{args.backbone}`, {dim}-d features)",
            "",
            "Peak RSS: `ru_maxrss` of the child, exact. Anonymous: the heap part of RSS (without mapped library "
            "files), sampled every 50 ms. Medians over the repeats.",
            "",
            "| images | peak RSS MiB (min / median / max) | vs smallest count | peak anonymous RSS MiB | RSS peak at "
            "(share of run) | wall s | images/s | CPU s | .npz MiB | all features in memory would be, MiB |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| 0 (`transferkit --help`: imports only) | {mib(startup['peak_rss'])} | | {mib(startup['peak_anon'])} | "
            f"| {startup['wall_s']:.1f} | | {startup['cpu_s']:.1f} | | |",
        ]
        med = {n: statistics.median(r["peak_rss"] for r in peaks[n]) for n in args.counts}
        anon = {n: statistics.median(r["peak_anon"] for r in peaks[n]) for n in args.counts}
        base = med[args.counts[0]]
        for n in args.counts:
            rs = [r["peak_rss"] for r in peaks[n]]
            wall = statistics.median(r["wall_s"] for r in peaks[n])
            cpu = statistics.median(r["cpu_s"] for r in peaks[n])
            at = statistics.median(r["peak_at"] for r in peaks[n])
            lines.append(
                f"| {n:,} | {mib(min(rs))} / **{mib(med[n])}** / {mib(max(rs))} | {med[n] / base:.3f}x | "
                f"{mib(anon[n])} | {at:.0%} | {wall:.1f} | {n / wall:.0f} | {cpu:.1f} | "
                f"{peaks[n][0]['file_bytes'] / MIB:.1f} | {n * dim * 4 / MIB:.1f} |"
            )
        lo, hi = args.counts[0], args.counts[-1]
        ratio = med[hi] / base
        extra = (hi - lo) * dim * 4  # bytes that holding the extra images' features would add
        grew, grew_anon = med[hi] - base, anon[hi] - anon[lo]
        ok = ratio <= FLAT_RATIO and max(grew, grew_anon) <= FLAT_SHARE * extra
        verdicts.append(ok)
        lines += [
            "",
            f"Peak RSS {hi:,} / {lo:,} images: **{ratio:.3f}x** ({grew / MIB:+.1f} MiB; anonymous "
            f"{grew_anon / MIB:+.1f} MiB). Keeping the {hi - lo:,} extra images' features would add "
            f"{extra / MIB:.1f} MiB. Goal flat (≤ {FLAT_RATIO:.2f}x, and neither grew by {FLAT_SHARE:.0%} of that): "
            f"**{'met' if ok else 'NOT met'}**.",
            "",
        ]
        numbers.update(extract_ratio=ratio, extract_growth=grew, extract_growth_anon=grew_anon)
    if numbers["measure"]:
        lines += [
            f"## (b) `transferkit measure` on {args.measure_n:,} x {args.measure_n:,} samples of {args.dim}-d features",
            "",
            "Default measures (all five); `--max-samples` is the per-domain subsample of the permutation test, the "
            "proxy A-distance and Wasserstein-1 (CORAL and sliced Wasserstein use every sample).",
            "",
            "| run | peak RSS MiB | vs 2 GiB | peak anonymous RSS MiB | wall s | CPU s | results |",
            "|---|---:|---:|---:|---:|---:|---|",
            f"| `transferkit --help` (imports only) | {mib(startup['peak_rss'])} | "
            f"{startup['peak_rss'] / MEASURE_BOUND:.0%} | {mib(startup['peak_anon'])} | {startup['wall_s']:.1f} | "
            f"{startup['cpu_s']:.1f} | |",
        ]
        for i, res in enumerate(numbers["measure"]):
            gaps = "; ".join(f"{g['name']} {g['value']:.4g}" + ("" if g["p_value"] is None else
                             f" (p {g['p_value']:.3g})") for g in res["gaps"])
            ok = res["peak_rss"] <= MEASURE_BOUND
            if i == 0:
                verdicts.append(ok)
            label = f"`measure --max-samples {res['max_samples']}`"
            label += " (default)" if res["max_samples"] == 1000 else ""
            lines.append(f"| {label} | **{mib(res['peak_rss'])}** | {res['peak_rss'] / MEASURE_BOUND:.0%} "
                         f"({'under' if ok else 'OVER'}) | {mib(res['peak_anon'])} | {res['wall_s']:.1f} | "
                         f"{res['cpu_s']:.1f} | {gaps} |")
        fm = numbers["full_mmd"]
        if fm is not None:
            lines.append(f"| library `mmd2` (blocked U-statistic, all {args.measure_n:,} x {args.measure_n:,}; "
                         f"this script's `--child mmd2`) | **{mib(fm['peak_rss'])}** | "
                         f"{fm['peak_rss'] / MEASURE_BOUND:.0%} | {mib(fm['peak_anon'])} | {fm['wall_s']:.1f} | "
                         f"{fm['cpu_s']:.1f} | mmd2 {fm['mmd2']:.4g} |")
        first = numbers["measure"][0]
        lines += ["", f"`transferkit measure --max-samples {first['max_samples']}`: peak "
                  f"{first['peak_rss'] / GIB:.2f} GiB; goal under 2 GiB: "
                  f"**{'met' if first['peak_rss'] <= MEASURE_BOUND else 'NOT met'}**.", ""]
    lines.append(f"load average at end: {os.getloadavg()[0]:.2f} (on {cores} CPUs)")
    print()
    print("\n".join(lines))
    if args.out is not None:
        write_results(args.out, lines, numbers)
        print(f"wrote {args.out} and {args.out.with_suffix('.json')}")
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Images/s of transferkit's feature extraction against the classic PyTorch transfer-learning tutorial loop.

Both sides extract ``timm:tf_efficientnet_lite0`` features (224 px, the offline pip-packaged ImageNet
weights, classifier removed) from the same folder of real JPEG photos and write them to a file:

- baseline: written like the PyTorch transfer-learning tutorial -- ``torchvision.datasets.ImageFolder`` with
  the backbone's own preprocessing, ``DataLoader(batch_size=4)``, ``model.eval()``, a plain
  ``for inputs, labels in loader: outputs = model(inputs)`` with autograd on, features collected with
  ``.detach().numpy()`` and saved with ``np.savez``;
- ours: ``transferkit.features.extract_to_npz`` (the extraction path behind ``transferkit extract``) on
  ``transferkit.data.images.load_image_folder``, ``device="cpu"``, no progress bar.

Same weights (the offline package weights, loaded the same way), the same images in the same order, the same
preprocessing, the same number of DataLoader workers and the same intra-op thread count serve both. Repeats
alternate the two (the order flips every repeat) so that drift on a shared machine hits both alike; the ratio
is reported per repeat (min/median/max) and as the ratio of the medians. Dataset construction (directory scan;
transferkit's one-time decode check of every file) and one warm-up batch happen before timing, for both.

By default every timed run is a fresh Python process (this script with ``--child``), like a real
``transferkit extract`` call, so that nothing one side leaves behind in the process -- the C allocator's heap
(measured: it moves transferkit's images/s by up to 1.8x), inference tensors, oneDNN caches -- changes the
other side's timings. ``--same-process`` runs both sides in this process on the same model object instead (a
copy with identical weights, announced by a WARNING line, if extraction leaves the object unusable for
autograd).

The photos come from scikit-image's bundled sample data (``skimage.data``); random crops, resizes (longer
side 300-640 px) and flips give ``--images`` distinct JPEGs, split over two class folders.

Run:  .venv/bin/python benchmarks/extract_throughput.py [--images 256] [--repeats 3] [--threads T] [--same-process]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
from machine import cpu_name

SPEC = "timm:tf_efficientnet_lite0"
# Colour photos, then grey ones (saved as RGB JPEGs). All ship inside the scikit-image wheel (no download).
PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "motorcycle_left",
    "motorcycle_right",
    "hubble_deep_field",
    "retina",
    "immunohistochemistry",
    "camera",
    "moon",
    "coins",
    "grass",
    "gravel",
    "brick",
)
CLASSES = ("class_a", "class_b")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=256, help="number of JPEGs to extract (default 256)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each side, alternating (default 3)")
    p.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads for both sides (default: all CPU cores)"
    )
    p.add_argument(
        "--batch-size", type=int, default=16, help="transferkit's batch size (16, its CPU default; the baseline: 4)"
    )
    p.add_argument("--baseline-batch-size", type=int, default=4, help="the tutorial loop's batch size (default 4)")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader workers, both sides (default 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the crops that make the images (default 0)")
    p.add_argument("--workdir", type=Path, default=None, help="where to build the image tree (default: a temp dir)")
    p.add_argument(
        "--same-process",
        action="store_true",
        help="run both sides in this process on one model object (default: every timed run in a fresh process)",
    )
    p.add_argument("--child", choices=("baseline", "ours"), help=argparse.SUPPRESS)  # one timed run in a fresh process
    p.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name in ("images", "repeats", "batch_size", "baseline_batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be >= 1")
    if args.num_workers < 0:
        p.error("--num-workers must be >= 0")
    return args


# -- data ---------------------------------------------------------------------------------------
def load_photos() -> list[tuple[str, np.ndarray]]:
    import skimage.data

    photos = []
    for name in PHOTOS:
        if name.startswith("motorcycle_"):  # the two views of skimage.data.stereo_motorcycle()
            left, right, _ = skimage.data.stereo_motorcycle()
            img = np.asarray(left if name.endswith("left") else right)
        else:
            img = np.asarray(getattr(skimage.data, name)())
        if img.ndim == 2:
            img = np.stack([img] * 3, axis=-1)
        photos.append((name, np.ascontiguousarray(img[..., :3], dtype=np.uint8)))
    return photos


def build_image_tree(root: Path, n: int, seed: int) -> list[tuple[int, int]]:
    """Write ``n`` distinct JPEGs under ``root/train/<class>/``; return their (width, height)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    photos = load_photos()
    sizes = []
    for c in CLASSES:
        (root / "train" / c).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        name, arr = photos[i % len(photos)]
        im = Image.fromarray(arr)
        w, h = im.size
        # A random crop of 55-100% of each side, then a resize so the longer side is 300-640 px.
        cw, ch = int(w * rng.uniform(0.55, 1.0)), int(h * rng.uniform(0.55, 1.0))
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        im = im.crop((x0, y0, x0 + cw, y0 + ch))
        scale = int(rng.integers(300, 641)) / max(cw, ch)
        im = im.resize((max(1, round(cw * scale)), max(1, round(ch * scale))), Image.Resampling.BICUBIC)
        if rng.random() < 0.5:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        cls = CLASSES[i % len(CLASSES)]
        im.save(root / "train" / cls / f"{i:05d}_{name}.jpg", quality=90)
        sizes.append(im.size)
    return sizes


# -- the two sides ------------------------------------------------------------------------------
def run_baseline(model, root: Path, transform, out: Path, batch_size: int, num_workers: int) -> float:
    """The tutorial's loop: eval mode, batch 4, autograd left on; features saved with np.savez. Returns seconds."""
    import torch
    from torchvision import datasets

    t0 = time.perf_counter()
    image_dataset = datasets.ImageFolder(str(root / "train"), transform)
    loader = torch.utils.data.DataLoader(image_dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    model.eval()
    feats, labels = [], []
    for inputs, targets in loader:
        outputs = model(inputs)
        feats.append(outputs.detach().numpy())
        labels.append(targets.numpy())
    np.savez(out, features=np.concatenate(feats), labels=np.concatenate(labels))
    return time.perf_counter() - t0


def run_ours(backbone, dataset, out: Path, batch_size: int, num_workers: int) -> float:
    from transferkit.features import extract_to_npz

    t0 = time.perf_counter()
    extract_to_npz(backbone, dataset, out, batch_size=batch_size, num_workers=num_workers, device="cpu", progress=False)
    return time.perf_counter() - t0


def warm_up_ours(backbone, dataset, out: Path, batch_size: int, num_workers: int) -> None:
    """One untimed batch, so one-time costs (oneDNN kernel selection, first allocations) are not timed."""
    run_ours(backbone, dataset.subset(np.arange(min(len(dataset), batch_size))), out, batch_size, num_workers)


def warm_up_baseline(model, batch_size: int) -> None:
    import torch

    model.eval()(torch.zeros(batch_size, 3, 224, 224))  # autograd on, as in the timed loop


def child_main(args: argparse.Namespace, threads: int) -> int:
    """One timed run in a fresh process: load everything, warm up, time one side, print {"seconds", "cpu"} as JSON."""
    import torch

    from transferkit.data.images import load_image_folder
    from transferkit.models.backbones import create_backbone

    torch.set_num_threads(threads)
    backbone = create_backbone(SPEC, pretrained=True)
    if args.child == "ours":
        dataset = load_image_folder(args.root, "train")
        warm_up_ours(backbone, dataset, args.out.with_name("warm.npz"), args.batch_size, args.num_workers)
        c0 = time.process_time()
        dt = run_ours(backbone, dataset, args.out, args.batch_size, args.num_workers)
    else:
        warm_up_baseline(backbone.body, args.baseline_batch_size)
        c0 = time.process_time()
        dt = run_baseline(
            backbone.body, args.root, backbone.transform, args.out, args.baseline_batch_size, args.num_workers
        )
    print(json.dumps({"seconds": dt, "cpu": time.process_time() - c0}))
    return 0


def run_child(args: argparse.Namespace, threads: int, side: str, root: Path, out: Path) -> tuple[float, float]:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        side,
        "--root",
        str(root),
        "--out",
        str(out),
        "--threads",
        str(threads),
        "--batch-size",
        str(args.batch_size),
        "--baseline-batch-size",
        str(args.baseline_batch_size),
        "--num-workers",
        str(args.num_workers),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{side} run failed:\n{proc.stdout}{proc.stderr}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return float(result["seconds"]), float(result["cpu"])


# -- reporting ----------------------------------------------------------------------------------
def pkg_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"



def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import PIL
    import torch
    import torchvision

    from transferkit.data.images import load_image_folder
    from transferkit.models.backbones import create_backbone

    cores = os.cpu_count() or 1
    threads = args.threads if args.threads is not None else cores
    if args.child:
        return child_main(args, threads)
    torch.set_num_threads(threads)

    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(f"date: {datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(
        f"machine: {platform.platform()}; CPU: {cpu_name()}; os.cpu_count()={cores}; "
        f"load average at start {os.getloadavg()[0]:.2f}"
    )
    print(
        f"versions: python {platform.python_version()}, torch {torch.__version__}, "
        f"torchvision {torchvision.__version__}, timm {pkg_version('timm')}, transferkit {pkg_version('transferkit')}, "
        f"pillow {PIL.__version__}, numpy {np.__version__}, scikit-image {pkg_version('scikit-image')}"
    )
    print(
        f"config: backbone {SPEC} (pretrained, offline package weights), 224 px; images={args.images}; "
        f"repeats={args.repeats}; torch threads={threads} (both sides); num_workers={args.num_workers} (both sides); "
        f"batch size: baseline {args.baseline_batch_size}, transferkit {args.batch_size}; seed={args.seed}; "
        f"{'both sides in this process (--same-process)' if args.same_process else 'each timed run in a fresh process'}"
    )

    with tempfile.TemporaryDirectory(prefix="tk-extract-bench-", dir=args.workdir) as tmp:
        root = Path(tmp) / "photos"
        sizes = build_image_tree(root, args.images, args.seed)
        ws, hs = [s[0] for s in sizes], [s[1] for s in sizes]
        print(
            f"data: {len(sizes)} JPEGs (quality 90) from {len(PHOTOS)} scikit-image photos, {len(CLASSES)} classes; "
            f"width {min(ws)}-{max(ws)} px, height {min(hs)}-{max(hs)} px"
        )

        backbone = create_backbone(SPEC, pretrained=True)
        model = backbone.body  # the timm model with its classifier removed: the same object/weights for both
        t0 = time.perf_counter()
        dataset = load_image_folder(root, "train")
        print(
            "transferkit load_image_folder (scan + one-time decode check, not timed below): "
            f"{time.perf_counter() - t0:.2f} s"
        )
        print(f"preprocessing (both): {' '.join(str(backbone.transform).split())}")

        from torchvision import datasets

        tv_paths = [p for p, _ in datasets.ImageFolder(str(root / "train")).samples]
        if tv_paths != list(dataset.inputs):
            raise SystemExit("ImageFolder and load_image_folder list the images in different orders")

        out_base, out_ours = Path(tmp) / "baseline.npz", Path(tmp) / "ours.npz"
        kw = {"num_workers": args.num_workers}
        if args.same_process:
            spare = copy.deepcopy(model)  # used only if extraction leaves the model unusable with autograd
            warm_up_ours(backbone, dataset, Path(tmp) / "warm.npz", args.batch_size, **kw)
            n_inf = sum(p.is_inference() for p in model.parameters())
            if n_inf:
                # transferkit's iter_features converts the model to channels_last (and back) inside
                # torch.inference_mode, which turns those parameters into inference tensors: autograd (the
                # tutorial loop) then refuses the model. The baseline gets a copy made before any extraction.
                print(
                    f"WARNING: after extract_to_npz, {n_inf} of {len(list(model.parameters()))} backbone parameters "
                    "are inference tensors (autograd can no longer use the model); the baseline uses a copy of the "
                    "model taken before extraction, with identical weights"
                )
                model = spare
                ref = backbone.body.state_dict()
                if any(not torch.equal(v, ref[k]) for k, v in model.state_dict().items()):
                    raise SystemExit("the copy's weights differ from the backbone's")
            del spare
            warm_up_baseline(model, args.baseline_batch_size)

        def time_side(side: str) -> tuple[float, float]:
            out = out_base if side == "baseline" else out_ours
            if not args.same_process:
                return run_child(args, threads, side, root, out)
            c0 = time.process_time()
            if side == "baseline":
                dt = run_baseline(model, root, backbone.transform, out, args.baseline_batch_size, **kw)
            else:
                dt = run_ours(backbone, dataset, out, args.batch_size, **kw)
            return dt, time.process_time() - c0

        wall: dict[str, list[float]] = {"baseline": [], "ours": []}
        cpu: dict[str, list[float]] = {"baseline": [], "ours": []}
        for r in range(args.repeats):
            for side in ("baseline", "ours") if r % 2 == 0 else ("ours", "baseline"):
                dt, dc = time_side(side)
                wall[side].append(dt)
                cpu[side].append(dc)
                print(
                    f"  repeat {r + 1}/{args.repeats} {side:>8}: {dt:7.2f} s  {args.images / dt:7.1f} images/s  "
                    f"(CPU {dc:6.2f} s)",
                    flush=True,
                )

        with np.load(out_ours) as z:
            ours_feats, ours_labels = z["features"], z["labels"]
        with np.load(out_base) as z:
            base_feats, base_labels = z["features"], z["labels"]
        comparable = ours_feats.shape == base_feats.shape
        same = comparable and np.allclose(ours_feats, base_feats, atol=1e-4, rtol=0)
        max_diff = float(np.abs(ours_feats - base_feats).max()) if comparable else float("nan")
        same_labels = np.array_equal(ours_labels, base_labels)

    ips_base = [args.images / t for t in wall["baseline"]]
    ips_ours = [args.images / t for t in wall["ours"]]
    ratios = [o / b for o, b in zip(ips_ours, ips_base, strict=True)]
    med_b, med_o = statistics.median(ips_base), statistics.median(ips_ours)
    cpu_b, cpu_o = statistics.median(cpu["baseline"]), statistics.median(cpu["ours"])

    print()
    print(
        f"features equal: {same} (np.allclose atol=1e-4; max |diff| {max_diff:.2e}; shape {ours_feats.shape}); "
        f"labels equal: {same_labels}"
    )
    print()
    print(
        f"images/s over {args.repeats} repeats ({args.images} images, {threads} thread(s), {args.num_workers} workers)"
    )
    cpu_note = "" if args.num_workers == 0 else " (main process only: workers not counted)"
    print(f"| side | batch | min | median | max | median images per CPU-second{cpu_note} |")
    print("|---|---:|---:|---:|---:|---:|")
    print(
        f"| baseline (tutorial loop, autograd on) | {args.baseline_batch_size} | "
        f"{min(ips_base):.1f} | {med_b:.1f} | {max(ips_base):.1f} | {args.images / cpu_b:.1f} |"
    )
    print(
        f"| transferkit extract_to_npz | {args.batch_size} | "
        f"{min(ips_ours):.1f} | {med_o:.1f} | {max(ips_ours):.1f} | {args.images / cpu_o:.1f} |"
    )
    print(
        f"| ratio ours/baseline, per repeat | | {min(ratios):.2f}x | {statistics.median(ratios):.2f}x | "
        f"{max(ratios):.2f}x | {cpu_b / cpu_o:.2f}x |"
    )
    print(f"load average at end: {os.getloadavg()[0]:.2f} (on {cores} CPUs)")
    print()
    print(f"ratio of medians: {med_o / med_b:.2f}x (goal >= 1.5x: {'met' if med_o / med_b >= 1.5 else 'NOT met'})")
    return 0 if same and same_labels else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""transferkit vs skada (deep part): DANN, DAN and DeepCORAL side by side on MNIST -> USPS, in one run.

Both sides train the *same* LeNet-style CNN (transferkit's ``lenet`` backbone, 500-d features, and a linear
head; skada's copy starts from the very same initial weights) on the *same* tensors (MNIST train subset as the
labelled source, the USPS train split as the unlabelled target, both 28x28 after transferkit's ``lenet``
preprocessing), with the same optimizer (AdamW, lr, weight decay, constant learning rate), batch size (B source
+ B target per step), number of steps per epoch, epochs and seeds. Both domains are cut to whole batches (skada's
sampler drops a partial batch; the USPS target keeps 7,232 of its 7,291 images with B = 64), so each epoch is
exactly max(n_source, n_target) / B steps on both sides. Only the adaptation loss is the library's:

- DANN: both use the same discriminator architecture (transferkit's ``DomainDiscriminator``: 500-1024-1024-1
  with BatchNorm, copied with identical initial weights). skada's default ``DomainClassifier`` ends in a softmax
  over one output (always 1: its DANN trains nothing), so skada gets that discriminator behind skada's own
  ``GradientReversalLayer`` (alpha 1) with one logit and ``BCEWithLogitsLoss`` (sigmoid + BCE). Left as each
  library ships it: transferkit ramps the reversal coefficient 0 -> 1 (Ganin et al.) and averages the two
  domains' BCE; skada keeps alpha = 1 and sums them.
- DAN: each library's multi-kernel MMD as shipped (transferkit: 5 Gaussian kernels on squared distances around
  the median, unbiased estimator; skada: 33 kernels on distances, biased estimator). Weight 1 on both sides.
- DeepCORAL: the same formula on both sides. Weight 1.

The features that are aligned are the backbone's 500-d output on both sides (skada's ``layer_name="backbone"``).
No checkpoint selection on either side: the model after the last epoch is scored on the USPS test split (2,007
images), by one shared evaluation function. Target labels are used for nothing else.

Timing: seconds per epoch from each library's own epoch timer (transferkit's ``epoch_time_s``, skorch's
``dur``), median over epochs; and CPU seconds per epoch (``time.process_time`` over the whole ``fit`` call /
epochs), which other jobs on a shared machine disturb far less than wall time. One process, torch pinned to one
thread, the two sides of each (seed, method) pair run back to back with the order alternating. Preprocessing is outside
the timing on both sides: our engine's input cache (``DomainDataset.precomputed``, what ``Engine.fit`` builds
before its first epoch) is built once up front, and skada gets the same tensors as float32 arrays.

Set-up (a separate environment; transferkit's pinned dependencies come from installing the repository):

    python3.11 -m venv .venv-bench
    .venv-bench/bin/pip install -e . "skada==0.6.0" skorch

Run (from the repository root, with the data root holding mnist/ and usps/):

    export TRANSFERKIT_DATA=../shared/data
    .venv-bench/bin/python benchmarks/vs_skada.py            # 10k MNIST source, 4 epochs, 3 seeds: ~12 min
    .venv-bench/bin/python benchmarks/vs_skada.py --full     # all of MNIST train, 20 epochs (hours on 1 thread)
    .venv-bench/bin/python benchmarks/vs_skada.py --seeds 0 --epochs 1 --source-size 2048 --profile   # smoke

``--profile`` (about 8 more minutes) then, outside the timed runs, profiles one epoch of each of our methods
with cProfile and times single epochs of diagnostic variants: ours with the model in channels_last memory format,
and also with bf16 autocast of the forward passes; skada with channels_last. These variants are not what
transferkit ships and never enter the comparison table.
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import hashlib
import io
import json
import os
import platform
import pstats
import statistics
import subprocess
import sys
import time
import warnings
from datetime import datetime
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from machine import cpu_name
from torch import nn

import transferkit
from transferkit.adapt.methods import build_method
from transferkit.config import TrainConfig
from transferkit.data import DomainDataset, load_data
from transferkit.models.backbones import create_backbone
from transferkit.models.heads import TransferModel
from transferkit.train.engine import Engine, source_cross_entropy

METHODS = {"dann": "DANN", "dan": "DAN", "coral": "DeepCoral"}  # ours -> skada.deep


# -- data -----------------------------------------------------------------------------------------
def load_task(source_size: int, batch_size: int, subset_seed: int) -> dict[str, object]:
    """MNIST train subset (labelled source), USPS train (unlabelled target), USPS test (scored)."""
    mnist = load_data("mnist", "train")
    n = len(mnist) if source_size <= 0 else min(source_size, len(mnist))
    n -= n % batch_size  # whole batches on both sides: both libraries take exactly max(n_s, n_t) / B steps
    idx = np.sort(np.random.default_rng(subset_seed).permutation(len(mnist))[:n])
    source = mnist.subset(idx)
    usps = load_data("usps", "train")
    m = len(usps) - len(usps) % batch_size  # 7,291 -> 7,232 with B = 64 (skada drops the partial batch)
    target = usps.subset(np.sort(np.random.default_rng(subset_seed).permutation(len(usps))[:m])).unlabelled()
    test = load_data("usps", "test")
    transform = create_backbone("lenet").transform

    def tensors(ds: DomainDataset) -> torch.Tensor:  # exactly what our engine's data pipeline yields per item
        if ds.transform is None:
            ds = ds.with_transform(transform)
        return ds.cache if ds.cache is not None else torch.stack([ds[i]["x"] for i in range(len(ds))])

    # Our engine preprocesses inputs once per fit into an in-memory cache before its first epoch. Done here, once,
    # with the same public call, so that neither side's timing holds preprocessing (skada's arrays are built here).
    source, target = (ds.with_transform(transform).precomputed(2**31) for ds in (source, target))
    return {
        "source": source, "target": target,
        "xs": tensors(source), "ys": torch.as_tensor(source.labels),
        "xt": tensors(target),
        "x_test": tensors(test), "y_test": torch.as_tensor(test.labels),
    }


# -- the shared model and scoring ---------------------------------------------------------------------
def initial_model(seed: int, method: str) -> tuple[TransferModel, list]:
    """Our model and loss terms, built under ``seed``; skada copies their initial weights."""
    torch.manual_seed(seed)
    model = TransferModel(create_backbone("lenet"), [str(c) for c in range(10)])
    terms = [source_cross_entropy(), *build_method(method, model.feature_dim, 10)]
    return model, terms


@torch.inference_mode()
def accuracy(logits_of, x: torch.Tensor, y: torch.Tensor) -> float:
    correct = 0
    for i in range(0, len(x), 512):
        correct += int((logits_of(x[i:i + 512]).argmax(1) == y[i:i + 512]).sum())
    return correct / len(x)


# -- ours -----------------------------------------------------------------------------------------
def _autocast_forward(module: nn.Module) -> None:
    """bf16 autocast around ``module``'s forward only, outputs back to fp32 (what Accelerate's bf16 does).

    An autocast around the whole fit (backward and optimizer included) collapses training here.
    """
    forward = module.forward

    def wrapped(*args: object, **kwargs: object) -> object:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = forward(*args, **kwargs)
        return tuple(o.float() for o in out) if isinstance(out, tuple) else out.float()

    module.forward = wrapped  # type: ignore[method-assign]


def run_ours(method: str, data: dict, args: argparse.Namespace, seed: int, epochs: int | None = None, *,
             channels_last: bool = False, bf16: bool = False, precision: str = "no") -> dict:
    """Train ours; ``precision`` is ``train.mixed_precision`` (``bf16``: the shipped opt-in fast path through
    Accelerate); ``channels_last`` and ``bf16`` are the older diagnostics (--profile), off in the timed runs. The
    engine's ``train.memory_format`` stays at its default (``auto``: channels-last for this CNN on a CPU)."""
    model, terms = initial_model(seed, method)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    cfg = TrainConfig(epochs=epochs or args.epochs, lr=args.lr, optimizer="adamw", weight_decay=args.weight_decay,
                      scheduler="constant", mixed_precision=precision, device="cpu", threads=args.threads)
    engine = Engine(model, cfg, loss_terms=terms, seed=seed, batch_size=args.batch_size, progress=False)
    source, target = data["source"], data["target"]  # the engine's own preprocessing, cached once in load_task
    if bf16:  # Accelerate allows one precision per process: autocast the forward passes as it would
        for module in [model, *(t.module for t in terms if t.module is not None)]:
            _autocast_forward(module)
    t0, c0 = time.perf_counter(), time.process_time()
    result = engine.fit(source, target=target)  # no validation split: the last epoch is kept
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    model.eval()
    acc = accuracy(lambda x: model(x)[1], data["x_test"], data["y_test"])
    epochs_s = [float(r["epoch_time_s"]) for r in result.history]
    return {"acc": acc, "epoch_s": epochs_s, "wall_s": wall, "cpu_s": cpu}


# -- skada ----------------------------------------------------------------------------------------
class SkadaNet(nn.Module):
    """The same backbone + head as our TransferModel, returning logits (skada reads features by a hook)."""

    def __init__(self, model: TransferModel) -> None:
        super().__init__()
        self.backbone = copy.deepcopy(model.backbone)
        self.head = copy.deepcopy(model.head)

    def forward(self, x: torch.Tensor, sample_weight: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.backbone(x))


class SkadaDomainClassifier(nn.Module):
    """skada's gradient reversal layer + our discriminator (one logit); trained with BCEWithLogitsLoss."""

    def __init__(self, discriminator: nn.Module, alpha: float = 1.0) -> None:
        super().__init__()
        self.discriminator = copy.deepcopy(discriminator)
        self.alpha = alpha

    def forward(self, x: torch.Tensor, sample_weight: torch.Tensor | None = None) -> torch.Tensor:
        from skada.deep.modules import GradientReversalLayer

        return self.discriminator(GradientReversalLayer.apply(x, self.alpha))


def run_skada(method: str, data: dict, args: argparse.Namespace, seed: int, epochs: int | None = None, *,
              channels_last: bool = False) -> dict:
    """Train skada's method; ``channels_last`` is a diagnostic (--profile), off in the timed runs."""
    import skada.deep

    model, terms = initial_model(seed, method)
    net_module = SkadaNet(model)
    if channels_last:
        net_module = net_module.to(memory_format=torch.channels_last)
    common = {
        "module": net_module, "layer_name": "backbone", "reg": 1.0,
        "optimizer": torch.optim.AdamW, "optimizer__weight_decay": args.weight_decay, "lr": args.lr,
        "batch_size": args.batch_size, "max_epochs": epochs or args.epochs, "train_split": None, "device": "cpu",
        "verbose": 0,
    }
    if method == "dann":
        disc = next(t.module for t in terms if t.module is not None)
        net = skada.deep.DANN(domain_classifier=SkadaDomainClassifier(disc),
                              domain_criterion=nn.BCEWithLogitsLoss(), **common)
    else:
        net = getattr(skada.deep, METHODS[method])(**common)
    xs, xt = data["xs"].numpy(), data["xt"].numpy()
    x = np.concatenate([xs, xt])
    y = np.concatenate([data["ys"].numpy(), -np.ones(len(xt), dtype=np.int64)])  # target labels masked
    sample_domain = np.concatenate([np.ones(len(xs), dtype=np.int64), -2 * np.ones(len(xt), dtype=np.int64)])
    torch.manual_seed(seed)
    t0, c0 = time.perf_counter(), time.process_time()
    net.fit(x, y, sample_domain=sample_domain)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    net.module_.eval()
    acc = accuracy(net.module_.base_module_, data["x_test"], data["y_test"])
    return {"acc": acc, "epoch_s": [float(d) for d in net.history[:, "dur"]], "wall_s": wall, "cpu_s": cpu}


# -- profile ----------------------------------------------------------------------------------------
PHASES = [  # (label, path fragment, function): cumulative time of these calls within one epoch of ours
    ("data loading (from the input cache) + collate", "torch/utils/data/dataloader.py", "_next_data"),
    ("forward (backbone + head on source+target)", "transferkit/train/engine.py", "_forward"),
    ("loss terms (incl. DANN discriminator forward)", "transferkit/train/engine.py", "_loss"),
    ("backward", "accelerate/accelerator.py", "backward"),
    ("optimizer step (AdamW)", "accelerate/optimizer.py", "step"),
    ("zero_grad", "accelerate/optimizer.py", "zero_grad"),
]


def profile_ours(method: str, data: dict, args: argparse.Namespace) -> str:
    """One epoch of ours under cProfile: time per phase, then the top functions by own time."""
    prof = cProfile.Profile()
    prof.enable()
    run_ours(method, data, args, seed=0, epochs=1)
    prof.disable()
    raw = pstats.Stats(prof).stats  # {(path, line, function): (calls, primitive calls, own s, cumulative s, ...)}
    cum: dict[str, float] = {}
    for (path, _, func), row in raw.items():
        for label, frag, name in PHASES:
            if func == name and path.replace("\\", "/").endswith(frag):
                cum[label] = cum.get(label, 0.0) + row[3]
    fit = sum(row[3] for (path, _, func), row in raw.items() if func == "fit" and path.endswith("train/engine.py"))
    lines = ["| phase | s (under cProfile) | share of the epoch |", "|---|---:|---:|"]
    for label, _, _ in PHASES:
        lines.append(f"| {label} | {cum.get(label, 0.0):.2f} | {cum.get(label, 0.0) / fit:.0%} |")
    rest = fit - sum(cum.values())
    lines.append(f"| rest (set-up, engine loop, logging, wrappers) | {rest:.2f} | {rest / fit:.0%} |")
    lines.append(f"| Engine.fit, 1 epoch | {fit:.2f} | 100% |")
    out = io.StringIO()
    pstats.Stats(prof, stream=out).strip_dirs().sort_stats("tottime").print_stats(14)
    top = "\n".join(line for line in out.getvalue().splitlines() if line.strip())
    return "\n".join(lines) + "\n\n```\n" + top + "\n```"


DIAGNOSTICS = [  # (label, side, options): one epoch each, not part of the timed comparison
    ("ours as timed above", "ours", {}),
    ("ours + channels_last", "ours", {"channels_last": True}),
    ("ours + channels_last + bf16 autocast (forward passes)", "ours", {"channels_last": True, "bf16": True}),
    ("skada as timed above", "skada", {}),
    ("skada + channels_last (its user could do this too)", "skada", {"channels_last": True}),
]


def diagnose(method: str, data: dict, args: argparse.Namespace, rounds: int = 2) -> str:
    """What would change our epoch time: one epoch per variant, rounds in alternating order, median."""
    times: dict[str, list[float]] = {label: [] for label, _, _ in DIAGNOSTICS}
    walls: dict[str, list[float]] = {label: [] for label, _, _ in DIAGNOSTICS}
    accs: dict[str, float] = {}
    for r in range(rounds):
        for label, side, opts in DIAGNOSTICS if r % 2 == 0 else DIAGNOSTICS[::-1]:
            fn = run_ours if side == "ours" else run_skada
            res = fn(method, data, args, 0, 1, **opts)
            times[label].append(res["cpu_s"])
            walls[label].append(res["epoch_s"][0])
            accs[label] = res["acc"]
    base = statistics.median(times["skada as timed above"])
    lines = ["| variant (1 epoch, seed 0) | CPU s | × skada as timed (CPU) | wall s/epoch | acc. after 1 epoch |",
             "|---|---:|---:|---:|---:|"]
    for label, _, _ in DIAGNOSTICS:
        t = statistics.median(times[label])
        lines.append(f"| {label} | {t:.2f} | {t / base:.2f} | {statistics.median(walls[label]):.2f} | "
                     f"{accs[label] * 100:.1f} |")
    return "\n".join(lines)


# -- report -----------------------------------------------------------------------------------------
def source_fingerprint() -> str:
    """A hash of the transferkit sources this run imported (which code was measured, committed or not)."""
    root = Path(transferkit.__file__).parent
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.py")):
        h.update(str(p.relative_to(root)).encode() + p.read_bytes())
    return h.hexdigest()[:12]


def git_state() -> str:
    repo = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--", "src"], capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    if Path(transferkit.__file__).resolve().parents[1] != repo / "src":
        return f"{head} (transferkit was imported from elsewhere, not from this repository's src/)"
    return f"{head}{' (src/ has uncommitted changes)' if dirty else ''}"



def mean_std(xs: list[float], scale: float = 100.0) -> str:
    if len(xs) == 1:
        return f"{xs[0] * scale:.1f}"
    return f"{statistics.mean(xs) * scale:.1f} ± {statistics.stdev(xs) * scale:.1f}"


def spread(xs: list[float], fmt: str = ".2f") -> str:
    return f"{statistics.median(xs):{fmt}} ({min(xs):{fmt}}–{max(xs):{fmt}})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default="dann,dan,coral")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--source-size", type=int, default=10000,
                   help="MNIST train images used as the source (0: all 60,000); rounded down to whole batches")
    p.add_argument("--subset-seed", type=int, default=0, help="which MNIST subset (the same for every seed)")
    p.add_argument("--batch-size", type=int, default=64, help="per domain: B source + B target images a step")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--full", action="store_true", help="the full protocol: all of MNIST train, 20 epochs")
    p.add_argument("--profile", action="store_true", help="then profile one epoch of each of our methods (cProfile)")
    p.add_argument("--json", default=None, help="also write the raw numbers here")
    p.add_argument("--precisions", default="no",
                   help="ours under each train.mixed_precision listed (no = fp32, bf16), each against the same skada")
    args = p.parse_args()
    if args.full:
        args.source_size, args.epochs = 0, 20
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning, module="skorch")
    import skada  # noqa: F401  (turns on scikit-learn's metadata routing; imported before any timing)

    methods = args.methods.split(",")
    unknown = set(methods) - set(METHODS)
    if unknown:
        p.error(f"unknown method(s) {sorted(unknown)}; choose from {', '.join(METHODS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    command = " ".join(["python", *sys.argv])
    print(f"# transferkit vs skada, {datetime.now().isoformat(timespec='minutes')}\n")
    print(f"command: `{command}`")
    print(f"python: {sys.executable} ({platform.python_version()})")
    print(f"machine: {platform.platform()}, {cpu_name()}, {os.cpu_count()} CPUs; torch threads "
          f"{torch.get_num_threads()}")
    libs = ["transferkit", "skada", "skorch", "torch", "torchvision", "numpy", "scikit-learn", "accelerate"]
    print("versions: " + ", ".join(f"{n} {version(n)}" for n in libs))
    print(f"transferkit imported from {Path(transferkit.__file__).parent} (sources {source_fingerprint()}); "
          f"repository HEAD {git_state()}")

    t_load = time.perf_counter()
    data = load_task(args.source_size, args.batch_size, args.subset_seed)
    n_s, n_t = len(data["source"]), len(data["target"])
    steps = max(n_s, n_t) // args.batch_size
    print(f"data: source MNIST train {n_s} (subset seed {args.subset_seed}), target USPS train {n_t} unlabelled "
          f"(whole batches of the 7,291), "
          f"scored on USPS test {len(data['y_test'])}; 28x28 ({time.perf_counter() - t_load:.0f} s to load)")
    print(f"network: LeNet (conv20-conv50-fc500) + linear head, same initial weights both sides; AdamW lr {args.lr} "
          f"wd {args.weight_decay}, constant LR; batch {args.batch_size} source + {args.batch_size} target; "
          f"{steps} steps/epoch; {args.epochs} epochs; seeds {seeds}; final epoch scored (no selection)\n",
          flush=True)

    precisions = args.precisions.split(",")
    ours_sides = ["ours" if prec == "no" else f"ours {prec}" for prec in precisions]
    results: dict[str, dict[str, list[dict]]] = {m: {side: [] for side in [*ours_sides, "skada"]} for m in methods}
    t_all = time.perf_counter()
    for r, seed in enumerate(seeds):
        for j, m in enumerate(methods):
            order = (*ours_sides, "skada") if (r + j) % 2 == 0 else ("skada", *ours_sides)
            for side in order:
                if side == "skada":
                    res = run_skada(m, data, args, seed)
                else:
                    res = run_ours(m, data, args, seed, precision=precisions[ours_sides.index(side)])
                results[m][side].append(res)
                print(f"seed {seed} {m:5s} {side:5s}: target acc {res['acc'] * 100:.1f}%, "
                      f"s/epoch {statistics.median(res['epoch_s']):.2f}, fit {res['wall_s']:.1f} s wall, "
                      f"{res['cpu_s']:.1f} s CPU", flush=True)
    total = time.perf_counter() - t_all

    print("\n| method | target acc. % ours | skada | s/epoch ours | skada | ratio ours/skada | CPU s/epoch ours "
          "| skada | CPU ratio ours/skada | acc. goal: ours ≥ skada | time goal: ≤ 0.5x |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|:-:|:-:|")
    for m, side in [(m, side) for m in methods for side in ours_sides]:
        ours, theirs = results[m][side], results[m]["skada"]
        acc_o, acc_s = [x["acc"] for x in ours], [x["acc"] for x in theirs]
        ep_o = [statistics.median(x["epoch_s"]) for x in ours]
        ep_s = [statistics.median(x["epoch_s"]) for x in theirs]
        ratios = [a / b for a, b in zip(ep_o, ep_s, strict=True)]
        cpu_o = [x["cpu_s"] / len(x["epoch_s"]) for x in ours]
        cpu_s = [x["cpu_s"] / len(x["epoch_s"]) for x in theirs]
        cpu_ratios = [a / b for a, b in zip(cpu_o, cpu_s, strict=True)]
        acc_ok = "yes" if statistics.mean(acc_o) >= statistics.mean(acc_s) else "no"
        time_ok = "yes" if max(statistics.median(ratios), statistics.median(cpu_ratios)) <= 0.5 else "no"
        label = m if side == "ours" else f"{m} ({side.removeprefix('ours ')})"
        print(f"| {label} vs {METHODS[m]} | {mean_std(acc_o)} | {mean_std(acc_s)} | {spread(ep_o)} | {spread(ep_s)} | "
              f"{spread(ratios)} | {spread(cpu_o)} | {spread(cpu_s)} | {spread(cpu_ratios)} | {acc_ok} | {time_ok} |")
    print(f"\naccuracy: mean ± std over {len(seeds)} seed(s) (USPS test, final epoch). s/epoch: each library's own "
          "epoch timer (wall clock), median of a run's epochs. CPU s/epoch: the process's CPU time over the whole fit "
          "call / epochs (each library's one-time fit set-up included), steadier than wall time when other jobs share "
          "the machine. Each cell: median over seeds (min–max); ratios are per seed, from the two runs back to back. "
          f"Time goal met only if both median ratios are <= 0.5. Total {total / 60:.1f} min.", flush=True)

    if args.json:
        Path(args.json).write_text(json.dumps({"command": command, "args": vars(args), "results": results}, indent=2))
    if args.profile:
        print("\n## Where our epoch's time goes (diagnostics, after the timed runs)")
        for m in methods:
            print(f"\n### {m}: one epoch of ours under cProfile (the profiler inflates Python-heavy phases)\n")
            print(profile_ours(m, data, args), flush=True)
            print(f"\n### {m}: variants without the profiler; 'ours, ...' rows are not what transferkit ships\n")
            print(diagnose(m, data, args), flush=True)


if __name__ == "__main__":
    main()

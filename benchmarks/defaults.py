"""The defaults suite: what a user gets from `transferkit fit` with data, a backbone and (optionally) a method, and
nothing else, on every task family of the benchmark root and on small sources, next to plain baselines.

Each row of the table is a task family at one source size: the full labelled source, or ``K`` labelled items per
class drawn by seed (``data.source_per_class``, the same draw the baselines get). Columns, target accuracy %, mean
± std over seeds of the family's task average:

- ``transferkit``: `transferkit fit --source S --target T --backbone B [--method M]` through the library, with only
  what the task itself defines besides (its splits; ``finetune.strategy linear-probe`` where the family is "frozen
  MiniLM"). No epochs, learning rate, batch or validation setting: the defaults.
- ``logreg``: scikit-learn ``LogisticRegression(max_iter=2000)`` on the same inputs (raw features, raw pixels
  resized as the backbone resizes them, the frozen encoder's embeddings, or MFCC mean/std for speech).
- ``mlp30``: a 256-256 ReLU MLP, Adam 1e-3, batch 64, 30 epochs, no validation (the classic plain baseline).
- ``tuned``: the best tuned recipe of benchmarks/README.md for that family (full size only; its own protocol
  and number of tasks, quoted, not re-run here).

Families (a representative subset of tasks; the table says which):

=============  =============================================================  ============================
family         tasks (source -> target)                                       backbone, inputs
=============  =============================================================  ============================
amazon         B->K, E->D, K->B, D->E (of the 12), 5,000-d count features      mlp
digits         mnist-5k -> digits-uci, usps -> mnist                           lenet, raw pixels
amazon-text    B->K, K->B, raw review text, transductive (split all)           st:all-MiniLM-L6-v2 frozen
newsgroups     comp-vs-rec, rec-vs-talk, source train -> target test           st:all-MiniLM-L6-v2 frozen
fsdd           leave jackson / theo out, the other five speakers the source    logmel-cnn
=============  =============================================================  ============================

Every run is its own process (``--jobs`` at a time, one torch thread each); finished runs are appended to a JSON
lines file at once, so an interrupted suite resumes with ``--skip-done``. Feature extraction of the frozen encoder
is cached (``~/.cache/transferkit``).

    .venv/bin/python benchmarks/defaults.py --families amazon,digits --sizes full,20 --seeds 0,1,2 --skip-done
    .venv/bin/python benchmarks/defaults.py --table-only --results-jsonl benchmarks/results/defaults-DATE.jsonl

Needs the benchmark data root (TRANSFERKIT_DATA).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _runner import Job, capture_guard_arrays, common_args, header, run_all

AMAZON = {"B": "books", "D": "dvd", "E": "electronics", "K": "kitchen"}


@dataclass(frozen=True)
class Family:
    tasks: list[tuple[str, str]]
    backbone: str
    train_split: str = "train"
    eval_split: str = "test"
    flags: dict[str, Any] = field(default_factory=dict)  # what the task defines beyond data and backbone
    inputs: str = "raw"  # what the baselines read: raw, pixels28, embeddings, mfcc
    tuned: str = ""  # the best tuned recipe of benchmarks/README.md, quoted
    vectors: str | None = None  # a feature-vector family: each domain's inputs turned into .npz by this extractor


FAMILIES: dict[str, Family] = {
    "amazon": Family(
        [(f"amazon-{AMAZON[a]}", f"amazon-{AMAZON[b]}") for a, b in ("BK", "ED", "KB", "DE")], "mlp",
        tuned="MLP 5000-50-2, 20 epochs: source-only 74.0 on these 4 tasks (results/amazon.md; DAN 78.3)"),
    "digits": Family([("mnist-5k", "digits-uci"), ("usps", "mnist")], "lenet", inputs="pixels28",
                     tuned="LeNet 15 epochs: mnist-5k -> digits-uci source-only 59.7 (the demo); USPS -> MNIST 65.6 "
                           "(1 seed, 10 epochs, README digits.py)"),
    "amazon-text": Family(
        [(f"amazon-text-{AMAZON[a]}", f"amazon-text-{AMAZON[b]}") for a, b in ("BK", "KB")], "st:all-MiniLM-L6-v2",
        train_split="all", eval_split="all", flags={"finetune": {"strategy": "linear-probe"}}, inputs="embeddings",
        tuned="frozen MiniLM + 256-d bottleneck, 10 epochs: source-only 65.7 on these 2 tasks "
              "(results/amazon_text.md)"),
    "newsgroups": Family(
        [(f"20newsgroups-{p}-source", f"20newsgroups-{p}-target") for p in ("comp-vs-rec", "rec-vs-talk")],
        "st:all-MiniLM-L6-v2", flags={"finetune": {"strategy": "linear-probe"}}, inputs="embeddings",
        tuned="frozen MiniLM + 256-d bottleneck, 10 epochs: source-only 93.8 on these 2 pairs "
              "(README, newsgroups_pairs.py)"),
    "fsdd": Family([(f"fsdd-not-{s}", f"fsdd-{s}") for s in ("jackson", "theo")], "logmel-cnn", inputs="mfcc",
                   tuned="logmel-cnn, 5 epochs, lr 3e-3: source-only 88.4 on these 2 speakers (results/fsdd.md)"),
    # Feature-vector families made from the data above, as a user brings features they computed elsewhere (the
    # classic domain-adaptation benchmarks ship such files): `--backbone mlp` on .npz files.
    "vec-minilm": Family(
        [(f"amazon-text-{AMAZON[a]}", f"amazon-text-{AMAZON[b]}") for a, b in ("BK", "ED", "KB")] +
        [(f"20newsgroups-{p}-source", f"20newsgroups-{p}-target") for p in ("comp-vs-sci",)], "mlp",
        vectors="minilm"),
    "vec-effnet": Family([("mnist-5k", "digits-uci"), ("usps", "mnist-5k")], "mlp", vectors="effnet"),
    "vec-mfcc": Family([(f"fsdd-not-{s}", f"fsdd-{s}") for s in ("jackson", "lucas", "theo")], "mlp",
                       vectors="mfcc"),
}
ARMS = ("transferkit", "logreg", "mlp30")  # also: logreg-z, mlp30-z (standardised per domain)


def _splits(name: str) -> tuple[str, str]:
    """The (train, eval) splits a vector family reads a domain with: the transductive text domains have one."""
    return ("all", "all") if name.startswith("amazon-text-") else ("train", "test")


def vector_file(args: argparse.Namespace, family: str, domain: str) -> Path:
    return Path(args.output_dir) / "vectors" / family / f"{domain}.npz"


def prepare_vectors(args: argparse.Namespace) -> None:
    """Write each vector family's domains as .npz (x_train, y_train, x_test, y_test, classes), once."""
    import numpy as np

    from transferkit.data import load_data

    for fam in args.families.split(","):
        family = FAMILIES[fam]
        if family.vectors is None:
            continue
        for domain in sorted({d for task in family.tasks for d in task}):
            path = vector_file(args, fam, domain)
            if path.exists():
                continue
            how = {"minilm": "embeddings", "effnet": "effnet", "mfcc": "mfcc"}[family.vectors]
            train_split, eval_split = _splits(domain)
            arrays = {}
            for split, key in ((train_split, "train"), (eval_split, "test")):
                ds = load_data(domain, split, args.root)
                arrays[f"x_{key}"], arrays[f"y_{key}"] = _inputs(ds, how), np.asarray(ds.labels)
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, **arrays, classes=np.asarray(ds.classes))
            print(f"# vectors: {path} {arrays['x_train'].shape}", flush=True)


def jobs_for(args: argparse.Namespace) -> list[Job]:
    out = []
    for fam in args.families.split(","):
        for source, target in FAMILIES[fam].tasks:
            if FAMILIES[fam].vectors is not None:
                source, target = (str(vector_file(args, fam, d)) for d in (source, target))
            for size in args.sizes.split(","):
                for seed in (int(s) for s in args.seeds.split(",")):
                    for arm in args.arms.split(","):
                        methods = args.methods.split(",") if arm == "transferkit" else ["none"]
                        for method in methods:
                            job = {"family": fam, "source": source, "target": target, "size": size,
                                   "seed": seed, "arm": arm, "method": method, "root": args.root,
                                   "output_dir": args.output_dir}
                            if arm == "transferkit" and args.save_arrays:  # not part of the run's identity
                                job["arrays_dir"] = args.save_arrays
                            if arm == "transferkit" and args.variant:
                                job["variant"], job["overrides"] = args.variant, _overrides(args.set)
                            out.append(job)
    return out


def _overrides(pairs: list[str]) -> dict[str, dict[str, Any]]:
    """``section.key=JSON`` pairs (``model.backbone_kwargs={"hidden": 64}``): a candidate default, measured as a
    named variant of the transferkit arm next to the defaults."""
    out: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        dotted, _, value = pair.partition("=")
        section, _, key = dotted.partition(".")
        if not key or not value:
            raise SystemExit(f"--set wants section.key=JSON, got {pair!r}")
        out.setdefault(section, {})[key] = json.loads(value)
    return out


# -- one run --------------------------------------------------------------------------------------------------------
def run_job(job: Job) -> dict[str, Any]:
    return _transferkit(job) if job["arm"] == "transferkit" else _baseline(job)


def _transferkit(job: Job) -> dict[str, Any]:
    from transferkit.config import parse_config
    from transferkit.experiment import fit

    fam = FAMILIES[job["family"]]
    size = None if job["size"] == "full" else int(job["size"])
    raw: dict[str, Any] = {
        "name": f"{job['family']}-{Path(job['source']).stem}-{Path(job['target']).stem}-{job['size']}-"
                f"{job['method'].replace('+', 'plus')}{'-' + job['variant'] if job.get('variant') else ''}"
                f"-s{job['seed']}",
        "output_dir": job["output_dir"], "seeds": [job["seed"]],
        "data": {"source": job["source"], "target": job["target"], "source_per_class": size,
                 "train_split": fam.train_split, "eval_split": fam.eval_split, "root": job["root"]},
        "model": {"backbone": fam.backbone},
        "adapt": {"method": job["method"]},
    }
    for section, values in [*fam.flags.items(), *job.get("overrides", {}).items()]:
        raw.setdefault(section, {}).update(values)
    arrays = Path(job["arrays_dir"]) / raw["name"] if job.get("arrays_dir") else None
    if arrays is not None:
        arrays.parent.mkdir(parents=True, exist_ok=True)
    capture_guard_arrays(arrays)
    report = fit(parse_config(raw), overwrite=True, progress=False)
    seed = report["per_seed"][0]
    out = {"r_target_acc": report["summary"]["target"]["accuracy"]["mean"], "r_steps": seed["fit"].get("steps"),
           "r_budget": seed["fit"].get("budget"), "r_selection": report["selection"],
           "r_guard": seed.get("guard", {}).get("keep"), "r_seconds": seed["fit"].get("seconds")}
    if "auto" in seed:  # every candidate's label-free numbers and target accuracy: benchmarks/auto_selection.py
        out["r_auto"] = {"chosen": seed["auto"]["chosen"], "ensemble": seed["auto"].get("ensemble_target_accuracy"),
                         "candidates": {
            name: {k: c.get(k) for k in ("target_accuracy", "kept", "guard_rules", "validators", "seconds")}
            for name, c in seed["auto"]["candidates"].items()}}
    if arrays is not None:
        out["r_arrays"] = str(arrays)  # + -call{i}.npz: one per guard decision (auto: in adapt.auto_methods' order)
    if "guard" in seed:
        out["r_guard_rules"] = seed["guard"].get("numbers", {}).get("rules")
    return out


def _inputs(ds: Any, how: str, device: str = "cpu") -> Any:
    import numpy as np

    if how == "raw":
        return np.asarray(ds.inputs, dtype=np.float32)
    if how == "pixels28":
        from PIL import Image

        return np.stack([np.asarray(Image.fromarray(np.asarray(a)).resize((28, 28), Image.BILINEAR),
                                    dtype=np.float32).ravel() / 255.0 for a in ds.inputs])
    if how == "embeddings":
        from transferkit.features import cached_features
        from transferkit.models.backbones import create_backbone

        return np.asarray(cached_features(create_backbone("st:all-MiniLM-L6-v2"), ds, device=device,
                                          progress=False).inputs, dtype=np.float32)
    if how == "effnet":  # ImageNet features of a frozen pretrained CNN (as DeCAF features are), 1,280-d
        from transferkit.features import cached_features
        from transferkit.models.backbones import create_backbone

        bb = create_backbone("timm:tf_efficientnet_lite0", pretrained=True, image_size=112)
        return np.asarray(cached_features(bb, ds, device=device, progress=False).inputs, dtype=np.float32)
    if how == "mfcc":
        import librosa

        rows = []
        for i in range(len(ds)):
            wave = ds.decode(i)
            m = librosa.feature.mfcc(y=np.asarray(wave.samples, dtype=np.float32), sr=wave.sample_rate, n_mfcc=20)
            rows.append(np.concatenate([m.mean(1), m.std(1)]))
        return np.asarray(rows, dtype=np.float32)
    raise ValueError(how)


def _baseline(job: Job) -> dict[str, Any]:
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from transferkit.data import load_data

    fam = FAMILIES[job["family"]]
    source = load_data(job["source"], fam.train_split, job["root"])
    if job["size"] != "full":
        source = source.per_class(int(job["size"]), seed=job["seed"])
    target = load_data(job["target"], fam.eval_split, job["root"])
    xs, xt = _inputs(source, fam.inputs), _inputs(target, fam.inputs)
    ys, yt = np.asarray(source.labels), np.asarray(target.labels)
    arm = job["arm"]
    if arm.endswith("-z"):  # standardised per domain: the source by its own statistics, the target by its own
        arm = arm[:-2]
        target_pool = load_data(job["target"], fam.train_split, job["root"])  # the unlabelled target training data
        xu = _inputs(target_pool, fam.inputs)
        xs = (xs - xs.mean(0)) / (xs.std(0) + 1e-6)
        xt = (xt - xu.mean(0)) / (xu.std(0) + 1e-6)
    if arm == "logreg":
        scaler = StandardScaler().fit(xs) if fam.inputs == "mfcc" else None  # MFCCs: wildly different scales
        fit_x, test_x = (scaler.transform(xs), scaler.transform(xt)) if scaler else (xs, xt)
        pred = LogisticRegression(max_iter=2000).fit(fit_x, ys).predict(test_x)
        return {"r_target_acc": float((pred == yt).mean())}
    torch.manual_seed(job["seed"])
    c = int(max(ys.max(), yt.max())) + 1
    net = torch.nn.Sequential(torch.nn.Linear(xs.shape[1], 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
                              torch.nn.ReLU(), torch.nn.Linear(256, c))
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    x, y = torch.from_numpy(xs), torch.from_numpy(ys.astype(np.int64))
    if fam.inputs == "mfcc":
        mu, sd = x.mean(0), x.std(0).clamp_min(1e-6)
        x, xt_t = (x - mu) / sd, (torch.from_numpy(xt) - mu) / sd
    else:
        xt_t = torch.from_numpy(xt)
    g = torch.Generator().manual_seed(job["seed"])
    for _ in range(30):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 64):
            b = perm[i: i + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x[b]), y[b]).backward()
            opt.step()
    with torch.no_grad():
        pred = net(xt_t).argmax(1).numpy()
    return {"r_target_acc": float((pred == yt).mean())}


# -- the table ------------------------------------------------------------------------------------------------------
def table(rows: list[dict[str, Any]], args: argparse.Namespace) -> list[str]:
    """Per family and size: each arm's task average (mean ± std over seeds of the per-seed task average)."""
    cells: dict[tuple[str, str, str], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        arm = r["arm"] if r["arm"] != "transferkit" or r["method"] == "none" else f"transferkit {r['method']}"
        arm += f" [{r['variant']}]" if r.get("variant") else ""
        cells[(r["family"], r["size"], arm)][r["seed"]].append(r["r_target_acc"])
    arms = sorted({k[2] for k in cells}, key=lambda a: (not a.startswith("transferkit"), a))
    lines = ["| family | source size | " + " | ".join(arms) + " | tuned recipe (README) |",
             "|---|---|" + "---:|" * len(arms) + "---|"]
    for fam in args.families.split(","):
        for size in args.sizes.split(","):
            row = []
            for arm in arms:
                per_seed = cells.get((fam, size, arm), {})
                n_tasks = len(FAMILIES[fam].tasks)
                avgs = [100 * statistics.mean(v) for v in per_seed.values() if len(v) == n_tasks]
                if not avgs:
                    row.append("–")
                    continue
                sd = statistics.stdev(avgs) if len(avgs) > 1 else 0.0
                row.append(f"{statistics.mean(avgs):.1f} ± {sd:.1f}" + ("" if len(avgs) == 3 else f" (n={len(avgs)})"))
            label = "full" if size == "full" else f"{size}/class"
            tuned = FAMILIES[fam].tuned if size == "full" else ""
            lines.append(f"| {fam} | {label} | " + " | ".join(row) + f" | {tuned} |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", default=",".join(FAMILIES))
    p.add_argument("--sizes", default="full,150,50,20", help="full and/or K labelled source items per class")
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--methods", default="none", help="transferkit arm: none and/or adaptation methods (or auto)")
    p.add_argument("--root", default=os.environ.get("TRANSFERKIT_DATA"))
    p.add_argument("--variant", default="", help="name the transferkit arm's --set overrides (a candidate default)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=JSON",
                   help="with --variant: a config value the candidate changes (repeatable)")
    p.add_argument("--table-only", action="store_true", help="print the table of --results-jsonl, run nothing")
    p.add_argument("--save-arrays", default=None, metavar="DIR",
                   help="keep both models' label-free outputs of every guard decision here (to study guard rules)")
    common_args(p, "defaults")
    args = p.parse_args()
    header(args)
    if not args.table_only:
        prepare_vectors(args)
    jobs = jobs_for(args)
    if args.table_only:
        path = Path(args.results_jsonl)
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    else:
        rows = run_all(jobs, run_job, args)
    print("\n".join(table(rows, args)))


if __name__ == "__main__":
    main()

"""`accelerate launch` with 2 CPU processes (gloo) trains what one process trains with the same global batch.

Two processes with batch 16 each see, step for step, the 32 items one process with batch 32 sees (Accelerate
hands process p the batches p, p + 2, ... of the same shuffle). The source cross-entropy is a mean over items, so
DDP's averaging of the gradients is exact; DANN's discriminator (BatchNorm inside) runs on the batch gathered from
both processes, so it sees what the single process sees; with two sources, each source's discriminator takes the
gathered batch's items of that source. What differs is the order of floating-point sums, hence
the tolerance below. Only the main process writes the run directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from transferkit.config import parse_config
from transferkit.experiment import fit
from transferkit.runs import read_jsonl

ACCELERATE = shutil.which("accelerate", path=str(Path(sys.executable).parent))
TOLERANCE = 1e-5  # absolute, on every weight after 2 epochs (16 optimiser steps); measured 1.5e-6


def _data(tmp_path: Path) -> tuple[Path, Path, Path]:
    rng = np.random.default_rng(0)
    paths = []
    for name, shift in (("src", 0.0), ("tgt", 0.8), ("src2", 0.4)):
        y = rng.integers(0, 2, 320)
        x = (rng.normal(size=(320, 6)) + 1.5 * y[:, None] + shift).astype(np.float32)
        path = tmp_path / f"{name}.npz"  # 256 training items: 8 steps of 32 per epoch, nothing left over
        np.savez(path, x_train=x[:256], y_train=y[:256], x_test=x[256:], y_test=y[256:],
                 classes=np.array(["neg", "pos"]))
        paths.append(path)
    return paths[0], paths[1], paths[2]


def _settings(method: str) -> list[str]:
    two_sources = method.endswith("two-sources")
    # Two sources: SGD, because AdamW divides each step by the root of the squared gradient. A weight whose
    # gradient is nearly 0 then takes a step of about the learning rate from the float rounding alone (5.7e-4 apart
    # after 32 steps with AdamW against 1.5e-7 with SGD, measured). The one-source runs stay within 1e-5 with AdamW.
    # standardize none: the per-domain standardisation layer's division adds rounding that AdamW amplifies past 1e-5
    return ["data.val_fraction=0", "model.backbone_kwargs={dropout: 0.0, standardize: none}", "train.device=cpu",
            "train.threads=1", "train.lr=0.01", "train.epochs=2",
            f"train.optimizer={'sgd' if two_sources else 'adamw'}", "adapt.guard=false",
            f"adapt.method={method.split('-')[0]}"]


@pytest.mark.skipif(ACCELERATE is None, reason="the accelerate command is not installed")
@pytest.mark.parametrize("method", ["none", "dann", "dann-two-sources"])
def test_two_processes_match_one_with_the_same_global_batch(tmp_path: Path, method: str) -> None:
    """``dann-two-sources``: one discriminator per source, each on the gathered batch's items of its source."""
    src, tgt, src2 = _data(tmp_path)
    sources = [str(src), str(src2)] if method.endswith("two-sources") else [str(src)]
    target = ["--target", str(tgt)] if method != "none" else []
    sets = [a for s in _settings(method) for a in ("--set", s)]
    cmd = [ACCELERATE, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "transferkit", "fit",
           *(a for s in sources for a in ("--source", s)), *target, "--backbone", "mlp", "--batch-size", "16",
           "--name", "two", "--output-dir", str(tmp_path / "runs"), "--no-progress", *sets]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_PORT": str(29500 + os.getpid() % 1000)}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    overrides = dict(s.split("=", 1) for s in _settings(method))
    raw = {"name": "one", "output_dir": str(tmp_path / "runs"),
           "data": {"source": sources if len(sources) > 1 else sources[0], "batch_size": 32},
           "model": {"backbone": "mlp"}}
    if method != "none":
        raw["data"]["target"] = str(tgt)
    import yaml

    one = parse_config(raw, {k: yaml.safe_load(v) for k, v in overrides.items()})
    fit(one, progress=False)

    two_dir, one_dir = tmp_path / "runs" / "two", tmp_path / "runs" / "one"
    w2, w1 = load_file(str(two_dir / "model.safetensors")), load_file(str(one_dir / "model.safetensors"))
    assert w1.keys() == w2.keys()
    worst = max(float((w1[k] - w2[k]).abs().max()) for k in w1)
    print(f"{method}: largest weight difference {worst:.2e}")
    assert worst < TOLERANCE, f"largest weight difference {worst:.2e}"
    r2, r1 = (json.loads((d / "report.json").read_text()) for d in (two_dir, one_dir))
    for role in r1["evaluations"]:
        assert abs(r1["evaluations"][role]["accuracy"] - r2["evaluations"][role]["accuracy"]) <= 1 / 64
    m2, m1 = read_jsonl(two_dir / "metrics.jsonl"), read_jsonl(one_dir / "metrics.jsonl")
    assert len(m2) == 2  # written once, by the main process
    for a, b in zip(m1, m2, strict=True):  # the epoch records describe both processes' items
        assert a["step"] == b["step"] and abs(a["train_loss"] - b["train_loss"]) < 1e-4

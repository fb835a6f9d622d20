"""`transferkit fit` killed with SIGKILL in the middle of an epoch, then `fit --resume`: the finished run equals an
uninterrupted one bit for bit (weights, per-epoch metrics, final scores) on CPU.

The killed process is the real CLI in a subprocess; the only thing the test adds to it is a 20 ms pause per step
(patched in from the command line), so that the kill reliably lands part-way through an epoch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from safetensors.torch import load_file

from transferkit.runs import read_jsonl

SLOW_CLI = (
    "import time, transferkit.train.engine as e\n"
    "step = e.Engine._forward\n"
    "def slow(*a, **k):\n"
    "    time.sleep(0.02)\n"
    "    return step(*a, **k)\n"
    "e.Engine._forward = slow\n"
    "from transferkit.cli import main\n"
    "main()\n"
)


def _data(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)

    def make(n: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 2, n)
        return (rng.normal(size=(n, 6)) + 1.5 * y[:, None] + shift).astype(np.float32), y

    for name, shift in (("src", 0.0), ("tgt", 0.7)):
        (xtr, ytr), (xte, yte) = make(400, shift), make(100, shift)
        np.savez(tmp_path / f"{name}.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte,
                 classes=np.array(["neg", "pos"]))
    return tmp_path


def _args(data: Path, out: Path, name: str) -> list[str]:
    return ["fit", "--source", str(data / "src.npz"), "--target", str(data / "tgt.npz"), "--backbone", "mlp",
            "--method", "dann", "--epochs", "3", "--batch-size", "16", "--lr", "0.01", "--name", name,
            "--output-dir", str(out), "--no-progress", "--set", "train.threads=1",
            "--set", "train.checkpoint_every_steps=3", "--set", "train.device=cpu"]


def _run(args: list[str], code: str | None = None) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "transferkit", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)


def _finish(proc: subprocess.Popen[bytes]) -> None:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out.decode(errors="replace")


def _mid_epoch_checkpoint(run: Path) -> dict[str, int] | None:
    for meta in (run / "checkpoints" / "train").glob("step-*/meta.json"):
        try:
            found = json.loads(meta.read_text())
        except (OSError, ValueError):
            continue
        if found["epoch"] >= 1:
            return found
    return None


def test_sigkill_mid_epoch_then_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    # two output folders: runs of one folder share the guard's source-only twin (the second would reuse the
    # first's and log no twin training), and this compares two runs that each train everything
    data, out, alone = _data(tmp_path), tmp_path / "runs", tmp_path / "alone"
    straight = _run(_args(data, alone, "straight"))

    killed = _run(_args(data, out, "killed"), SLOW_CLI)
    deadline, seen = time.monotonic() + 300, None
    while seen is None and killed.poll() is None and time.monotonic() < deadline:
        seen = _mid_epoch_checkpoint(out / "killed")
        time.sleep(0.005)
    assert seen is not None, "no mid-epoch checkpoint of epoch 1 appeared before the run ended"
    os.kill(killed.pid, signal.SIGKILL)
    killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGKILL
    assert not (out / "killed" / "report.json").exists()  # it really died before finishing
    assert seen["step_in_epoch"] > 0

    _finish(_run([*_args(data, out, "killed"), "--resume"]))
    _finish(straight)

    a, b = alone / "straight", out / "killed"
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)  # bit-identical weights

    def untimed(run: Path) -> list[dict[str, object]]:
        return [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in read_jsonl(run / "metrics.jsonl")]

    assert untimed(a) == untimed(b)
    assert [r["epoch"] for r in untimed(b) if r["phase"] == "train"] == [0, 1, 2]  # the cut epoch logged once
    ra, rb = (json.loads((r / "report.json").read_text()) for r in (a, b))
    assert ra["evaluations"] == rb["evaluations"] and ra["guard"]["keep"] == rb["guard"]["keep"]


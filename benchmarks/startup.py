"""Start-up time of the CLI, as a ratio to ``python -c "import torch"`` measured in the same run.

Each command runs as a fresh process ``--repeats`` times (the first run of each warms the disk cache and is not
counted); the table gives the median wall time and its ratio to torch's import.

    .venv/bin/python benchmarks/startup.py --repeats 5
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = {
    "python -c 'import torch' (reference)": [sys.executable, "-c", "import torch"],
    "python -c 'import transferkit'": [sys.executable, "-c", "import transferkit"],
    "transferkit --help": ["transferkit", "--help"],
    "transferkit fit --help": ["transferkit", "fit", "--help"],
    "transferkit methods": ["transferkit", "methods"],
    "transferkit datasets": ["transferkit", "datasets"],
    "transferkit backbones": ["transferkit", "backbones"],
    # what `fit` and `evaluate` import before their first training step / forward pass (torchmetrics, ~3 s, comes
    # later: when the first split is scored)
    "imports before `fit` trains": [sys.executable, "-c", "import transferkit.cli, transferkit.experiment"],
    "imports before `evaluate` predicts": [sys.executable, "-c",
                                           "import transferkit.cli, transferkit.evaluate.predict, transferkit.runs"],
}


def _seconds(cmd: list[str], repeats: int) -> float:
    exe = shutil.which(cmd[0], path=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    cmd = [exe or cmd[0], *cmd[1:]]
    subprocess.run(cmd, capture_output=True, check=True)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    print(f"# {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    results = {name: _seconds(cmd, args.repeats) for name, cmd in COMMANDS.items()}
    ref = next(iter(results.values()))
    print("| command | median seconds | / import torch |\n|---|---:|---:|")
    for name, sec in results.items():
        print(f"| `{name}` | {sec:.2f} | {sec / ref:.2f} |")


if __name__ == "__main__":
    main()

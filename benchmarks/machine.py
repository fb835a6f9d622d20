"""What a benchmark prints about the machine it ran on, and how it saves its results (shared by the scripts)."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any


def write_results(out: str | Path, lines: list[str], numbers: dict[str, Any]) -> None:
    """The report as markdown at ``out`` and its numbers as JSON beside it (``.json``)."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    path.with_suffix(".json").write_text(json.dumps(numbers, indent=2) + "\n", encoding="utf-8")


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"

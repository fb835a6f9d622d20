"""Which settings a resumed run may change (how it is carried out, not what it computes), and the check."""

from __future__ import annotations

from typing import Any

from transferkit.config import RESUME_MAY_CHANGE, RunConfig
from transferkit.errors import ConfigError, RunDirError
from transferkit.runs import RunDir


def check_resume(run: RunDir, cfg: RunConfig, resume: bool) -> None:
    if not resume or not run.config.exists():
        return
    from transferkit.config import load_yaml_mapping

    try:
        old = load_yaml_mapping(run.config, "its config file")
    except ConfigError as exc:
        raise RunDirError(f"cannot resume {run.path}: {exc}; start a new run with --overwrite or another --name") \
            from None
    new = cfg.model_dump(mode="json")
    changed = [k for k in _diff(old, new) if k not in RESUME_MAY_CHANGE]
    if changed:
        raise RunDirError(
            f"cannot resume {run.path}: the configuration changed since it started ({', '.join(changed[:5])}); "
            "resume with the same config, or start a new run with --overwrite / another --name"
        )


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += _diff(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [prefix.rstrip(".")] if old != new else []

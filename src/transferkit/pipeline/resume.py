"""Which settings a resumed run may change (how it is carried out, not what it computes), and the check; the
content of the data a run started on (``data-digest.json``), which a resume must find unchanged."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from transferkit.config import RESUME_MAY_CHANGE, RunConfig, load_yaml_mapping
from transferkit.content_digest import DigestError, dataset_digest
from transferkit.errors import ConfigError, RunDirError, TransferkitError
from transferkit.runs import RunDir, atomic_write_json, read_json
from transferkit.train.twin_cache import model_files
from transferkit.ui import warn_once

if TYPE_CHECKING:
    from transferkit.pipeline.data import RunData

DATA_DIGEST = "data-digest.json"
_SCHEME = 1  # how the digests are computed: a file of another scheme is not compared (an older transferkit wrote it)


def data_digests(data: RunData) -> dict[str, str]:
    """One content digest per data setting (``data.source``, ``data.target``) over every split the run reads of it:
    inputs (files by their bytes), labels, class names and heads' targets."""
    import hashlib

    splits = {"data.source": (data.source_train, data.source_val, data.source_eval),
              "data.target": (data.target_train, data.target_labelled, data.target_eval)}
    out = {}
    for setting, parts in splits.items():
        if any(p is not None for p in parts):
            joined = "|".join("-" if p is None else dataset_digest(p) for p in parts)
            out[setting] = hashlib.sha256(joined.encode()).hexdigest()
    return out


def model_digests(cfg: RunConfig) -> dict[str, str]:
    """Content digests of the files the model is built from (``model.weights``, ``model.init_from``, a backbone
    folder with its tokenizer and config): a resume on a rewritten tokenizer would train half a model on each. A
    file that cannot be read enters nothing here (building the model names it)."""
    try:
        return model_files(cfg)
    except (DigestError, TransferkitError):
        return {}


def record_data(run: RunDir, digests: dict[str, str], resume: bool) -> None:
    """Write the data's digests when the run starts (and on a resume of a run that has none: an older one)."""
    path = run.path / DATA_DIGEST
    if not resume or not path.exists():
        atomic_write_json(path, {"scheme": _SCHEME, **digests})


def check_resume(run: RunDir, cfg: RunConfig, resume: bool, digests: dict[str, str] | None = None) -> None:
    """Refuse a resume whose configuration changed (beyond :data:`RESUME_MAY_CHANGE`) or whose data's content did."""
    if not resume or not run.config.exists():
        return

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
    if digests is not None:
        _check_data(run, cfg, digests)


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += _diff(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [prefix.rstrip(".")] if old != new else []


def _check_data(run: RunDir, cfg: RunConfig, digests: dict[str, str]) -> None:
    """The run's data must hold what it held when the run started: resumed weights trained on other data, scored on
    it, would be a model of neither."""
    path = run.path / DATA_DIGEST
    if not path.exists():  # a run begun before transferkit recorded it (or a folder that lost it): said, not silent
        warn_once(f"{path} is missing: the data cannot be checked against what the run started on (resuming as is)")
        return
    stored = read_json(path, "the run's data digest")
    if not isinstance(stored, dict) or stored.get("scheme") != _SCHEME:
        # a file of a scheme this transferkit does not write would switch the check off: refused, not skipped
        raise RunDirError(f"cannot resume {run.path}: {path} is not a data digest this transferkit writes, so the data "
                          "cannot be checked against what the run started on; start again with --overwrite")
    for setting, digest in digests.items():
        if stored.get(setting) != digest:
            section, _, key = setting.partition(".")
            spec = getattr(getattr(cfg, section), key.split()[0], setting)  # "model.backbone files": the backbone's
            what = "data" if section == "data" else "files"
            raise RunDirError(
                f"cannot resume {run.path}: the {what} of {setting} {spec!r} changed since the run started (its "
                f"content differs); resume it with the {what} it started on, or start again with --overwrite"
            )

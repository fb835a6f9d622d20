"""``pipeline/resume.py`` alone: which configuration changes a resume refuses, and the digest of the data a run
started on, which a resume must find unchanged."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from transferkit.config import RunConfig
from transferkit.errors import RunDirError
from transferkit.pipeline.data import load_run_data
from transferkit.pipeline.resume import DATA_DIGEST, check_resume, data_digests, record_data
from transferkit.runs import RunDir, atomic_write_text

Config = Callable[..., RunConfig]


def _started(cfg: RunConfig) -> tuple[RunDir, dict[str, str]]:
    """A run folder as ``fit`` leaves it once the run has started: its config and its data's digests."""
    run = RunDir(cfg.run_path)
    run.path.mkdir(parents=True)
    atomic_write_text(run.config, cfg.to_yaml())
    digests = data_digests(load_run_data(cfg, cfg.seeds[0]))
    record_data(run, digests, resume=False)
    return run, digests


def test_a_resume_with_the_same_config_and_data_is_allowed(config: Config) -> None:
    cfg = config(**{"adapt.method": "dann"})
    run, digests = _started(cfg)
    assert set(digests) == {"data.source", "data.target"}
    check_resume(run, cfg, True, digests)


def test_how_a_run_is_carried_out_may_change_not_what_it_computes(config: Config) -> None:
    run, digests = _started(config())
    check_resume(run, config(**{"train.threads": 1, "data.num_workers": 0}), True, digests)
    with pytest.raises(RunDirError, match=r"configuration changed since it started \(train.lr\)"):
        check_resume(run, config(**{"train.lr": 0.5}), True, digests)
    check_resume(run, config(**{"train.lr": 0.5}), False, digests)  # not a resume: nothing to compare


def test_a_resume_on_changed_data_is_refused(config: Config, domains: tuple[str, str]) -> None:
    cfg = config()
    run, _ = _started(cfg)
    with np.load(domains[1]) as f:
        arrays = dict(f)
    arrays["x_test"] = arrays["x_test"] + 1.0
    np.savez(domains[1], **arrays)
    changed = data_digests(load_run_data(cfg, 0))
    with pytest.raises(RunDirError, match=r"the data of data.target .* changed since the run started"):
        check_resume(run, cfg, True, changed)


def test_the_digests_are_written_at_the_start_and_kept_on_a_resume(config: Config) -> None:
    cfg = config()
    run, digests = _started(cfg)
    before = (run.path / DATA_DIGEST).read_text()
    record_data(run, {k: "0" * 64 for k in digests}, resume=True)  # a resume never rewrites them
    assert (run.path / DATA_DIGEST).read_text() == before


def test_a_run_folder_without_a_config_has_nothing_to_compare(config: Config, tmp_path: Path) -> None:
    check_resume(RunDir(tmp_path / "new"), config(), True, {})

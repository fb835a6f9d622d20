"""The run directory: atomic writes, append-only metrics, and the rules for creating, replacing and resuming."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from transferkit.errors import RunDirError
from transferkit.runs import (
    RunDir,
    append_jsonl,
    atomic_path,
    atomic_save_safetensors,
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    read_jsonl,
)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".tmp")


# -- atomic writes -----------------------------------------------------------------------------
def test_atomic_write_text_and_json(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "dir" / "a.txt"  # parents are created
    assert atomic_write_text(target, "hello\n") == target
    assert target.read_text(encoding="utf-8") == "hello\n"
    atomic_write_text(target, "replaced")
    assert target.read_text(encoding="utf-8") == "replaced"

    js = tmp_path / "r.json"
    atomic_write_json(js, {"acc": torch.tensor(0.5), "n": torch.tensor([1, 2]), "p": Path("x/y")})
    assert json.loads(js.read_text(encoding="utf-8")) == {"acc": 0.5, "n": [1, 2], "p": "x/y"}
    assert _leftovers(target.parent) == [] and _leftovers(tmp_path) == []


def test_atomic_path_keeps_the_old_file_when_the_block_raises(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    target.write_text("old", encoding="utf-8")
    with pytest.raises(RuntimeError, match="midway"), atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        tmp.write_text("half of the new cont", encoding="utf-8")
        raise RuntimeError("killed midway")
    assert target.read_text(encoding="utf-8") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_atomic_torch_save_failing_midway_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "state.pt"
    atomic_torch_save({"epoch": 1, "w": torch.ones(3)}, target)
    with pytest.raises(Exception):  # noqa: B017 - pickling a lambda fails inside torch.save, after the file is open
        atomic_torch_save({"epoch": 2, "fn": lambda: 0}, target)
    state = torch.load(target, weights_only=True)
    assert state["epoch"] == 1 and torch.equal(state["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]


def test_atomic_write_error_becomes_run_dir_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    with pytest.raises(RunDirError, match=f"cannot write {blocker / 'a.txt'}"):
        atomic_write_text(blocker / "a.txt", "y")  # the parent is a file


def test_atomic_save_safetensors_round_trip(tmp_path: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file

    w = torch.arange(6.0).reshape(2, 3).t()  # not contiguous
    path = atomic_save_safetensors({"w": w}, tmp_path / "m.safetensors", {"k": "v"})
    assert torch.equal(load_file(str(path))["w"], w)
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"k": "v"}
    assert _leftovers(tmp_path) == []


# -- metrics.jsonl -----------------------------------------------------------------------------
def test_append_and_read_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    assert read_jsonl(path) == []  # no file yet
    append_jsonl(path, {"epoch": 0, "loss": torch.tensor(1.5)})
    append_jsonl(path, {"epoch": 1, "loss": 0.25})
    assert path.read_text(encoding="utf-8").count("\n") == 2
    assert read_jsonl(path) == [{"epoch": 0, "loss": 1.5}, {"epoch": 1, "loss": 0.25}]


def test_read_jsonl_ignores_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, {"epoch": 0})
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"epoch": 1, "lo')  # killed mid-write
    assert read_jsonl(path) == [{"epoch": 0}]


def test_append_after_a_torn_line_keeps_the_new_record(tmp_path: Path) -> None:
    # a resumed run appends after the torn line: the new record must not be glued onto the fragment
    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, {"epoch": 0})
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"epoch": 1, "lo')
    append_jsonl(path, {"epoch": 1, "loss": 0.5})
    append_jsonl(path, {"epoch": 2, "loss": 0.4})
    assert read_jsonl(path) == [{"epoch": 0}, {"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.4}]


def test_append_jsonl_error_becomes_run_dir_error(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="cannot append"):
        append_jsonl(tmp_path / "missing" / "metrics.jsonl", {"a": 1})


# -- RunDir ------------------------------------------------------------------------------------
def _make_run(path: Path) -> RunDir:
    run = RunDir(path)
    run.prepare()
    run.config.write_text("name: x\n", encoding="utf-8")
    return run


def test_paths() -> None:
    run = RunDir("runs/demo")
    assert run.config == Path("runs/demo/config.yaml")
    assert run.metrics == Path("runs/demo/metrics.jsonl")
    assert run.model == Path("runs/demo/model.safetensors")
    assert run.checkpoints == Path("runs/demo/checkpoints")
    assert (run.report_json.name, run.report_md.name) == ("report.json", "report.md")
    assert run.seed(3).path == Path("runs/demo/seed-3")


def test_prepare_creates_a_fresh_folder(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "a" / "b")
    assert not run.exists()
    run.prepare()
    assert run.path.is_dir() and not run.exists()  # exists() means "holds something"
    run.prepare()  # an empty folder is not a run: no overwrite needed


def test_prepare_refuses_to_overwrite_without_the_flag(tmp_path: Path) -> None:
    run = _make_run(tmp_path / "r")
    (run.path / "report.json").write_text("{}", encoding="utf-8")
    with pytest.raises(RunDirError, match="already exists; pass --overwrite"):
        run.prepare()
    assert (run.path / "report.json").exists()
    run.prepare(overwrite=True)
    assert run.path.is_dir() and list(run.path.iterdir()) == []


def test_prepare_overwrites_a_multi_seed_run(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "r")
    run.seed(0).prepare()
    (run.seed(0).path / "metrics.jsonl").write_text("", encoding="utf-8")
    run.prepare(overwrite=True)
    assert list(run.path.iterdir()) == []


def test_prepare_refuses_to_delete_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    precious = tmp_path / "thesis"
    precious.mkdir()
    (precious / "chapter1.tex").write_text("...", encoding="utf-8")
    with pytest.raises(RunDirError, match="is not a transferkit run; refusing to delete it"):
        RunDir(precious).prepare(overwrite=True)
    assert (precious / "chapter1.tex").read_text(encoding="utf-8") == "..."


def test_resume(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match=r"cannot resume: run directory .* does not exist"):
        RunDir(tmp_path / "never").prepare(resume=True)
    assert not (tmp_path / "never").exists()
    run = _make_run(tmp_path / "r")
    append_jsonl(run.metrics, {"epoch": 0})
    run.prepare(resume=True)
    assert read_jsonl(run.metrics) == [{"epoch": 0}]


def test_find_model_single_and_multi_seed(tmp_path: Path) -> None:
    single = _make_run(tmp_path / "single")
    with pytest.raises(RunDirError, match=r"no finished model\.safetensors"):
        single.find_model()
    single.model.write_bytes(b"x")
    assert single.find_model() == single.model

    multi = RunDir(tmp_path / "multi")
    for s in (10, 2):
        multi.seed(s).prepare()
        multi.seed(s).model.write_bytes(b"x")
    assert multi.find_model(seed=10) == multi.seed(10).model
    assert multi.find_model() == multi.seed(2).model  # the lowest seed, not the first string ("seed-10")
    with pytest.raises(RunDirError, match="no finished model for seed 3"):
        multi.find_model(seed=3)
    assert [d.path.name for d in multi.seed_dirs()] == ["seed-2", "seed-10"]


def test_find_model_of_a_missing_run(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="does not exist"):
        RunDir(tmp_path / "ghost").find_model()


def test_atomic_files_get_the_permissions_a_plain_open_would_give(tmp_path: Path) -> None:
    import os
    import stat

    from transferkit.runs import atomic_write_text

    atomic_write_text(tmp_path / "a.txt", "x")
    with open(tmp_path / "b.txt", "w") as f:  # what the user's umask gives a file, not mkstemp's owner-only 0600
        f.write("x")
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == stat.S_IMODE((tmp_path / "b.txt").stat().st_mode)
    assert os.access(tmp_path / "a.txt", os.R_OK)

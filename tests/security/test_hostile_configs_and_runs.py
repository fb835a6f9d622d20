"""Hostile or broken configs, run folders and flags: every one a one-line error and exit code 2 (or, where the
documented behaviour is to accept the input, a run that works), never a traceback and never a hang."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from helpers import invoke, vectors_csv
from transferkit.config import MAX_CONFIG_NODES, RunConfig, load_yaml_mapping, parse_config
from transferkit.errors import ConfigError

_invoke = partial(invoke, show_crash=True)  # a crash (exit code not 0 or 2) shows its exception


def _fit(tmp_path: Path, *extra: Any, name: str = "r") -> tuple[int, str]:
    return _invoke("fit", "--source", vectors_csv(tmp_path / "d.csv"), "--backbone", "mlp", "--epochs", "1",
                   "--output-dir", tmp_path / "runs", "--name", name, "--no-progress",
                   "--set", "model.backbone_kwargs={hidden: 8, depth: 1}", *extra)


# -- 3. YAML that expands beyond any config ------------------------------------------------------------------------
def _alias_bomb(path: Path, levels: int = 9) -> Path:
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x","x"]']
    prev = "a"
    for name in "bcdefghijklmn"[: levels - 1]:
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 10) + "]")
        prev = name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path: Path) -> None:
    bomb = _alias_bomb(tmp_path / "bomb.yaml")  # 10⁹ values once expanded; a few hundred bytes on disk
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=f"more than {MAX_CONFIG_NODES:,} values"):
        RunConfig.from_yaml(bomb)
    assert time.perf_counter() - t0 < 10  # bounded work (about 10⁵ values), not 10⁹: far below this on any CPU
    code, text = _invoke("fit", "-c", bomb)
    assert code == 2 and "bomb.yaml" in text and "more than" in text


@pytest.mark.parametrize(("content", "match"), [
    ("a: " + "[" * 5000 + "]" * 5000 + "\n", "nests deeper|more than"),
    ("a: &a [*a]\n", "not valid YAML|nests deeper"),
    ("name: x\n# " + "y" * (2 << 20) + "\n", "at most 1 MiB"),
    (b"name: \xff\xfe\n", "not UTF-8"),
])
def test_oversized_or_malformed_yaml_is_a_config_error(tmp_path: Path, content: str | bytes, match: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ConfigError, match=match):
        load_yaml_mapping(path)


def test_a_deep_python_mapping_is_refused_too() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(200):
        node["x"] = {}
        node = node["x"]
    with pytest.raises(ConfigError, match="nests deeper"):
        parse_config({"model": {"backbone_kwargs": deep}})


# -- 4. non-finite settings, and training that diverges ------------------------------------------------------------
@pytest.mark.parametrize("override", ["train.weight_decay=1e400", "train.warmup_epochs=1e400", "adapt.weight=.inf",
                                      "adapt.target_weight=.inf", "train.lr=.nan", "adapt.weight=1e400"])
def test_non_finite_settings_are_refused(tmp_path: Path, override: str) -> None:
    code, text = _fit(tmp_path, "--set", override)
    assert code == 2 and override.split("=")[0] in text and "Traceback" not in text, text
    assert not (tmp_path / "runs" / "r").exists()


def test_training_that_diverges_stops_with_a_training_error_and_keeps_no_nan_checkpoint(tmp_path: Path) -> None:
    # finite but absurd: SGD with lr 10 and weight decay 10 multiplies every weight by -99 per step
    code, text = _fit(tmp_path, "--set", "train.optimizer=sgd", "--set", "train.lr=10", "--set",
                      "train.weight_decay=10", "--set", "train.momentum=0", "--set", "data.batch_size=4",
                      "--set", "data.val_fraction=0", "--epochs", "3")
    assert code == 2 and ("diverged" in text or "became" in text) and "Traceback" not in text, text
    assert "train.lr" in text and "train.weight_decay" in text
    assert not (tmp_path / "runs" / "r" / "model.safetensors").exists()
    for ckpt in (tmp_path / "runs" / "r").rglob("model.safetensors"):  # whatever checkpoint exists holds numbers
        from safetensors.torch import load_file

        assert all(bool(v.isfinite().all()) for v in load_file(str(ckpt)).values() if v.is_floating_point())


# -- 5. run folders and names --------------------------------------------------------------------------------------
def test_a_run_name_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "r").write_text("not a folder", encoding="utf-8")
    code, text = _fit(tmp_path)
    assert code == 2 and "is a file" in text and "Traceback" not in text, text


@pytest.mark.parametrize("name", ["x" * 300, "run\n", "a b", "../escape", "-flag"])
def test_run_names_that_cannot_be_folders(tmp_path: Path, name: str) -> None:
    code, text = _fit(tmp_path, name=name)
    assert code == 2 and "name" in text and "Traceback" not in text, text
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.parametrize("flags", [["--overwrite"], []], ids=["overwrite", "plain"])
def test_a_run_directory_that_is_a_symlink_is_not_followed(tmp_path: Path, flags: list[str]) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.txt").write_text("keep me", encoding="utf-8")
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "r").symlink_to(elsewhere, target_is_directory=True)
    code, text = _fit(tmp_path, *flags)
    assert code == 2 and "symbolic link" in text and "Traceback" not in text, text
    assert (elsewhere / "precious.txt").read_text(encoding="utf-8") == "keep me"
    assert sorted(p.name for p in elsewhere.iterdir()) == ["precious.txt"]


@pytest.fixture
def finished_run(tmp_path: Path) -> Path:
    code, text = _fit(tmp_path)
    assert code == 0, text
    return tmp_path / "runs" / "r"


@pytest.mark.parametrize(("content", "match"), [
    ("train: [1, 2\n", "not valid YAML"),
    ("- a\n- b\n", "must hold a mapping"),
    (b"name: \xff\n", "not UTF-8"),
])
def test_resume_with_a_damaged_config_yaml(tmp_path: Path, finished_run: Path, content: str | bytes,
                                           match: str) -> None:
    (finished_run / "config.yaml").write_bytes(content if isinstance(content, bytes) else content.encode())
    code, text = _fit(tmp_path, "--resume")
    assert code == 2 and "cannot resume" in text and match in text and "Traceback" not in text, text


def test_resume_and_report_skip_metrics_lines_that_are_not_utf8(tmp_path: Path, finished_run: Path) -> None:
    with (finished_run / "metrics.jsonl").open("ab") as fh:
        fh.write(b"\xff\xfe garbage \x00\n")
    (finished_run / "report.json").unlink()  # the seed is evaluated again on resume
    code, text = _fit(tmp_path, "--resume")
    assert code == 0 and "Traceback" not in text, text
    code, text = _invoke("report", finished_run)
    assert code == 0, text


def test_report_on_a_damaged_report_json(finished_run: Path) -> None:
    (finished_run / "report.json").write_bytes(b"{\xff")
    code, text = _invoke("report", finished_run)
    assert code == 2 and "report.json" in text and "damaged" in text


@pytest.mark.parametrize(("override", "field"), [
    ("seeds=[99999999999999999999]", "seeds"),
    ("model.backbone_kwargs={hidden: -5}", "hidden"),
    ("model.backbone_kwargs={hidden: 0}", "hidden"),
    ("model.backbone_kwargs={depth: 0}", "depth"),
    ("model.backbone_kwargs={dropout: 1.5}", "dropout"),
    ("model.backbone_kwargs={trust_remote_code: true}", "--trust-remote-code"),
    ("adapt.options={hidden: 1000000000000}", "adapt.options.hidden"),
    ("tracking.mlflow_uri=http://example.com:5000", "--online"),
])
def test_values_out_of_range_are_config_errors(tmp_path: Path, override: str, field: str) -> None:
    extra = ["--method", "dann", "--target", tmp_path / "d.csv"] if override.startswith("adapt") else []
    code, text = _fit(tmp_path, "--set", override, *extra)
    assert code == 2 and field in text and "Traceback" not in text, text
    assert not (tmp_path / "runs" / "r").exists()


def test_file_backbone_given_a_folder_says_so(tmp_path: Path) -> None:
    code, text = _invoke("extract", "--data", vectors_csv(tmp_path / "d.csv"), "--backbone", f"file:{tmp_path}",
                         "--out", tmp_path / "f.npz")
    assert code == 2 and "is a folder" in text and "does not exist" not in text


def test_ctrl_c_says_how_to_resume(tmp_path: Path) -> None:
    data = vectors_csv(tmp_path / "d.csv", n=2000)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "transferkit.cli", "fit", "--source", str(data), "--backbone", "mlp",
           "--epochs", "1000", "--output-dir", str(tmp_path / "runs"), "--name", "r", "--no-progress",
           "--set", "data.batch_size=4", "--set", "train.checkpoint_every_steps=5"]
    # a shell starts background jobs (`make test &`) with SIGINT ignored, and a child inherits that: the run is given
    # the default disposition, as a terminal's foreground job has, so the test does not depend on how it was started
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        metrics = tmp_path / "runs" / "r" / "checkpoints"
        deadline = time.monotonic() + 240
        while not metrics.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # never leave a 1,000-epoch run behind when the test fails
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, out
    assert "interrupted" in out and "--resume" in out and "Traceback" not in out, out


# -- hostile run folders: what evaluate, report and --resume read ---------------------------------------------------
@pytest.mark.parametrize("kind", ["devzero", "fifo"])
def test_run_files_that_are_not_regular_files(tmp_path: Path, finished_run: Path, kind: str) -> None:
    for name in ("report.json", "metrics.jsonl"):
        target = finished_run / name
        target.unlink()
        if kind == "devzero":
            target.symlink_to("/dev/zero")
        else:
            os.mkfifo(target)
    code, text = _invoke("report", finished_run)
    assert code == 2 and "not a regular file" in text, text
    code, text = _fit(tmp_path, "--resume")
    assert code == 2 and "not a regular file" in text, text


@pytest.mark.parametrize("content", ['{"evaluations": "x", "seeds": "y"}', '{"per_seed": [1, 2]}', "[1, 2]"])
def test_report_json_of_the_wrong_shape(finished_run: Path, content: str) -> None:
    (finished_run / "report.json").write_text(content, encoding="utf-8")
    code, text = _invoke("report", finished_run)
    assert code == 2 and "report.json" in text and "Traceback" not in text, text


def test_metrics_records_of_the_wrong_shape_are_skipped(finished_run: Path) -> None:
    with (finished_run / "metrics.jsonl").open("a", encoding="utf-8") as fh:
        fh.write('{"epoch": "x", "phase": "train"}\n{"epoch": 0, "train_loss": {"nested": 1}}\n[1, 2]\n')
    code, text = _invoke("report", finished_run)
    assert code == 0, text


@pytest.mark.parametrize(("meta", "state"), [
    ("[1]", None),
    ('{"global_step": [1], "epoch": 0}', None),
    ('{"global_step": 1e400, "epoch": 0}', None),
    (None, [1, 2]),
    (None, {"epoch": -5}),
    (None, {"rng": "broken"}),
    (None, {"history_json": "{not json"}),
])
def test_damaged_checkpoints_on_resume(tmp_path: Path, meta: str | None, state: Any) -> None:
    import torch

    code, text = _fit(tmp_path, "--epochs", "2", "--set", "train.keep_finished_checkpoints=true")
    assert code == 0, text
    run = tmp_path / "runs" / "r"
    (run / "report.json").unlink()
    (run / "model.safetensors").unlink()
    newest = sorted((run / "checkpoints").rglob("epoch-*"))[-1]  # what a resume reads (not the copy in best/)
    if meta is not None:
        (newest / "meta.json").write_text(meta, encoding="utf-8")
    if state is not None:
        if isinstance(state, dict):
            full = torch.load(newest / "state.pt", weights_only=True)
            full.update(state)
            state = full
        torch.save(state, newest / "state.pt")
    code, text = _fit(tmp_path, "--resume", "--epochs", "2")
    assert code in (0, 2) and "Traceback" not in text, text
    if meta is not None:  # a damaged meta.json makes that checkpoint incomplete: the resume starts from another
        assert code == 0, text
    else:  # a damaged state is named, and the way out given
        assert code == 2 and "damaged" in text and "delete" in text, text


# -- configs whose values are large rather than many ------------------------------------------------------------
def test_a_config_of_long_aliased_strings_is_refused(tmp_path: Path) -> None:
    big = "x" * 600_000
    lines = [f'finetune:\n  lora_targets: [&a "{big}", ' + ", ".join(["*a"] * 50) + "]"]
    path = tmp_path / "c.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, text = _invoke("fit", "-c", path)
    assert code == 2 and ("more than" in text or "at most 1 MiB" in text), text[:500]
    assert len(text) < 5000


@pytest.mark.parametrize("override", ["train.threads=100000000", "model.bottleneck_dim=10000000",
                                      "seeds=[" + ",".join(["1"] * 2000) + "]"])
def test_sizes_a_config_may_not_ask_for(tmp_path: Path, override: str) -> None:
    code, text = _fit(tmp_path, "--set", override)
    assert code == 2 and "Traceback" not in text and len(text) < 5000, text[:500]

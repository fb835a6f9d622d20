"""``transferkit fit`` on a tiny generated WAV folder: from scratch (logmel-cnn) and on the frozen speech embedding."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from helpers import invoke


@pytest.fixture
def wavs(tmp_path: Path) -> Path:
    """Two tones (low/high) by two "microphones": a at 8 kHz and full level, b at 16 kHz, quieter and sharper."""
    root = tmp_path / "wavs"
    root.mkdir()
    rng = np.random.default_rng(0)
    for label, freq in (("low", 300.0), ("high", 1500.0)):
        for i in range(8):
            for domain, rate, amp, shift in (("a", 8000, 0.5, 1.0), ("b", 16000, 0.1, 1.1)):
                seconds = rng.uniform(0.3, 0.6)
                t = np.arange(int(rate * seconds)) / rate
                x = amp * np.sin(2 * np.pi * freq * shift * (1 + 0.02 * i) * t) + rng.normal(0, 0.01, t.size)
                sf.write(root / f"{label}_{domain}_{i}.wav", x.astype(np.float32), rate, subtype="PCM_16")
    return root


def _report(run: Path) -> dict:
    return json.loads((run / "report.json").read_text())


def test_fit_logmel_cnn_from_scratch_on_a_wav_folder(tmp_path: Path, wavs: Path) -> None:
    code, out = invoke(
        "fit", "--source", f"{wavs}?domain=a", "--target", f"{wavs}?domain=b", "--backbone", "logmel-cnn",
        "--epochs", "6", "--lr", "0.01", "--batch-size", "8", "--name", "scratch", "--output-dir", tmp_path / "runs",
        "--set", "model.backbone_kwargs={sample_rate: 8000, seconds: 0.5, n_mels: 20, channels: [4, 8]}",
        "--set", "data.val_fraction=0.25", "--set", "train.threads=1", "--no-progress",
    )
    assert code == 0, out
    run = tmp_path / "runs" / "scratch"
    report = _report(run)
    assert report["backbone"] == "logmel-cnn" and report["source"].endswith("?domain=a")
    assert report["classes"] == ["high", "low"]
    # low against high tones is easy: the CNN, from random weights, learns it far above chance (0.5) on both
    # microphones (12 of 16 items by chance: p < 0.04; seeds 0-3 score 13-16 of 16)
    scores = report["evaluations"]
    assert scores["source"]["accuracy"] >= 0.75 and scores["target"]["accuracy"] >= 0.75, scores
    assert report["fit"]["best_val_acc"] > 0.5  # the checkpoint was chosen on a validation split it gets right
    assert (run / "model.safetensors").is_file()
    # the saved model reloads and predicts on the folder with the same preprocessing
    code, out = invoke("evaluate", run, "--data", f"{wavs}?domain=b", "--split", "test")
    assert code == 0, out


@pytest.mark.skipif(importlib.util.find_spec("openwakeword") is None,
                    reason="pip package openwakeword==0.4.0 not installed (it ships the speech-embedding files)")
def test_fit_speech_embedding_linear_probe_bottleneck_and_dann(tmp_path: Path, wavs: Path) -> None:
    code, out = invoke(
        "fit", "--source", f"{wavs}?exclude=b", "--target", f"{wavs}?domain=b", "--backbone", "onnx:speech-embedding",
        "--strategy", "linear-probe", "--method", "dann", "--epochs", "4", "--lr", "0.01", "--batch-size", "8",
        "--name", "embed", "--output-dir", tmp_path / "runs", "--set", "model.bottleneck_dim=16",
        "--set", "model.backbone_kwargs.seconds=1.0", "--set", "data.val_fraction=0.25",
        "--set", "adapt.guard=false", "--set", "train.threads=1", "--no-progress",
    )
    assert code == 0, out
    report = _report(tmp_path / "runs" / "embed")
    assert report["method"] == "dann" and report["strategy"] == "linear-probe"
    assert report["evaluations"]["target"]["accuracy"] >= 0.75  # two tones are easy in the embedding space


def test_fit_refuses_a_truncated_recording_before_any_run_directory(tmp_path: Path, wavs: Path) -> None:
    good = (wavs / "low_a_0.wav").read_bytes()
    (wavs / "low_a_7.wav").write_bytes(good[: len(good) // 3])
    code, out = invoke("fit", "--source", wavs, "--backbone", "logmel-cnn", "--epochs", "1", "--name", "bad",
                       "--output-dir", tmp_path / "runs", "--no-progress")
    assert code == 2
    assert "low_a_7.wav" in out and "truncated" in out
    assert not (tmp_path / "runs" / "bad").exists()


def test_fit_refuses_a_pattern_without_label_group(tmp_path: Path, wavs: Path) -> None:
    code, out = invoke("fit", "--source", rf"{wavs}?pattern=(?P<name>\w+)\.wav", "--backbone", "logmel-cnn",
                       "--epochs", "1", "--name", "bad", "--output-dir", tmp_path / "runs", "--no-progress")
    assert code == 2 and "no named group 'label'" in out

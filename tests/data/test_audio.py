"""Audio data: decoding, clear errors for bad files, folders labelled by file name, folder or CSV, and FSDD."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from transferkit.data import load_data
from transferkit.data.audio import (
    AudioTransform,
    Waveform,
    fit_length,
    is_audio_spec,
    load_audio_folder,
    read_audio,
    resample,
    verify_audio,
)
from transferkit.data.catalog import load_dataset
from transferkit.errors import DataError

TONES = {"high": 1200.0, "low": 300.0}


def write_tone(path: Path, freq: float, rate: int = 8000, seconds: float = 0.25, amp: float = 0.5,
               channels: int = 1) -> Path:
    t = np.arange(int(rate * seconds)) / rate
    x = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    if channels > 1:
        x = np.stack([x] * channels, axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x, rate, subtype="PCM_16")
    return path


@pytest.fixture
def tones(tmp_path: Path) -> Path:
    """``{label}_{domain}_{index}.wav``: two tones, domain a at 8 kHz, domain b at 16 kHz and quieter."""
    root = tmp_path / "tones"
    for label, freq in TONES.items():
        for i in range(3):
            write_tone(root / f"{label}_a_{i}.wav", freq, rate=8000)
            write_tone(root / f"{label}_b_{i}.wav", freq * 1.05, rate=16000, amp=0.1)
    return root


# -- decoding ------------------------------------------------------------------------------------
def test_read_audio_gives_mono_float32_at_the_file_rate(tmp_path: Path) -> None:
    wav = read_audio(write_tone(tmp_path / "s.wav", 440.0, rate=16000, seconds=0.5, channels=2))
    assert isinstance(wav, Waveform)
    assert wav.sample_rate == 16000 and wav.samples.shape == (8000,) and wav.samples.dtype == np.float32
    assert wav.seconds == pytest.approx(0.5)
    assert 0.45 < float(np.abs(wav.samples).max()) <= 0.5


@pytest.mark.parametrize("case", ["zero-bytes", "header-only", "truncated", "not-audio", "missing"])
def test_unusable_files_raise_a_data_error_naming_the_file(tmp_path: Path, case: str) -> None:
    good = write_tone(tmp_path / "good.wav", 440.0, seconds=0.5).read_bytes()
    bad = tmp_path / f"{case}.wav"
    if case == "zero-bytes":
        bad.write_bytes(b"")
    elif case == "header-only":
        sf.write(bad, np.zeros(0, np.float32), 8000)
    elif case == "truncated":
        bad.write_bytes(good[: len(good) // 2])
    elif case == "not-audio":
        bad.write_bytes(b"this is not a recording" * 10)
    with pytest.raises(DataError, match=f"{case}.wav") as exc:
        read_audio(bad)
    expected = {"zero-bytes": "empty", "header-only": "no samples", "truncated": "truncated",
                "not-audio": "cannot read", "missing": "does not exist"}[case]
    assert expected in str(exc.value)


def test_verify_lists_every_bad_file_in_one_error(tmp_path: Path) -> None:
    ok = write_tone(tmp_path / "ok.wav", 440.0)
    (tmp_path / "empty.wav").write_bytes(b"")
    trunc = tmp_path / "trunc.wav"
    trunc.write_bytes(ok.read_bytes()[:100])
    with pytest.raises(DataError, match="2 of 3 audio files") as exc:
        verify_audio([ok, tmp_path / "empty.wav", trunc])
    assert "empty.wav" in str(exc.value) and "trunc.wav" in str(exc.value)


# -- preprocessing --------------------------------------------------------------------------------
def test_resample_and_fixed_length() -> None:
    x = np.sin(np.arange(8000) / 8000 * 2 * np.pi * 100).astype(np.float32)
    y = resample(x, 8000, 16000)
    assert y.shape == (16000,) and y.dtype == np.float32
    assert np.allclose(y[::2][100:-100], x[100:-100], atol=0.02)  # the same tone, twice the samples
    assert fit_length(np.ones(3, np.float32), 7).tolist() == [0, 0, 1, 1, 1, 0, 0]
    assert fit_length(np.arange(10.0), 4).tolist() == [3, 4, 5, 6]


def test_audio_transform_resamples_centres_and_normalises() -> None:
    t = AudioTransform(16000, 16000, normalize="peak")
    x = t(Waveform(np.full(4000, 0.05, np.float32), 8000))  # 0.5 s at 8 kHz -> 8,000 samples in a 16,000 window
    assert x.shape == (16000,) and x.dtype == torch.float32
    assert float(x[:3000].abs().max()) == 0.0 and float(x[-3000:].abs().max()) == 0.0
    assert float(x.abs().max()) == pytest.approx(0.9, rel=0.05)
    assert "normalize='peak'" in repr(t) and "16000" in repr(t)  # part of the feature-cache key
    with pytest.raises(DataError, match="normalize"):
        AudioTransform(16000, 100, normalize="loud")
    with pytest.raises(DataError, match="Waveform"):
        t("not a waveform")


# -- folders --------------------------------------------------------------------------------------
def test_folder_with_default_pattern_reads_labels_and_domains(tones: Path) -> None:
    ds = load_audio_folder(tones)
    assert ds.kind == "audio" and ds.classes == ["high", "low"] and len(ds) == 12
    assert ds.domain == "tones"
    assert all(isinstance(p, str) and p.endswith(".wav") for p in ds.inputs)
    assert sorted(set(ds.meta["item_domains"])) == ["a", "b"]
    for path, y in zip(ds.inputs, ds.labels, strict=True):
        assert Path(path).name.startswith(ds.classes[y])
    assert isinstance(ds.decode(0), Waveform)


def test_domains_are_selected_and_share_class_indices(tones: Path) -> None:
    a = load_audio_folder(tones, domains=["a"])
    not_a = load_audio_folder(tones, exclude_domains=["a"])
    assert a.domain == "tones/a" and not_a.domain == "tones/not-a"
    assert set(a.meta["item_domains"]) == {"a"} and set(not_a.meta["item_domains"]) == {"b"}
    assert a.classes == not_a.classes
    with pytest.raises(DataError, match=r"unknown domain.*zzz.*a, b"):
        load_audio_folder(tones, domains=["zzz"])


def test_pattern_without_label_group_is_refused(tones: Path) -> None:
    with pytest.raises(DataError, match="no named group 'label'"):
        load_audio_folder(tones, pattern=r"(?P<name>\w+)\.wav")
    with pytest.raises(DataError, match="not a valid regular expression"):
        load_audio_folder(tones, pattern=r"(?P<label>[a-z+\.wav")


def test_files_that_do_not_match_the_pattern_are_listed(tones: Path) -> None:
    write_tone(tones / "stray.wav", 500.0)
    with pytest.raises(DataError, match=r"1 of 13 audio files .* do not match.*stray\.wav"):
        load_audio_folder(tones)


def test_custom_pattern_with_split_group(tmp_path: Path) -> None:
    for i in range(4):
        write_tone(tmp_path / f"{'test' if i == 0 else 'train'}-mic1-cat{i}.wav", 300.0)
        write_tone(tmp_path / f"{'test' if i == 0 else 'train'}-mic1-dog{i}.wav", 900.0)
    pattern = r"(?P<split>train|test)-(?P<domain>mic\d)-(?P<label>[a-z]+)(?P<index>\d+)\.wav"
    train = load_audio_folder(tmp_path, "train", pattern=pattern)
    test = load_audio_folder(tmp_path, "test", pattern=pattern)
    assert (len(train), len(test)) == (6, 2) and train.classes == test.classes == ["cat", "dog"]
    assert sorted(train.meta["item_indices"].tolist()) == [1, 1, 2, 2, 3, 3]
    with pytest.raises(DataError, match=r"no split 'val'.*test, train"):
        load_audio_folder(tmp_path, "val", pattern=pattern)


def test_class_folders_and_split_folders(tmp_path: Path) -> None:
    for split in ("train", "test"):
        for label, freq in TONES.items():
            write_tone(tmp_path / "d" / split / label / f"{split}1.wav", freq)
            write_tone(tmp_path / "d" / split / label / f"{split}2.wav", freq)
    train, test = load_audio_folder(tmp_path / "d", "train"), load_audio_folder(tmp_path / "d", "test")
    assert len(train) == len(test) == 4 and train.classes == ["high", "low"]
    assert all("/train/" in p for p in train.inputs)
    assert len(load_audio_folder(tmp_path / "d", "all")) == 8
    with pytest.raises(DataError, match="no split 'val'"):
        load_audio_folder(tmp_path / "d", "val")


def test_labels_from_a_csv(tones: Path) -> None:
    rows = ["path,label,domain,split"]
    for i, f in enumerate(sorted(tones.glob("*.wav"))):
        rows.append(f"{f.name},{'up' if 'high' in f.name else 'down'},{f.name.split('_')[1]},"
                    f"{'test' if i % 3 == 0 else 'train'}")
    (tones / "labels.csv").write_text("\n".join(rows) + "\n")
    ds = load_audio_folder(tones, "train", labels_csv="labels.csv", domains=["b"])
    assert ds.classes == ["down", "up"] and len(ds) == 4 and set(ds.meta["item_domains"]) == {"b"}
    (tones / "bad.csv").write_text("file,label\nx.wav,up\n")
    with pytest.raises(DataError, match=r"needs the columns path,label.*missing path"):
        load_audio_folder(tones, labels_csv="bad.csv")
    (tones / "gone.csv").write_text("path,label\nnot_there.wav,up\n")
    with pytest.raises(DataError, match=r"not_there.wav: missing"):
        load_audio_folder(tones, labels_csv="gone.csv")


def test_no_audio_files_and_missing_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no audio here")
    with pytest.raises(DataError, match="no audio files"):
        load_audio_folder(tmp_path / "empty")
    with pytest.raises(DataError, match="does not exist"):
        load_audio_folder(tmp_path / "nowhere")


def test_a_corrupt_file_fails_the_load_not_the_training(tones: Path) -> None:
    (tones / "low_a_9.wav").write_bytes((tones / "low_a_0.wav").read_bytes()[:60])
    with pytest.raises(DataError, match=r"low_a_9\.wav: truncated"):
        load_audio_folder(tones)


# -- load_data: paths with options -------------------------------------------------------------------
def test_load_data_reads_audio_folders_and_options(tones: Path) -> None:
    assert is_audio_spec(str(tones)) and not is_audio_spec(str(tones / "nowhere"))
    ds = load_data(f"{tones}?exclude=b")
    assert ds.kind == "audio" and ds.domain == "tones/not-b" and len(ds) == 6
    pattern = r"(?P<label>[a-z]+)_(?P<domain>[ab])_\d+\.wav"
    assert len(load_data(f"{tones}?pattern={pattern}&domain=a")) == 6
    with pytest.raises(DataError, match="option 'speaker=a' is not one of"):
        load_data(f"{tones}?speaker=a")


def test_load_data_reads_a_csv_of_audio_files(tones: Path) -> None:
    rows = ["path,label"] + [f"{f.name},{f.name.split('_')[0]}" for f in sorted(tones.glob("*_a_*.wav"))]
    (tones / "list.csv").write_text("\n".join(rows) + "\n")
    ds = load_data(str(tones / "list.csv"))
    assert ds.kind == "audio" and len(ds) == 6 and ds.classes == ["high", "low"]


def test_precomputed_audio_stacks_fixed_length_inputs(tones: Path) -> None:
    ds = load_audio_folder(tones).with_transform(AudioTransform(8000, 2000)).precomputed()
    assert ds.cache is not None and tuple(ds.cache.shape) == (12, 2000)


# -- FSDD benchmark ---------------------------------------------------------------------------------------
def test_fsdd_names_splits_and_speakers(data_root: Path) -> None:
    train = load_dataset("fsdd-not-george", "train", root=data_root)
    test = load_dataset("fsdd-george", "test", root=data_root)
    assert train.kind == test.kind == "audio" and train.classes == test.classes == [str(d) for d in range(10)]
    assert (len(train), len(test)) == (5 * 10 * 45, 10 * 5)
    assert "george" not in set(train.meta["item_domains"]) and set(test.meta["item_domains"]) == {"george"}
    assert set(train.meta["item_indices"].tolist()) == set(range(5, 50))
    assert set(test.meta["item_indices"].tolist()) == set(range(5))
    val, fit = (load_dataset("fsdd-george", s, root=data_root) for s in ("val", "fit"))
    assert len(val) + len(fit) == len(load_dataset("fsdd-george", "train", root=data_root))
    wav = test.decode(0)
    assert wav.sample_rate == 8000 and Path(test.inputs[0]).name == "0_george_0.wav"
    assert np.bincount(test.labels).tolist() == [5] * 10
    with pytest.raises(DataError, match="has splits train, test"):
        load_dataset("fsdd-george", "dev", root=data_root)


def test_fsdd_without_a_data_root_says_how_to_get_one(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("TRANSFERKIT_DATA", raising=False)
    with pytest.raises(DataError, match="TRANSFERKIT_DATA"):
        load_dataset("fsdd-george")
    with pytest.raises(DataError, match=r"fsdd/recordings.*missing"):
        load_dataset("fsdd-george", root=tmp_path)


def test_fsdd_checksum_catches_a_changed_recording(tmp_path: Path, data_root: Path) -> None:
    folder = tmp_path / "fsdd" / "recordings"
    folder.mkdir(parents=True)
    src = data_root / "fsdd" / "recordings"
    for f in src.iterdir():
        os.symlink(f, folder / f.name)
    assert len(load_dataset("fsdd-theo", "test", root=tmp_path)) == 50  # the known checksum, no SHA256SUMS here
    (folder / "3_theo_7.wav").unlink()
    (folder / "3_theo_7.wav").write_bytes((src / "3_theo_8.wav").read_bytes())
    with pytest.raises(DataError, match="checksum mismatch"):
        load_dataset("fsdd-theo", "test", root=tmp_path)

"""Audio backbones on tiny inputs: logmel-cnn, onnx: (the real speech-embedding files when installed), hf: audio."""

from __future__ import annotations

import copy
import importlib.util
import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from transferkit.data.audio import Waveform, load_audio_folder
from transferkit.errors import ModelError
from transferkit.finetune import apply_strategy
from transferkit.models.audio import (
    MEMO,
    build_hf_audio_backbone,
    pool_frames,
    speech_embedding_files,
)
from transferkit.models.backbones import (
    check_input_kind,
    create_backbone,
    list_backbones,
    load_backbone_file,
    save_backbone,
)
from transferkit.models.heads import TransferModel

HAS_OPENWAKEWORD = importlib.util.find_spec("openwakeword") is not None
needs_openwakeword = pytest.mark.skipif(not HAS_OPENWAKEWORD, reason="pip package openwakeword==0.4.0 not installed "
                                        "(it ships the speech-embedding ONNX files)")


def tone(freq: float, rate: int = 8000, seconds: float = 0.4, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _eval_equal(a: torch.nn.Module, b: torch.nn.Module, x: torch.Tensor) -> None:
    a.eval()
    b.eval()
    with torch.no_grad():
        assert torch.allclose(a(x), b(x), atol=1e-5)


def test_audio_backbones_are_listed() -> None:
    names = list_backbones()
    assert "logmel-cnn" in names and "onnx:NAME" in names


# -- logmel-cnn -------------------------------------------------------------------------------------
@pytest.mark.parametrize("conv", ["1d", "2d"])
def test_logmel_cnn_shapes_stages_and_transform(conv: str) -> None:
    bb = create_backbone("logmel-cnn", sample_rate=8000, seconds=0.5, n_mels=32, channels=[8, 16, 24], conv=conv)
    assert bb.input_kind == "audio" and bb.out_features == 24 and len(bb.stages()) == 3
    x = bb.transform(Waveform(tone(440.0, rate=16000), 16000))  # resampled to 8 kHz, padded to 0.5 s
    assert x.shape == (4000,)
    bb.eval()
    assert bb(torch.stack([x, x])).shape == (2, 24)
    assert bb.kwargs["n_fft"] == 256 and bb.kwargs["hop_length"] == 80  # 25 ms -> 256, 10 ms at 8 kHz
    frontend = bb.body.frontend(x[None])
    assert frontend.shape == (1, 1, 32, 51) and torch.isfinite(frontend).all()
    assert float(frontend.max() - frontend.min()) <= 60.0 + 1e-3  # top_db clips the floor


def test_logmel_cnn_partial_freeze_and_training_step() -> None:
    from transferkit.config import FinetuneConfig

    model = TransferModel(create_backbone("logmel-cnn", sample_rate=8000, seconds=0.25, channels=[4, 8]), ["a", "b"])
    apply_strategy(model, FinetuneConfig(strategy="partial", freeze_stages=1))
    frozen, trained = model.backbone.stages()
    assert not any(p.requires_grad for p in frozen) and all(p.requires_grad for p in trained)
    x = torch.randn(4, 2000) * 0.1
    _, logits = model(x)
    logits.sum().backward()
    assert all(p.grad is None for p in frozen) and all(p.grad is not None for p in trained)


def test_logmel_cnn_file_reload_reproduces_outputs(tmp_path: Path) -> None:
    bb = create_backbone("logmel-cnn", sample_rate=8000, seconds=0.25, n_mels=20, channels=[4, 8], top_db=40.0)
    bb.train()
    with torch.no_grad():  # move the BatchNorm statistics away from their initial values
        bb(torch.randn(8, 2000))
    path = save_backbone(bb, tmp_path / "bb.safetensors")
    again = load_backbone_file(path)
    assert again.kwargs == bb.kwargs and repr(again.transform) == repr(bb.transform)
    _eval_equal(bb, again, torch.randn(3, 2000) * 0.2)
    via_spec = create_backbone(f"file:{path}")
    _eval_equal(bb, via_spec, torch.randn(2, 2000) * 0.2)


@pytest.mark.parametrize("kwargs, match", [
    ({"sample_rate": 8000.5}, "sample_rate"),
    ({"seconds": 0}, "seconds"),
    ({"channels": []}, "channels"),
    ({"n_mels": 500, "sample_rate": 8000}, "n_mels"),
    ({"normalize": "loud"}, "normalize"),
    ({"fmax": 9000, "sample_rate": 8000}, "fmax"),
    ({"conv": "3d"}, "conv"),
    ({"top_db": -5}, "top_db"),
    ({"colour": "red"}, "has no option .colour."),
])
def test_logmel_cnn_bad_options_are_model_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ModelError, match=match):
        create_backbone("logmel-cnn", **kwargs)


def test_an_audio_backbone_refuses_images_and_an_image_backbone_refuses_audio(tmp_path: Path) -> None:
    for i in range(2):
        sf.write(tmp_path / f"a_x_{i}.wav", tone(300.0), 8000)
        sf.write(tmp_path / f"b_x_{i}.wav", tone(900.0), 8000)
    audio = load_audio_folder(tmp_path)
    with pytest.raises(ModelError, match=r"reads image inputs.*audio data"):
        check_input_kind(create_backbone("lenet"), audio)
    from transferkit.data import load_data

    with pytest.raises(ModelError, match=r"reads audio inputs.*image data"):
        check_input_kind(create_backbone("logmel-cnn"), load_data("digits-uci", "test"))
    check_input_kind(create_backbone("logmel-cnn"), audio)


def test_pool_frames() -> None:
    x = torch.arange(12.0).reshape(1, 3, 4)
    assert pool_frames(x, "mean").shape == (1, 4) and pool_frames(x, "mean+std").shape == (1, 8)
    assert pool_frames(x, "max").tolist() == [[8.0, 9.0, 10.0, 11.0]] and pool_frames(x, "flatten").shape == (1, 12)
    with pytest.raises(ModelError, match="pooling"):
        pool_frames(x, "median")


# -- onnx ---------------------------------------------------------------------------------------------
@needs_openwakeword
@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")
def test_speech_embedding_matches_openwakeword() -> None:
    """The same numbers openwakeword's own AudioFeatures computes for a 16-bit clip (its reference code path)."""
    pytest.importorskip("openwakeword.utils", reason="openwakeword's own code cannot be imported here")
    from openwakeword.utils import AudioFeatures

    bb = create_backbone("onnx:speech-embedding", pooling="flatten")
    rng = np.random.default_rng(0)
    pcm = (np.concatenate([tone(300.0, 16000, 0.7), tone(700.0, 16000, 0.8)]) + rng.normal(0, 0.01, 24000))
    pcm16 = np.clip(np.round(pcm * 32768), -32768, 32767).astype(np.int16)
    reference = AudioFeatures(ncpu=1)._get_embeddings(pcm16)  # (windows, 96)
    ours = bb.body.frames(torch.from_numpy(pcm16.astype(np.float32) / 32768)[None])[0].numpy()
    assert ours.shape == reference.shape == (9, 96)
    assert np.allclose(ours, reference, atol=1e-4)


@needs_openwakeword
def test_speech_embedding_backbone_is_frozen_and_survives_copies(tmp_path: Path) -> None:
    bb = create_backbone("onnx:speech-embedding", seconds=1.0)
    assert bb.input_kind == "audio" and bb.out_features == 96 and bb.stages() == []
    assert sum(p.numel() for p in bb.parameters()) == 0 and bb.kwargs["sample_rate"] == 16000
    x = bb.transform(Waveform(tone(500.0, rate=8000, seconds=0.6), 8000))
    assert x.shape == (16000,)
    feats = bb(torch.stack([x, x * 0.5]))
    assert feats.shape == (2, 96) and torch.isfinite(feats).all()
    for clone in (copy.deepcopy(bb), pickle.loads(pickle.dumps(bb))):
        MEMO.clear()  # compute again, not from the memo
        assert torch.allclose(clone(x[None]), feats[:1], atol=1e-5)
    assert create_backbone("onnx:speech-embedding", seconds=1.0, pooling="mean+std").out_features == 192
    model = TransferModel(bb, ["a", "b"], bottleneck_dim=8)
    reloaded = TransferModel.load(model.save(tmp_path / "m.safetensors"))
    assert reloaded.backbone.spec == "onnx:speech-embedding" and reloaded.backbone.kwargs == bb.kwargs
    model.eval()
    reloaded.eval()
    with torch.no_grad():
        assert torch.allclose(model(x[None])[1], reloaded(x[None])[1], atol=1e-5)


@needs_openwakeword
def test_speech_embedding_memo_returns_the_same_features() -> None:
    bb = create_backbone("onnx:speech-embedding", seconds=1.0)
    x = torch.from_numpy(np.stack([np.pad(tone(f, 16000, 0.5), (0, 8000)) for f in (300.0, 600.0, 900.0)]))
    MEMO.clear()
    first = bb(x)
    assert len(MEMO.items) == 3
    mixed = bb(torch.stack([x[2], torch.zeros(16000), x[0]]))  # two seen, one new
    assert len(MEMO.items) == 4
    assert torch.equal(mixed[0], first[2]) and torch.equal(mixed[2], first[0])


@needs_openwakeword
def test_generic_onnx_file_and_its_errors(tmp_path: Path) -> None:
    mel, _ = speech_embedding_files()  # (N, samples) -> (N, 1, frames, 32): a generic frame-wise extractor
    bb = create_backbone(f"onnx:{mel}", sample_rate=16000, seconds=0.5, scale=32768.0)
    assert bb.out_features == 32 and bb.kwargs["scale"] == 32768.0
    assert bb(torch.randn(2, 8000) * 0.1).shape == (2, 32)
    with pytest.raises(ModelError, match="sample_rate"):
        create_backbone(f"onnx:{mel}")
    with pytest.raises(ModelError, match="does not exist"):
        create_backbone(f"onnx:{tmp_path / 'none.onnx'}", sample_rate=16000)
    with pytest.raises(ModelError, match="carries its weights"):
        create_backbone(f"onnx:{mel}", sample_rate=16000, weights=str(mel))
    with pytest.raises(ModelError, match="changed since this model was saved"):
        create_backbone(f"onnx:{mel}", sample_rate=16000, sha256="0" * 64)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="onnxruntime cannot load"):
        create_backbone(f"onnx:{bad}", sample_rate=16000)


def test_speech_embedding_without_openwakeword_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "openwakeword" else real(name, *a))
    with pytest.raises(ModelError, match=r"pip install --no-deps openwakeword==0\.4\.0"):
        create_backbone("onnx:speech-embedding")


# -- hf: audio models -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_wav2vec2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer wav2vec 2.0 (hidden 32) and its feature extractor, saved offline."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    folder = tmp_path_factory.mktemp("tiny-wav2vec2")
    cfg = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16,
                         num_conv_pos_embedding_groups=4)
    torch.manual_seed(0)
    Wav2Vec2Model(cfg).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(sampling_rate=16000).save_pretrained(folder)
    return folder


def test_hf_audio_backbone_from_a_tiny_random_config(tiny_wav2vec2: Path) -> None:
    bb = build_hf_audio_backbone(str(tiny_wav2vec2), online=False, seconds=0.25)
    assert bb.input_kind == "audio" and bb.out_features == 32
    assert len(bb.stages()) == 3  # conv feature encoder + projection, then one stage per transformer layer
    x = bb.transform(Waveform(tone(440.0, rate=8000, seconds=0.1), 8000))
    assert x.shape == (4000,) and abs(float(x.mean())) < 1e-3  # the extractor's zero-mean normalisation
    bb.eval()
    with torch.no_grad():
        assert bb(torch.stack([x, x])).shape == (2, 32)
    assert build_hf_audio_backbone(str(tiny_wav2vec2), online=False, seconds=0.25,
                                   pooling="mean+std").out_features == 64
    with pytest.raises(ModelError, match="pooling"):
        build_hf_audio_backbone(str(tiny_wav2vec2), online=False, pooling="cls")


def test_hf_audio_backbone_through_the_hf_prefix_and_file_reload(tiny_wav2vec2: Path, tmp_path: Path) -> None:
    bb = create_backbone(f"hf:{tiny_wav2vec2}", seconds=0.25)
    assert bb.input_kind == "audio" and bb.spec == f"hf:{tiny_wav2vec2}"
    again = load_backbone_file(save_backbone(bb, tmp_path / "hf.safetensors"))
    assert again.kwargs == bb.kwargs
    _eval_equal(bb, again, torch.randn(2, 4000))


def test_hf_audio_backbone_offline_refuses_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="cannot load a transformers audio model"):
        build_hf_audio_backbone(str(tmp_path / "nothing"), online=False)

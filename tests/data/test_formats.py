"""``load_data`` asks the format records in order; a new format plugs in without touching ``load_data``."""

from __future__ import annotations

import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from transferkit.data import DomainDataset, load_data
from transferkit.data import formats as formats_module
from transferkit.data.formats import DataFormat, data_formats, format_for, register_format
from transferkit.errors import DataError


def _write_wav(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(8000)
        f.writeframes(np.zeros(800, np.int16).tobytes())


def test_each_kind_of_path_is_claimed_by_the_format_that_reads_it(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", x=np.zeros((4, 3)), y=[0, 1, 0, 1])
    (tmp_path / "feats.csv").write_text("f1,f2,label\n1,2,0\n3,4,1\n")
    (tmp_path / "texts.csv").write_text("text,label\ngood,pos\nbad,neg\n")
    (tmp_path / "texts.jsonl").write_text('{"text": "ok", "label": "pos"}\n')
    (tmp_path / "imgs" / "cat").mkdir(parents=True)
    _write_wav(tmp_path / "speech" / "0_alice_0.wav")
    expected = {"a.npz": "arrays", "feats.csv": "feature-file", "texts.csv": "text-table",
                "texts.jsonl": "text-table", "imgs": "image-folder", "speech": "audio",
                "missing_{split}.svmlight": "feature-file", "nowhere": None, "a.bin": None}
    claimed = {}
    for name in expected:
        record = format_for(str(tmp_path / name), "train")
        claimed[name] = record.name if record else None
    assert claimed == expected


def test_a_missing_split_file_is_named_and_an_unknown_suffix_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"the file of split 'test'"):
        load_data(str(tmp_path / "books_{split}.svmlight"), "test")
    (tmp_path / "a.bin").write_bytes(b"\0")
    with pytest.raises(DataError, match=r"unsupported data file type '\.bin'"):
        load_data(str(tmp_path / "a.bin"))
    with pytest.raises(DataError, match="neither a known dataset"):
        load_data(str(tmp_path / "nowhere"))


@pytest.fixture
def restore_formats() -> Iterator[None]:
    saved = list(formats_module._FORMATS)
    yield
    formats_module._FORMATS[:] = saved


def test_a_new_format_plugs_in_before_an_existing_one(tmp_path: Path, restore_formats: None) -> None:
    """A toy '.vec' format (one vector per line): a record and a loader, no change to load_data."""
    path = tmp_path / "toy.vec"
    path.write_text("1 2\n3 4\n5 6\n")

    def load(spec: str, split: str) -> DomainDataset:
        x = np.loadtxt(spec, dtype=np.float32, ndmin=2)
        return DomainDataset(x, np.zeros(len(x), np.int64), "toy", ["only"], "vector")

    register_format(DataFormat("toy-vec", lambda spec, split: spec.endswith(".vec"), load, "one vector per line"),
                    before="image-folder")
    names = [f.name for f in data_formats()]
    assert names.index("toy-vec") == names.index("image-folder") - 1
    ds = load_data(str(path))
    assert ds.kind == "vector" and ds.inputs.shape == (3, 2) and ds.domain == "toy"
    with pytest.raises(ValueError, match="registered already"):
        register_format(DataFormat("toy-vec", lambda spec, split: False, load, "again"))
    with pytest.raises(ValueError, match="no data format 'nope'"):
        register_format(DataFormat("other", lambda spec, split: False, load, "other"), before="nope")

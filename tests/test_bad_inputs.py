"""The bad-input matrix (issue 6, item 5): every malformed input a user can hand transferkit, one test each.

Rows are the kinds of input (images, audio, text tables, labels, feature files, whole sets, the run config and
YAML, checkpoints and models); each case asserts a transferkit error whose message names the offending file or
config field, or, where the documented behaviour is to accept the input (grey and RGBA images next to RGB ones,
a WAV at another sample rate, a training set of one item), that it really works. Inputs that go through
:func:`transferkit.experiment.fit` or ``transferkit fit`` also assert that no run directory was left behind.
Everything runs on tiny data made in ``tmp_path`` (``mlp`` / ``lenet`` backbones, one epoch).
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from PIL import Image
from safetensors.torch import save_file

from helpers import invoke, vectors_npz
from transferkit.config import RunConfig, parse_config, parse_override
from transferkit.data import check_label_sets, load_data
from transferkit.data.images import load_image_folder
from transferkit.errors import ConfigError, DataError, ModelError, RunDirError, TransferkitError
from transferkit.experiment import fit
from transferkit.models.backbones import create_backbone


# -- helpers -----------------------------------------------------------------------------------
def _config(tmp_path: Path, source: str | Path, target: str | Path | None = None, **sections: Any) -> RunConfig:
    """A one-epoch CPU run of a small MLP on ``source`` (and ``target``), written under ``tmp_path/runs``."""
    raw: dict[str, Any] = {
        "name": "bad", "output_dir": str(tmp_path / "runs"),
        "data": {"source": str(source), "val_fraction": 0},
        "model": {"backbone": "mlp", "backbone_kwargs": {"hidden": 8}},
        "train": {"epochs": 1, "device": "cpu"},
    }
    if target is not None:
        raw["data"]["target"] = str(target)
    for section, values in sections.items():
        raw[section] = {**raw[section], **values} if isinstance(raw.get(section), dict) else values
    return parse_config(raw)


def _no_run_left(cfg: RunConfig) -> None:
    out = Path(cfg.output_dir)
    assert not cfg.run_path.exists(), f"a half-written run was left in {cfg.run_path}"
    assert not out.exists() or not any(out.iterdir()), f"{out} is not empty: {sorted(out.iterdir())}"


def _fit_refuses(cfg: RunConfig, error: type[TransferkitError], pattern: str) -> str:
    """``fit`` raises ``error`` matching ``pattern`` and writes nothing; returns the message."""
    with pytest.raises(error, match=pattern) as exc:
        fit(cfg, progress=False)
    _no_run_left(cfg)
    return str(exc.value)


def _image(path: Path, mode: str = "RGB", size: tuple[int, int] = (12, 10), seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"L": (), "RGB": (3,), "RGBA": (4,)}[mode]
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], *channels), dtype=np.uint8)
    Image.fromarray(pixels, mode).save(path)
    return path


def _image_tree(root: Path, per_class: int = 3) -> Path:
    """``root/<class>/<i>.png`` for classes ants and bees: small RGB images."""
    for c, name in enumerate(("ants", "bees")):
        for i in range(per_class):
            _image(root / name / f"{i}.png", seed=10 * c + i)
    return root


def _bomb_png(path: Path, side: int = 100_000) -> Path:
    """A valid PNG header claiming ``side x side`` pixels over a few bytes of data (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def _tone(path: Path, rate: int = 8000, seconds: float = 0.25, freq: float = 440.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(rate * seconds)) / rate
    sf.write(path, (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate, subtype="PCM_16")
    return path


def _recordings(root: Path) -> Path:
    """``<label>_<index>.wav`` (the default file-name pattern): two tones, three recordings each, 8 kHz."""
    for label, freq in (("high", 1200.0), ("low", 300.0)):
        for i in range(3):
            _tone(root / f"{label}_{i}.wav", freq=freq)
    return root


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished one-epoch MLP run (model, report, checkpoints); tests copy it before changing anything."""
    root = tmp_path_factory.mktemp("trained")
    cfg = _config(root, vectors_npz(root / "toy.npz", n=16), train={"keep_finished_checkpoints": True})
    fit(cfg, progress=False)
    assert (cfg.run_path / "model.safetensors").is_file()
    return cfg.run_path


def _copy_run(run: Path, tmp_path: Path) -> tuple[Path, RunConfig]:
    """A copy of ``run`` in ``tmp_path/runs`` and its config, pointed at the copy."""
    copy = tmp_path / "runs" / run.name
    shutil.copytree(run, copy)
    cfg = RunConfig.from_yaml(copy / "config.yaml", {"output_dir": str(tmp_path / "runs")})
    (copy / "config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")  # the copy's own place: resumable as is
    return copy, cfg


# -- images ------------------------------------------------------------------------------------
def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _truncated_jpeg(folder: Path) -> str:
    _image(folder / "cut.jpg", size=(64, 48))
    _truncate(folder / "cut.jpg")
    return "cut.jpg"


def _truncated_png(folder: Path) -> str:
    _image(folder / "cut.png", size=(64, 48))
    _truncate(folder / "cut.png")
    return "cut.png"


def _zero_byte_image(folder: Path) -> str:
    (folder / "zero.jpg").write_bytes(b"")
    return "zero.jpg"


def _text_named_jpeg(folder: Path) -> str:
    (folder / "notes.jpg").write_text("not really a JPEG\n", encoding="utf-8")
    return "notes.jpg"


def _decompression_bomb(folder: Path) -> str:
    _bomb_png(folder / "bomb.png")
    return "bomb.png"


IMAGE_CASES: dict[str, tuple[Callable[[Path], str], str]] = {
    "truncated-jpeg": (_truncated_jpeg, "Truncated|truncated"),
    "truncated-png": (_truncated_png, "truncated"),
    "zero-byte-file": (_zero_byte_image, "cannot identify image"),
    "text-named-jpg": (_text_named_jpeg, "cannot identify image"),
    "decompression-bomb": (_decompression_bomb, "DecompressionBomb|decompression bomb"),
}


@pytest.mark.parametrize("case", list(IMAGE_CASES))
def test_unreadable_image_stops_fit_naming_the_file(tmp_path: Path, case: str) -> None:
    make, reason = IMAGE_CASES[case]
    tree = _image_tree(tmp_path / "tree")
    name = make(tree / "bees")
    cfg = _config(tmp_path, tree, model={"backbone": "lenet", "backbone_kwargs": {}})
    message = _fit_refuses(cfg, DataError, re.escape(name))
    assert "1 of 7 image files cannot be read" in message
    assert re.search(reason, message), message


def test_truncated_image_read_without_verification_fails_on_decode_naming_the_file(tmp_path: Path) -> None:
    tree = _image_tree(tmp_path / "tree")
    _truncated_png(tree / "ants")
    ds = load_image_folder(tree, verify=False)
    bad = next(i for i, p in enumerate(ds.inputs) if p.endswith("cut.png"))
    with pytest.raises(DataError, match=r"cannot read image .*cut\.png"):
        ds[bad]


def test_grey_and_rgba_images_beside_rgb_ones_are_converted_and_train(tmp_path: Path) -> None:
    root = tmp_path / "mixed"
    for i, mode in enumerate(("L", "RGBA", "RGB")):
        _image(root / "ants" / f"a{i}.png", mode, seed=i)
        _image(root / "bees" / f"b{i}.png", mode, seed=10 + i)
    ds = load_data(str(root))
    assert {ds.decode(i).mode for i in range(len(ds))} == {"RGB"}
    assert {tuple(ds[i]["x"].shape) for i in range(len(ds))} == {(3, 10, 12)}
    lenet = create_backbone("lenet")
    assert {tuple(lenet.transform(ds.decode(i)).shape) for i in range(len(ds))} == {(1, 28, 28)}
    cfg = _config(tmp_path, root, model={"backbone": "lenet", "backbone_kwargs": {}})
    report = fit(cfg, progress=False)
    assert report["classes"] == ["ants", "bees"]
    assert (cfg.run_path / "model.safetensors").is_file()


def test_empty_class_folder_stops_fit_naming_the_folder(tmp_path: Path) -> None:
    tree = _image_tree(tmp_path / "tree")
    (tree / "wasps").mkdir()
    cfg = _config(tmp_path, tree, model={"backbone": "lenet", "backbone_kwargs": {}})
    _fit_refuses(cfg, DataError, r"class folder .*wasps holds no images")


def test_class_folders_holding_no_images_stop_fit(tmp_path: Path) -> None:
    root = tmp_path / "scans"
    for name in ("ants", "bees"):
        (root / name).mkdir(parents=True)
        (root / name / "readme.txt").write_text("scans go here", encoding="utf-8")
    cfg = _config(tmp_path, root, model={"backbone": "lenet", "backbone_kwargs": {}})
    _fit_refuses(cfg, DataError, r"class folder .*scans/ants holds no images")


def test_folder_of_loose_images_without_class_folders_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "loose"
    for i in range(3):
        _image(root / f"{i}.png", seed=i)
    cfg = _config(tmp_path, root, model={"backbone": "lenet", "backbone_kwargs": {}})
    _fit_refuses(cfg, DataError, r"no class folders in .*loose")


# -- audio -------------------------------------------------------------------------------------
def _truncated_wav(path: Path) -> str:
    _tone(path)
    _truncate(path)
    return "truncated"


def _empty_wav(path: Path) -> str:
    path.write_bytes(b"")
    return "empty"


def _header_only_wav(path: Path) -> str:
    sf.write(path, np.zeros(0, np.float32), 8000)
    return "no samples"


def _not_a_wav(path: Path) -> str:
    path.write_text("not a recording: a text file named .wav\n" * 4, encoding="utf-8")
    return "Format not recognised|not a WAV|cannot"


AUDIO_CASES: dict[str, Callable[[Path], str]] = {
    "truncated-wav": _truncated_wav,
    "zero-byte-wav": _empty_wav,
    "header-only-wav": _header_only_wav,
    "text-named-wav": _not_a_wav,
}


@pytest.mark.parametrize("case", list(AUDIO_CASES))
def test_unusable_wav_stops_fit_naming_the_file(tmp_path: Path, case: str) -> None:
    root = _recordings(tmp_path / "speech")
    reason = AUDIO_CASES[case](root / "high_1.wav")
    cfg = _config(tmp_path, root, model={"backbone": "logmel-cnn", "backbone_kwargs": {}})
    message = _fit_refuses(cfg, DataError, r"high_1\.wav")
    assert "1 of 6 audio files cannot be used" in message
    assert re.search(reason, message), message


def test_wav_at_another_sample_rate_is_resampled_to_the_backbones_rate(tmp_path: Path) -> None:
    root = _recordings(tmp_path / "speech")
    _tone(root / "high_1.wav", rate=44100, seconds=0.25, freq=1200.0)  # a CD-rate file among 8 kHz ones
    ds = load_data(str(root))
    rates = {Path(ds.inputs[i]).name: ds.decode(i).sample_rate for i in range(len(ds))}
    assert rates["high_1.wav"] == 44100 and set(rates.values()) == {8000, 44100}  # decoded at the file's own rate
    backbone = create_backbone("logmel-cnn", sample_rate=16000, seconds=0.5, channels=[4, 8])
    shapes = {tuple(backbone.transform(ds.decode(i)).shape) for i in range(len(ds))}
    assert shapes == {(8000,)}  # resampled to 16 kHz and padded to 0.5 s: one length for every file
    quarter = backbone.transform(ds.decode(list(rates).index("high_1.wav")))
    assert int((quarter != 0).sum()) == pytest.approx(4000, abs=10)  # 0.25 s of signal at 16 kHz, not 44.1 kHz


def test_wav_with_nan_samples_fails_when_decoded_naming_the_file(tmp_path: Path) -> None:
    root = _recordings(tmp_path / "speech")
    sf.write(root / "low_2.wav", np.array([0.1, np.nan, -0.1] * 200, np.float32), 8000, subtype="FLOAT")
    ds = load_data(str(root))  # verification reads headers only (documented): the samples are checked on decode
    bad = next(i for i, p in enumerate(ds.inputs) if p.endswith("low_2.wav"))
    with pytest.raises(DataError, match=r"low_2\.wav holds NaN or infinite samples"):
        ds.decode(bad)


# -- text tables -------------------------------------------------------------------------------
GOOD_ROWS = [{"text": "a good book", "label": "pos"}, {"text": "an awful book", "label": "neg"}]


def _jsonl(*rows: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


TEXT_CASES: dict[str, tuple[str, bytes, str]] = {
    # id: (file name, content, what the message must say besides the file name)
    "non-utf8-jsonl": ("latin.jsonl", _jsonl(*GOOD_ROWS) + b'{"text": "caf\xe9 cr\xe8me", "label": "pos"}\n',
                       "not UTF-8"),
    "non-utf8-csv": ("latin.csv", b"text,label\ngood,pos\ncaf\xe9 cr\xe8me,neg\n", "UTF-8"),
    "empty-text-field": ("blank.jsonl", _jsonl(GOOD_ROWS[0], {"text": "   ", "label": "neg"}),
                         r"row 2: the 'text' field is empty"),
    "null-text-field": ("null.jsonl", _jsonl(GOOD_ROWS[0], {"text": None, "label": "neg"}),
                        r"row 2: the 'text' field is empty or not a string \(None\)"),
    "missing-text-column": ("body.jsonl", _jsonl({"body": "a good book", "label": "pos"}),
                            r"no text column 'text'; its columns: body, label"),
    "invalid-json-line": ("broken.jsonl", _jsonl(*GOOD_ROWS) + b'{"text": "cut off\n', r"line 3: not valid JSON"),
    "json-line-not-an-object": ("list.jsonl", _jsonl(GOOD_ROWS[0]) + b'["a list", "pos"]\n',
                                r"line 2: expected a JSON object"),
    "missing-label-in-one-row": ("unlabelled.jsonl", _jsonl(GOOD_ROWS[0], {"text": "no label here"}),
                                 r"label 'label' is empty in rows \[2\]"),
    "label-is-a-list": ("nested.jsonl", _jsonl(GOOD_ROWS[0], {"text": "two labels", "label": ["pos", "neg"]}),
                        r"label 'label' is a list or an object in rows \[2\]"),
    "csv-unquoted-comma": ("comma.csv", b"text,label\na good book,pos\nloved it, really,pos\n",
                           r"line 3: 3 cells but the header has 2 columns"),
    "csv-short-row": ("short.csv", b"text,label,rating\ngood,pos,5\nbad,neg\n",
                      r"line 3: 2 cells but the header has 3 columns"),
}


@pytest.mark.parametrize("case", list(TEXT_CASES))
def test_malformed_text_table_stops_fit_naming_the_file(tmp_path: Path, case: str) -> None:
    name, content, reason = TEXT_CASES[case]
    path = tmp_path / name
    path.write_bytes(content)
    cfg = _config(tmp_path, path, model={"backbone": "hf:unused", "backbone_kwargs": {}})
    message = _fit_refuses(cfg, DataError, re.escape(name))
    assert re.search(reason, message), message


# -- labels ------------------------------------------------------------------------------------
def test_label_outside_the_class_range_names_the_file(tmp_path: Path) -> None:
    path = vectors_npz(tmp_path / "range.npz", classes=("a", "b", "c"), y=np.array([0, 1, 2, 7] * 3))
    _fit_refuses(_config(tmp_path, path), DataError, r"range\.npz: label 7 is out of range: 'classes' names 3")


def test_negative_label_names_the_file(tmp_path: Path) -> None:
    path = vectors_npz(tmp_path / "negative.npz", y=np.array([0, 1, -1, 1] * 3))
    _fit_refuses(_config(tmp_path, path), DataError, r"negative\.npz: labels must be >= 0, found -1")


def test_fractional_labels_are_refused_naming_the_file(tmp_path: Path) -> None:
    path = vectors_npz(tmp_path / "regression.npz", y=np.linspace(0.0, 1.0, 12))
    _fit_refuses(_config(tmp_path, path), DataError, r"regression\.npz: labels must be integers or strings")


def test_target_classes_missing_from_the_source_are_named(tmp_path: Path) -> None:
    source = vectors_npz(tmp_path / "pets.npz", classes=("cat", "dog"))
    target = vectors_npz(tmp_path / "wild.npz", classes=("cat", "dog", "fox"))
    message = _fit_refuses(_config(tmp_path, source, target), DataError,
                           r"label sets of source 'pets' and target 'wild' do not match")
    assert "target classes missing from the source: ['fox']" in message
    with pytest.raises(DataError, match=r"\['fox'\]"):
        check_label_sets(load_data(str(source)), load_data(str(target)))


def test_source_with_a_single_class_is_refused_naming_the_source(tmp_path: Path) -> None:
    path = vectors_npz(tmp_path / "monoclass.npz", classes=("only",))
    _fit_refuses(_config(tmp_path, path), TransferkitError, r"monoclass")


# -- feature files -----------------------------------------------------------------------------
def _with(x: np.ndarray, row: int, col: int, value: float) -> np.ndarray:
    x = x.copy()
    x[row, col] = value
    return x


_X = np.random.default_rng(1).normal(size=(12, 4)).astype(np.float32)


def _parquet(path: Path, f1: list[float]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"f1": f1, "f2": [1.0] * len(f1), "label": ["a", "b"] * (len(f1) // 2)}), path)
    return path


def _npy_bytes(x: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, x)
    return buf.getvalue()


FEATURE_CASES: dict[str, tuple[str, Callable[[Path], None], str]] = {
    # id: (file name, writer, what the message must say besides the file name)
    "nan-in-npz": ("nan.npz", lambda p: vectors_npz(p, x=_with(_X, 3, 1, np.nan)), r"NaN or Inf in 1 rows .*\[3\]"),
    "inf-in-npz": ("inf.npz", lambda p: vectors_npz(p, x=_with(_X, 5, 0, -np.inf)), r"NaN or Inf in 1 rows"),
    "nan-in-csv": ("nan.csv", lambda p: p.write_text("f1,f2,label\n1,2,a\nnan,3,b\n"), r"NaN or Inf in .*'f1'"),
    "inf-in-csv": ("inf.csv", lambda p: p.write_text("f1,f2,label\n1,2,a\n4,inf,b\n"), r"NaN or Inf in .*'f2'"),
    "nan-in-parquet": ("nan.parquet", lambda p: _parquet(p, [1.0, float("nan")]), r"NaN or Inf in .*'f1'"),
    "inf-in-parquet": ("inf.parquet", lambda p: _parquet(p, [float("inf"), 2.0]), r"NaN or Inf in .*'f1'"),
    "nan-in-svmlight": ("nan.svmlight", lambda p: p.write_text("1 1:0.5 2:nan\n0 1:1\n"), r"NaN or Inf"),
    "one-dimensional-features": ("flat.npz", lambda p: vectors_npz(p, x=_X[:, 0]), r"feature vectors must be 2-D"),
    "zero-width-features": ("narrow.npz", lambda p: vectors_npz(p, x=np.zeros((12, 0), np.float32)),
                            r"its rows hold no features"),
    "complex-features": ("complex.npz", lambda p: vectors_npz(p, x=_X.astype(np.complex64)), r"must be real numbers"),
    "npz-with-no-rows": ("empty.npz", lambda p: vectors_npz(p, x=np.zeros((0, 4), np.float32), y=np.zeros(0, int)),
                         r"x holds no rows"),
    "zero-byte-npz": ("zero.npz", lambda p: p.write_bytes(b""), r"is empty \(0 bytes\)"),
    "zero-byte-csv": ("zero.csv", lambda p: p.write_bytes(b""), r"is empty \(0 bytes\)"),
    "csv-header-only": ("header.csv", lambda p: p.write_text("f1,f2,label\n"), r"has a header but no data rows"),
    "parquet-with-no-rows": ("rowless.parquet", lambda p: _parquet(p, []), r"has columns but no data rows"),
    "truncated-npz": ("cut.npz", lambda p: (vectors_npz(p), _truncate(p)), r"not a zip"),
    "npy-named-npz": ("array.npz", lambda p: p.write_bytes(_npy_bytes(_X)), r"not a zip archive"),
}


@pytest.mark.parametrize("case", list(FEATURE_CASES))
def test_bad_feature_file_stops_fit_naming_the_file(tmp_path: Path, case: str) -> None:
    name, write, reason = FEATURE_CASES[case]
    path = tmp_path / name
    write(path)
    message = _fit_refuses(_config(tmp_path, path), DataError, re.escape(name))
    assert re.search(reason, message), message


def test_source_and_target_feature_widths_differ(tmp_path: Path) -> None:
    source = vectors_npz(tmp_path / "wide.npz", width=5)
    target = vectors_npz(tmp_path / "narrow.npz", width=4)
    _fit_refuses(_config(tmp_path, source, target), DataError,
                 r"feature widths differ: source .*wide\.npz has 5 features, target .*narrow\.npz has 4")


# -- whole sets --------------------------------------------------------------------------------
def test_empty_target_split_is_refused(tmp_path: Path) -> None:
    source = vectors_npz(tmp_path / "source.npz")
    target = vectors_npz(tmp_path / "target.npz", x=None, y=None, x_train=_X, y_train=np.arange(12) % 2,
                      x_test=np.zeros((0, 4), np.float32), y_test=np.zeros(0, np.int64))
    _fit_refuses(_config(tmp_path, source, target), DataError, r"target\.npz: x_test holds no rows")


def test_empty_target_domain_of_a_shared_text_file_is_refused(tmp_path: Path) -> None:
    reviews = tmp_path / "reviews.jsonl"
    reviews.write_bytes(_jsonl(*({**r, "domain": "books"} for r in GOOD_ROWS)))
    cfg = _config(tmp_path, f"{reviews}?domain=books", f"{reviews}?domain=kitchen",
                  model={"backbone": "hf:unused", "backbone_kwargs": {}})
    _fit_refuses(cfg, DataError, r"reviews\.jsonl: no rows with domain == 'kitchen'; it holds: books")


def test_source_with_zero_items_in_its_split_is_refused(tmp_path: Path) -> None:
    table = tmp_path / "split.csv"
    table.write_text("f1,f2,split,label\n1,2,test,a\n3,4,test,b\n", encoding="utf-8")
    _fit_refuses(_config(tmp_path, table), DataError, r"split\.csv: no rows with split == 'train'")


def test_batch_of_one_with_an_adaptation_method_is_a_config_error(tmp_path: Path) -> None:
    path = vectors_npz(tmp_path / "toy.npz")
    cfg = _config(tmp_path, path, path, data={"batch_size": 1}, adapt={"method": "dann"})
    _fit_refuses(cfg, ConfigError, r"data\.batch_size must be >= 2 with an adaptation method")


def test_training_set_of_one_item_trains_without_batch_statistics(tmp_path: Path) -> None:
    """The MLP has no BatchNorm: one labelled item trains, is saved and scored, whatever the batch size."""
    path = tmp_path / "single.npz"
    np.savez(path, x=np.ones((1, 4), np.float32), y=np.array([1]), classes=np.array(["neg", "pos"]))
    cfg = _config(tmp_path, path, data={"batch_size": 64})
    report = fit(cfg, progress=False)
    assert report["per_seed"][0]["fit"]["epochs_run"] == 1
    assert report["summary"]["source"]["accuracy"]["values"][0] in (0.0, 1.0)
    assert (cfg.run_path / "model.safetensors").is_file() and (cfg.run_path / "report.json").is_file()


def test_training_set_of_one_item_with_a_bottleneck_is_refused_up_front(tmp_path: Path) -> None:
    path = tmp_path / "single.npz"
    np.savez(path, x=np.ones((1, 4), np.float32), y=np.array([0]), classes=np.array(["neg", "pos"]))
    cfg = _config(tmp_path, path, data={"batch_size": 2}, model={"bottleneck_dim": 4})
    _fit_refuses(cfg, DataError, r"single")


def test_target_of_one_item_with_an_adaptation_method_is_refused_up_front(tmp_path: Path) -> None:
    source = vectors_npz(tmp_path / "source.npz")
    target = tmp_path / "lonely.npz"
    np.savez(target, x=np.ones((1, 4), np.float32), y=np.array([0]), classes=np.array(["neg", "pos"]))
    cfg = _config(tmp_path, source, target, data={"batch_size": 4}, adapt={"method": "dan", "guard": False})
    _fit_refuses(cfg, DataError, r"lonely")


# -- the run config, YAML and the command line --------------------------------------------------
@pytest.mark.parametrize(
    ("section", "values", "pattern"),
    [
        ("train", {"epoch": 1}, r"unknown field `train\.epoch` \(did you mean `epochs`\?\)"),
        ("train", {"lr": "fast"}, r"field `train\.lr`: .*valid number.*'fast'"),
        ("adapt", {"method": "dann", "weight": -1}, r"field `adapt\.weight`: .*greater than or equal to 0"),
        ("data", {"batch_size": 0}, r"field `data\.batch_size`: .*greater than or equal to 1"),
        ("data", {"batch_size": 10**9}, r"field `data\.batch_size`: .*less than or equal to 65536"),
        ("name", "../escape", r"field `name`: .*no '\.\.'"),
    ],
    ids=["unknown-key-did-you-mean", "wrong-type", "negative-lambda", "batch-size-zero", "batch-size-huge",
         "run-name-with-dotdot"],
)
def test_bad_config_value_names_the_field(tmp_path: Path, section: str, values: Any, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        _config(tmp_path, "digits-uci", **{section: values})


def test_dataset_name_with_dotdot_is_neither_a_dataset_nor_a_path(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "mnist-5k/../../no-such-data")
    _fit_refuses(cfg, DataError, r"data 'mnist-5k/\.\./\.\./no-such-data' is neither a known dataset")


def test_run_name_with_dotdot_on_the_command_line_writes_nothing(tmp_path: Path) -> None:
    source = vectors_npz(tmp_path / "toy.npz")
    out = tmp_path / "runs" / "inner"
    code, text = invoke("fit", "--source", source, "--backbone", "mlp", "--epochs", "1", "--name", "../escape",
                         "--output-dir", out, "--no-progress")
    assert code == 2 and "`name`" in text and "Traceback" not in text
    assert not out.exists() and not (tmp_path / "runs" / "escape").exists()


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ("- name: a\n- name: b\n", r"must hold a mapping at the top level, got list"),
        ("just some words\n", r"must hold a mapping at the top level, got str"),
        ("train:\n  lr: [0.1\n", r"is not valid YAML"),
        ("train:\n\tlr: 0.1\n", r"is not valid YAML"),
        ("train: 5\n", r"field `train`: .*valid dictionary"),
    ],
    ids=["yaml-list", "yaml-scalar", "yaml-unclosed-bracket", "yaml-tab-indent", "yaml-section-not-a-mapping"],
)
def test_bad_yaml_file_is_named(tmp_path: Path, content: str, pattern: str) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"run\.yaml.*" + pattern):
        RunConfig.from_yaml(path)
    code, text = invoke("fit", "-c", path, "--output-dir", tmp_path / "runs", "--no-progress")
    assert code == 2 and "run.yaml" in text and "Traceback" not in text
    assert not (tmp_path / "runs").exists()


def test_override_without_equals_sign_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"override 'train\.lr' must look like section\.field=value"):
        parse_override("train.lr")
    source = vectors_npz(tmp_path / "toy.npz")
    code, text = invoke("fit", "--source", source, "--backbone", "mlp", "--name", "ov", "--output-dir",
                         tmp_path / "runs", "--set", "train.lr", "--no-progress")
    assert code == 2 and "train.lr" in text and "Traceback" not in text
    assert not (tmp_path / "runs").exists()


# -- checkpoints and models --------------------------------------------------------------------
def test_weights_of_another_architecture_name_the_file(tmp_path: Path) -> None:
    lenet = create_backbone("lenet")
    weights = tmp_path / "lenet-weights.safetensors"
    save_file({k: v.contiguous() for k, v in lenet.body.state_dict().items()}, str(weights))
    cfg = _config(tmp_path, vectors_npz(tmp_path / "toy.npz"), model={"weights": str(weights)})
    message = _fit_refuses(cfg, ModelError, r"weights .*lenet-weights\.safetensors do not fit this architecture")
    assert "unexpected keys" in message and "conv1" in message


def test_truncated_safetensors_weights_name_the_file(tmp_path: Path) -> None:
    mlp = create_backbone("mlp", in_features=4, hidden=8)
    weights = tmp_path / "mlp.safetensors"
    save_file({k: v.contiguous() for k, v in mlp.body.state_dict().items()}, str(weights))
    _truncate(weights)
    cfg = _config(tmp_path, vectors_npz(tmp_path / "toy.npz"), model={"weights": str(weights)})
    _fit_refuses(cfg, ModelError, r"weights file .*mlp\.safetensors is not a readable safetensors file")


def test_resume_after_the_config_changed_names_the_field(trained_run: Path, tmp_path: Path) -> None:
    run, cfg = _copy_run(trained_run, tmp_path)
    before = (run / "config.yaml").read_bytes()
    changed = parse_config(cfg.model_dump(mode="json"), {"train.lr": cfg.train.lr * 10})
    with pytest.raises(RunDirError, match=r"cannot resume .*the configuration changed since it started \(train\.lr\)"):
        fit(changed, resume=True, progress=False)
    assert (run / "config.yaml").read_bytes() == before


def test_resume_from_a_truncated_checkpoint_names_the_file(trained_run: Path, tmp_path: Path) -> None:
    run, cfg = _copy_run(trained_run, tmp_path)
    (run / "model.safetensors").unlink()  # killed before the end: the checkpoints are what resume reads
    (run / "report.json").unlink()
    for weights in (run / "checkpoints").rglob("model.safetensors"):
        _truncate(weights)
    with pytest.raises(RunDirError, match=r"checkpoints/.*model\.safetensors"):
        fit(cfg, resume=True, progress=False)


def test_evaluate_a_truncated_model_file_names_it(trained_run: Path, tmp_path: Path) -> None:
    run, _ = _copy_run(trained_run, tmp_path)
    _truncate(run / "model.safetensors")
    code, text = invoke("evaluate", run, "--data", vectors_npz(tmp_path / "toy.npz", n=16), "--split", "train")
    assert code == 2 and "model.safetensors is truncated" in text and "Traceback" not in text
    assert not (run / "evaluations").exists()


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_command_on_a_run_without_a_model_exits_2(trained_run: Path, tmp_path: Path, command: str) -> None:
    run, _ = _copy_run(trained_run, tmp_path)
    (run / "model.safetensors").unlink()  # a run killed before it saved its model
    data = vectors_npz(tmp_path / "toy.npz", n=16)
    out = tmp_path / "predictions.csv"
    extra = ["--out", out] if command == "predict" else ["--split", "train"]
    code, text = invoke(command, run, "--data", data, *extra)
    assert code == 2 and "Traceback" not in text
    assert re.search(rf"run {re.escape(str(run))}\s+has no finished\s+model\.safetensors", text), text
    assert not out.exists() and not (run / "evaluations").exists()

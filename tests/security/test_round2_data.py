"""Issue 29, the data loaders: labels checked as values before they become integers (items 3 and minor), sizes a
file declares checked against one memory budget before anything is allocated (item 6), text decoded strictly and
JSON nesting bounded (item 7), and a FIFO or a device named for what it is (minor).

Every case gives a one-line :class:`~transferkit.errors.DataError` naming the file (exit 2 at the CLI, no
traceback) or the right result. Where the old code allocated gigabytes, the test lowers the budget
(``TRANSFERKIT_MAX_DATA_GIB``) so that it refuses on any machine and never allocates on a broken one.
"""

from __future__ import annotations

import io
import json
import os
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from transferkit.cli import app
from transferkit.data import audio, load_data, tabular
from transferkit.data import limits as limits_module
from transferkit.data.audio import AudioTransform, fit_length, resample, resample_to_length, verify_audio
from transferkit.data.limits import BUDGET_ENV, data_budget
from transferkit.data.text import load_text_table
from transferkit.data.waveform import read_audio
from transferkit.errors import DataError

runner = CliRunner()
FIT = ["--backbone", "mlp", "--epochs", "1", "--set", "train.threads=1", "--no-progress"]
WRAPPED = "-9223372036854775808"  # what a wrapped int64 cast shows: never in a message


def _fit(tmp_path: Path, source: Path) -> tuple[int, str]:
    result = runner.invoke(app, ["fit", "--source", str(source), *FIT, "--output-dir", str(tmp_path / "runs")])
    return result.exit_code, result.output


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _budget(monkeypatch: pytest.MonkeyPatch, nbytes: int) -> None:
    monkeypatch.setenv(BUDGET_ENV, repr(nbytes / 2**30))


# -- item 3: labels outside int64, floats that are no exact integer --------------------------------------------------
def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def _out_of_range_file(tmp_path: Path, case: str) -> tuple[Path, str]:
    """A file of each format whose labels hold a value past int64 or 2**53, and how the message must show it."""
    x2 = np.zeros((2, 3), np.float32)
    if case == "npz-uint64":
        return _npz(tmp_path / "u.npz", x=x2, y=np.array([0, 2**63 + 1], np.uint64)), "9223372036854775809"
    if case == "npz-float-in-another-split":  # loading train: y_test adds no phantom class, it is named
        return _npz(tmp_path / "f.npz", x_train=x2, y_train=np.array([0.0, 1.0]), x_test=x2[:1],
                    y_test=np.array([1e30])), r"\(y_test\): label 1e\+30"
    if case == "jsonl-int":
        rows = [{"text": "a", "label": 0}, {"text": "b", "label": 2**63 + 1}]
        return _jsonl(tmp_path / "j.jsonl", rows), "9223372036854775809"
    if case == "jsonl-float":
        return _jsonl(tmp_path / "j.jsonl", [{"text": "a", "label": 0}, {"text": "b", "label": 1e30}]), r"1e\+30"
    if case == "csv":
        (tmp_path / "c.csv").write_text(f"f,label\n1,0\n2,{2**63 + 1}\n", encoding="utf-8")
        return tmp_path / "c.csv", "9223372036854775809"
    if case == "svmlight":
        (tmp_path / "s.svm").write_text("0 1:1\n1e30 2:1\n", encoding="utf-8")
        return tmp_path / "s.svm", r"1e\+30"
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"f": [1.0, 2.0], "label": [0.0, 1e30]}), tmp_path / "p.parquet")
    return tmp_path / "p.parquet", r"1e\+30"


@pytest.mark.parametrize("case", ["npz-uint64", "npz-float-in-another-split", "jsonl-int", "jsonl-float", "csv",
                                  "svmlight", "parquet"])
def test_labels_past_int64_or_exact_floats_are_named_not_wrapped(tmp_path: Path, case: str) -> None:
    path, shown = _out_of_range_file(tmp_path, case)
    with pytest.raises(DataError, match=rf"{path.name}.*{shown} is too large to be a class id") as err:
        load_data(str(path))
    assert WRAPPED not in str(err.value)


def test_an_out_of_range_label_stops_fit_with_exit_2(tmp_path: Path) -> None:
    path = _npz(tmp_path / "u.npz", x=np.zeros((8, 3), np.float32), y=np.array([0, 2**63 + 1] * 4, np.uint64))
    code, output = _fit(tmp_path, path)
    assert code == 2 and "9223372036854775809" in output and "Traceback" not in output
    assert WRAPPED not in output and not (tmp_path / "runs").exists()


def test_every_label_array_of_an_npz_is_checked(tmp_path: Path) -> None:
    # y_test's fractional or negative labels were cast (0.5 -> 0) or made a class "-1" when train was read
    x = np.zeros((2, 3), np.float32)
    half = _npz(tmp_path / "half.npz", x_train=x, y_train=np.array([0, 1]), x_test=x, y_test=np.array([0.5, 1.0]))
    with pytest.raises(DataError, match=r"half\.npz \(y_test\): labels must be integers or strings; 0\.5"):
        load_data(str(half))
    neg = _npz(tmp_path / "neg.npz", x_train=x, y_train=np.array([0, 1]), x_test=x, y_test=np.array([-1, 1]))
    with pytest.raises(DataError, match=r"neg\.npz \(y_test\): labels must be >= 0, found -1"):
        load_data(str(neg))
    good = _npz(tmp_path / "good.npz", x_train=x, y_train=np.array([1.0, 3.0]), x_test=x, y_test=np.array([2, 3]))
    assert load_data(str(good)).classes == ["1", "2", "3"]  # whole floats are class ids; splits share them


def test_the_stray_label_count_is_not_doubled(tmp_path: Path) -> None:
    path = _npz(tmp_path / "stray.npz", x=np.zeros((41, 3), np.float32), y=np.array([0, 1] * 20 + [2024]))
    with pytest.raises(DataError, match=r"largest: 2024 \(1 item\), 1 \(20 items\), 0 \(20 items\)"):
        load_data(str(path))


def test_json_number_labels_follow_the_numeric_rule(tmp_path: Path) -> None:
    rows = [{"text": "a", "label": 0}, {"text": "b", "label": 2.0}]
    assert load_text_table(_jsonl(tmp_path / "ok.jsonl", rows)).classes == ["0", "2"]
    for bad, pattern in ((0.5, r"row 2: label 'label' is the number 0\.5, not a whole number"),
                         (float("nan"), r"row 2: label 'label' is the number nan"),
                         (2.0**60, r"row 2 \(label 'label'\): label 1\.152921504606847e\+18 is too large")):
        path = tmp_path / "bad.jsonl"
        path.write_text(json.dumps(rows[0]) + "\n" + json.dumps({"text": "b", "label": bad}) + "\n", encoding="utf-8")
        with pytest.raises(DataError, match=pattern):
            load_text_table(path)
    strings = [{"text": "a", "label": "0.5"}, {"text": "b", "label": "1"}]  # text is a class name
    assert load_text_table(_jsonl(tmp_path / "names.jsonl", strings)).classes == ["0.5", "1"]


@pytest.mark.parametrize("odd", ["01", "+1", "1_0", "\u0663", "-0"])
def test_integers_spelled_another_way_are_class_names_in_every_loader(tmp_path: Path, odd: str) -> None:
    """Only the canonical spelling of an integer is a class id: "01" beside "0" is a second name, in text tables
    (it crashed with a KeyError: the classes were made by int() and the rows looked up by their text) and in
    feature CSVs (which merged it with "1") alike."""
    rows = [{"text": f"review {i}", "label": ["0", odd][i % 2]} for i in range(6)]
    text = load_text_table(_jsonl(tmp_path / "t.jsonl", rows))
    assert text.classes == sorted(["0", odd]) and text.labels.tolist() == [text.classes.index(r["label"]) for r in rows]
    csv = tmp_path / "f.csv"
    csv.write_text("f0,label\n" + "".join(f"{i},{['0', odd, '1'][i % 3]}\n" for i in range(6)), encoding="utf-8")
    assert load_data(str(csv)).classes == sorted(["0", "1", odd])


def test_a_csv_header_with_a_nameless_column_is_refused(tmp_path: Path) -> None:
    """f0,f1, over rows of two features and a label loaded as an unlabelled table of three features."""
    path = tmp_path / "trailing.csv"
    path.write_text("f0,f1,\n" + "".join(f"{i},{i + 1},{i % 2}\n" for i in range(6)), encoding="utf-8")
    with pytest.raises(DataError, match=r"column 3 of the header has no name"):
        load_data(str(path))


def test_a_canonical_integer_label_is_still_a_class_id(tmp_path: Path) -> None:
    rows = [{"text": f"review {i}", "label": ["0", "2"][i % 2]} for i in range(4)]
    assert load_text_table(_jsonl(tmp_path / "t.jsonl", rows)).classes == ["0", "2"]


def test_npz_names_are_text(tmp_path: Path) -> None:
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(DataError, match=r"b\.npz: labels holds b'\\xff', which is not UTF-8 text"):
        load_data(str(_npz(tmp_path / "b.npz", x=x, y=np.array([b"\xff", b"a"]))))  # was an 'ascii' traceback
    with pytest.raises(DataError, match=r"s\.npz: classes holds 'a\\ud800', with a lone surrogate"):
        load_data(str(_npz(tmp_path / "s.npz", x=x, y=np.array([0, 1]), classes=np.array(["a\ud800", "b"]))))
    ok = load_data(str(_npz(tmp_path / "ok.npz", x=x, y=np.array([b"b", b"a"]), classes=np.array([b"a", b"b"]))))
    assert ok.classes == ["a", "b"] and ok.labels.tolist() == [1, 0]  # bytes are names, not "b'a'"


# -- item 6: declared sizes against one budget -----------------------------------------------------------------------
def _npy_header(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue() + b"\0" * 64


def test_a_forged_npy_or_npz_header_is_refused_before_allocating(tmp_path: Path) -> None:
    header = _npy_header((100_000, 100_000))
    npy = tmp_path / "h.npy"
    npy.write_bytes(header)
    assert npy.stat().st_size < 200
    with pytest.raises(DataError, match=r"h\.npy: the array declares shape \(100,000 x 100,000\) of float32 "
                                        r"\(40,000,000,000 bytes\) but only 64 bytes"):
        load_data(str(npy))
    npz = tmp_path / "h.npz"
    with zipfile.ZipFile(npz, "w") as z:
        z.writestr("x.npy", header)
    with pytest.raises(DataError, match=r"h\.npz: x declares shape \(100,000 x 100,000\)"):
        load_data(str(npz))
    code, output = _fit(tmp_path, npz)
    assert code == 2 and "declares shape" in output and "MemoryError" not in output


def test_npz_arrays_together_must_fit_the_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a compressed archive is small on disk and large in memory (a zip bomb in the small)
    path = tmp_path / "big.npz"
    np.savez_compressed(path, x=np.zeros((1000, 1000)), y=np.zeros(1000, np.int64))
    assert path.stat().st_size < 50_000
    _budget(monkeypatch, 2**20)
    with pytest.raises(DataError, match=r"big\.npz: its arrays \(x \(1,000 x 1,000\) float64.*would take 7\.6 MiB in "
                                        rf"memory, over the 1\.0 MiB a data file may ask for \(set by {BUDGET_ENV}\)"):
        load_data(str(path))
    monkeypatch.delenv(BUDGET_ENV)
    assert load_data(str(path)).inputs.shape == (1000, 1000)


def test_int8_features_are_budgeted_as_the_float32_they_become(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _npz(tmp_path / "i8.npz", x=np.ones((1024, 256), np.int8))  # 256 KiB on disk, 1 MiB as float32
    _budget(monkeypatch, 600 * 1024)
    with pytest.raises(DataError, match=r"i8\.npz: x \(1,024 x 256\) as float32 would take 1\.0 MiB"):
        load_data(str(path))


def test_a_sparse_mat_is_budgeted_as_the_float32_it_becomes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import scipy.io
    import scipy.sparse

    path = tmp_path / "s.mat"
    scipy.io.savemat(path, {"x": scipy.sparse.csc_matrix(([1.0], ([0], [0])), shape=(2_000_000_000, 1))})
    assert path.stat().st_size < 300
    _budget(monkeypatch, 4 * 2**30)  # the old check let 7.45 GiB (float32) through, then densified 14.9 (float64)
    with pytest.raises(DataError, match=r"s\.mat: x \(2,000,000,000 x 1\) as dense float32 would take 7\.5 GiB"):
        load_data(str(path))


def test_a_small_sparse_mat_loads_as_float32(tmp_path: Path) -> None:
    import scipy.io
    import scipy.sparse

    dense = np.arange(12, dtype=np.float64).reshape(4, 3)
    scipy.io.savemat(tmp_path / "ok.mat", {"x": scipy.sparse.csc_matrix(dense), "y": np.array([[0, 1, 0, 1]])})
    ds = load_data(str(tmp_path / "ok.mat"))
    assert ds.inputs.dtype == np.float32 and np.array_equal(ds.inputs, dense) and ds.classes == ["0", "1"]


def test_a_mat_variable_is_budgeted_before_it_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import scipy.io

    scipy.io.savemat(tmp_path / "d.mat", {"x": np.zeros((512, 512)), "other": np.zeros((4000, 4000))},
                     do_compression=True)
    _budget(monkeypatch, 2**20)
    with pytest.raises(DataError, match=r"d\.mat: x \(512 x 512\) double would take 2\.0 MiB"):
        load_data(str(tmp_path / "d.mat"))
    _budget(monkeypatch, 4 * 2**20)  # only the variables used count: "other" (122 MiB) is never read
    assert load_data(str(tmp_path / "d.mat")).inputs.shape == (512, 512)


def test_gzipped_json_lines_are_budgeted_as_they_inflate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gzip

    path = tmp_path / "bomb.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for i in range(40_000):
            f.write(json.dumps({"text": "x" * 100, "label": i % 2}) + "\n")
    assert path.stat().st_size < 100_000  # 5 MB of rows
    _budget(monkeypatch, 2**20)
    with pytest.raises(DataError, match=r"bomb\.jsonl\.gz \(decompressed\) would take 1\.0 MiB"):
        load_data(str(path))


@pytest.mark.parametrize("suffix", ["jsonl", "csv"])
def test_a_gzip_bomb_of_one_line_stops_at_the_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     suffix: str) -> None:
    """One line with no newline was inflated whole before the per-line check (1.3 GB from 400 KB), and gzipped text
    CSVs had no check at all: the stream itself now stops at the budget."""
    import gzip
    import resource

    path = tmp_path / f"bomb.{suffix}.gz"
    head = '{"text": "' if suffix == "jsonl" else 'text,label\n"'
    with gzip.open(path, "wb") as f:
        f.write(head.encode())
        block = b"x" * 2**20
        for _ in range(64):  # 64 MiB of one text cell, about 64 KB on disk
            f.write(block)
    _budget(monkeypatch, 2**20)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(DataError, match=r"bomb\." + suffix + r"\.gz \(decompressed\) would take"):
        load_data(str(path))
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 48 * 1024  # far below the 64 MiB (and more, as str) that reading it whole takes


def test_a_one_line_svmlight_file_with_a_huge_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "l.svm"
    path.write_text("0 1999999999:1\n", encoding="utf-8")
    assert path.stat().st_size <= 16
    _budget(monkeypatch, 4 * 2**30)
    with pytest.raises(DataError, match=r"l\.svm: 1 rows x 1999999999 features .* would take 7\.5 GiB.*stray "
                                        "feature index"):
        load_data(str(path))


def test_an_svmlight_index_past_a_c_int_is_a_data_error(tmp_path: Path) -> None:
    # found by the fuzz test: sklearn's parser raised OverflowError (a traceback)
    path = tmp_path / "i.svm"
    path.write_text("0 2147483648:1\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"i\.svm: a feature index is too large"):
        load_data(str(path))


def test_one_long_csv_cell_does_not_widen_every_cell(tmp_path: Path) -> None:
    # the cells went through a numpy string array, as wide as the longest cell: 778 KB asked for 37.3 GiB
    path = tmp_path / "wide.csv"
    path.write_text("f0,f1,label\n" + "".join(f"{i},{i},0\n" for i in range(50_000)) + "1," + "1" * 100_000
                    + ",1\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"wide\.csv: NaN or Inf in feature columns \['f1'\] \(rows \[50002\]\)"):
        load_data(str(path))
    path.write_text("f0,label\n1,0\n" + "x" * 100_000 + ",1\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"feature column 'f0' is not numeric \(the value 'xxxxxxxxxxxxxxxxxxxx\.\.\."
                                        r"\(100,000 characters\)' in row 3\)"):
        load_data(str(path))


def test_a_long_name_in_an_audio_labels_csv_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("soundfile")
    _wav(tmp_path / "a.wav", np.zeros(100, np.float32), 8000)
    (tmp_path / "labels.csv").write_text("path,label,domain\na.wav,yes," + "d" * 100_000 + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"labels\.csv, line 2: the domain is 100,000 characters long"):
        load_data(str(tmp_path / "labels.csv"))


def test_parquet_rows_are_budgeted_from_the_metadata(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"f": np.zeros(200_000), "label": np.zeros(200_000, np.int64)}), tmp_path / "p.parquet")
    assert (tmp_path / "p.parquet").stat().st_size < 20_000  # run-length encoded
    _budget(monkeypatch, 2**20)
    with pytest.raises(DataError, match=r"p\.parquet: 200,000 rows x 2 columns would take 3\.1 MiB"):
        load_data(str(tmp_path / "p.parquet"))


def test_the_budget_is_the_smallest_of_its_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BUDGET_ENV, raising=False)
    monkeypatch.setattr(limits_module, "_free_address_space", lambda: None)
    monkeypatch.setattr(limits_module, "_physical_memory", lambda: 64 * 2**30)
    assert data_budget() == 8 * 2**30  # the old svmlight limit, now every loader's
    monkeypatch.setattr(limits_module, "_physical_memory", lambda: 8 * 2**30)
    assert data_budget() == 2 * 2**30  # a quarter of the memory
    monkeypatch.setattr(limits_module, "_free_address_space", lambda: 2**30)
    assert data_budget() == 2**29  # half of what ulimit -v leaves
    monkeypatch.setenv(BUDGET_ENV, "16")
    assert data_budget() == 2**29  # the user's own limit replaces the default and the memory share, not ulimit
    monkeypatch.setattr(limits_module, "_free_address_space", lambda: None)
    assert data_budget() == 16 * 2**30
    monkeypatch.setenv(BUDGET_ENV, "lots")
    with pytest.raises(DataError, match=rf"{BUDGET_ENV}='lots' is not a number of GiB"):
        data_budget()


def test_a_memory_error_that_still_happens_is_a_data_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _npz(tmp_path / "d.npz", x=np.zeros((4, 3), np.float32))

    def no_memory(*args: object, **kwargs: object) -> None:
        raise MemoryError

    monkeypatch.setattr(tabular.np, "load", no_memory)
    with pytest.raises(DataError, match=r"not enough memory to load .*d\.npz"):
        load_data(str(path))


def _wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    import soundfile as sf

    sf.write(path, samples, rate, subtype="PCM_16")
    return path


def test_a_wav_that_declares_1_hz_is_cropped_before_it_is_resampled(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("soundfile")
    samples = (np.random.default_rng(0).standard_normal(1_000_000) * 0.1).astype(np.float32)
    path = _wav(tmp_path / "slow.wav", samples, 1)  # 2 MB, "a million seconds": 59.6 GiB at 16 kHz
    seen: list[int] = []

    def spy(x: np.ndarray, orig: int, target: int) -> np.ndarray:
        seen.append(len(x))
        return resample(x, orig, target)

    monkeypatch.setattr(audio, "resample", spy)
    x = AudioTransform(16000, 16000)(read_audio(path))
    assert tuple(x.shape) == (16000,) and seen and max(seen) < 100


@pytest.mark.parametrize(("orig", "target"), [(44100, 16000), (8000, 16000), (48000, 16000), (16000, 8000),
                                              (1, 16000), (96000, 44100)])
def test_cropping_first_gives_the_same_samples_bit_for_bit(orig: int, target: int) -> None:
    rng = np.random.default_rng(orig)
    longest = 40_000 if target < 10 * orig else 300  # 1 Hz: 300 s are 4.8 million samples at 16 kHz already
    for n in (1, 200, longest):
        for length in (1, 8000, 16000):
            x = rng.standard_normal(n).astype(np.float32)
            assert np.array_equal(resample_to_length(x, orig, target, length),
                                  fit_length(resample(x, orig, target), length))


def test_a_forged_sample_rate_is_refused_by_name(tmp_path: Path) -> None:
    pytest.importorskip("soundfile")
    path = _wav(tmp_path / "fast.wav", np.zeros(100, np.float32), 8000)
    data = bytearray(path.read_bytes())
    data[24:28] = struct.pack("<I", 2_000_000)
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"fast\.wav: its sample rate is 2,000,000 Hz, outside 1\.\.1,000,000"):
        read_audio(path)
    with pytest.raises(DataError, match=r"fast\.wav: its sample rate is 2,000,000 Hz"):
        verify_audio([path])


def test_a_recording_over_the_budget_is_refused_before_decoding(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("soundfile")
    path = _wav(tmp_path / "long.wav", np.zeros(200_000, np.float32), 8000)  # 400 KB as 16-bit, 1.6 MB decoded
    _budget(monkeypatch, 2**20)
    with pytest.raises(DataError, match=r"long\.wav: .*200,000 frames x 1 channels would take 1\.5 MiB"):
        read_audio(path)
    with pytest.raises(DataError, match=r"long\.wav: .*200,000 frames x 1 channels would take 1\.5 MiB"):
        verify_audio([path])


# -- item 7: tracebacks from text ------------------------------------------------------------------------------------
def test_deeply_nested_json_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.jsonl"
    path.write_text('{"text": "a", "label": 0}\n{"text": "b", "label": 1, "x": ' + "[" * 100_000 + "]" * 100_000
                    + "}\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"deep\.jsonl, line 2: JSON nested too deeply"):
        load_data(str(path))


def test_numbers_too_long_for_a_float_or_for_python(tmp_path: Path) -> None:
    import sys

    if sys.get_int_max_str_digits() == 0:
        pytest.skip("Python's integer digit limit is off here (PYTHONINTMAXSTRDIGITS=0)")
    side = tmp_path / "side.jsonl"
    side.write_text('{"text": "a", "label": 0, "r": ' + "9" * 400 + '}\n{"text": "b", "label": 1, "r": 2}\n',
                    encoding="utf-8")
    with pytest.raises(DataError, match=r"side\.jsonl, row 1: field 'r' holds a number too large for a float "
                                        r"\(400 digits\)"):
        load_data(str(side))
    digits = tmp_path / "digits.jsonl"
    digits.write_text('{"text": "a", "label": 0, "r": ' + "9" * 5000 + "}\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"digits\.jsonl, line 1: cannot read this JSON \(a number of more than"):
        load_data(str(digits))


def test_a_lone_surrogate_is_refused_and_a_pair_is_text(tmp_path: Path) -> None:
    path = tmp_path / "sur.jsonl"
    path.write_text('{"text": "ok", "label": 0}\n{"text": "a\\ud800b", "label": 1}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"sur\.jsonl, line 2: field 'text' holds a lone surrogate \('\\ud800'\)"):
        load_data(str(path))
    path.write_text('{"text": "ok", "label": "\\udfff"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"line 1: field 'label' holds a lone surrogate"):
        load_data(str(path))
    path.write_text('{"text": "smile \\ud83d\\ude00", "label": 0}\n', encoding="utf-8")  # an escaped pair: an emoji
    assert load_data(str(path)).inputs == ["smile \U0001f600"]
    path.write_text('{"text": "a\\ud800", "label": 0}\n{"text": "b", "label": 1}\n', encoding="utf-8")
    code, output = _fit(tmp_path, path)
    assert code == 2 and "lone surrogate" in output and "Traceback" not in output


def test_bad_utf8_names_its_line(tmp_path: Path) -> None:
    jsonl = tmp_path / "l.jsonl"
    jsonl.write_bytes(b'{"text": "a", "label": 0}\n{"text": "b", "label": 1}\n{"text": "caf\xe9", "label": 0}\n')
    with pytest.raises(DataError, match=r"l\.jsonl, line 3, is not UTF-8 text"):
        load_data(str(jsonl))
    text_csv = tmp_path / "t.csv"
    text_csv.write_bytes(b"text,label\ngood,0\nfine,1\ncaf\xe9,0\n")
    with pytest.raises(DataError, match=r"t\.csv, line 4, is not UTF-8 text"):
        load_data(str(text_csv))
    feature_csv = tmp_path / "f.csv"
    feature_csv.write_bytes(b"f,label\n1,0\n2,\xff\n")
    with pytest.raises(DataError, match=r"f\.csv as a UTF-8 CSV file: line 3 is not UTF-8"):
        load_data(str(feature_csv))
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b'\xef\xbb\xbf{"text": "a", "label": 0}\n')  # a byte-order mark is still fine
    assert load_data(str(bom)).inputs == ["a"]


# -- minor: what a path is -------------------------------------------------------------------------------------------
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("name", ["f.csv", "f.npz", "f.jsonl", "f.svm"])
def test_a_fifo_is_named_as_one_not_a_folder(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    os.mkfifo(path)
    with pytest.raises(DataError, match=rf"{name} is a FIFO \(named pipe\), not a regular file") as err:
        load_data(str(path))
    assert "folder" not in str(err.value) and "does not exist" not in str(err.value)


def test_a_link_to_a_device_is_named_as_one(tmp_path: Path) -> None:
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero")
    (tmp_path / "zero.csv").symlink_to("/dev/zero")
    with pytest.raises(DataError, match=r"zero\.csv is a character device, not a regular file"):
        load_data(str(tmp_path / "zero.csv"))
    code, output = _fit(tmp_path, tmp_path / "zero.csv")
    assert code == 2 and "character device" in output

"""Property-based fuzzing of every loader that reads a file a user (or an attacker) hands over: run configs (YAML),
CSV tables, ``.npz`` arrays and safetensors model files; and (issue 29) headers declaring huge shapes, svmlight
indices and labels past int64, nested JSON, numbers too long to read and lone surrogates in JSON lines. Random and
mutated inputs must give either a result or a :class:`~transferkit.errors.TransferkitError` subclass -- never
another exception (a traceback for the user) and never a hang (each example has a deadline).

hypothesis runs derandomised with no example database, so CI draws the same examples every time.
"""

from __future__ import annotations

import contextlib
import io
import json
import struct
import zipfile
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transferkit.config import RunConfig
from transferkit.data import load_data
from transferkit.errors import TransferkitError
from transferkit.models.backbones import create_backbone, read_metadata
from transferkit.models.heads import TransferModel

FUZZ = settings(
    max_examples=300, deadline=timedelta(seconds=20), database=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)


def _mutations(seed: bytes) -> st.SearchStrategy[bytes]:
    """``seed`` with bytes flipped, inserted or cut out, or truncated: the damage real files get."""
    n = len(seed)

    @st.composite
    def mutate(draw: st.DrawFn) -> bytes:
        data = bytearray(seed)
        for _ in range(draw(st.integers(1, 6))):
            op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "repeat"]))
            at = draw(st.integers(0, max(len(data) - 1, 0)))
            if op == "flip" and data:
                data[at] = draw(st.integers(0, 255))
            elif op == "insert":
                data[at:at] = draw(st.binary(min_size=1, max_size=16))
            elif op == "delete":
                del data[at: at + draw(st.integers(1, 16))]
            elif op == "truncate":
                del data[at:]
            elif op == "repeat" and data:
                piece = bytes(data[at: at + draw(st.integers(1, 32))])
                data[at:at] = piece * draw(st.integers(1, 50))
        return bytes(data)

    return st.one_of(mutate(), st.binary(max_size=max(64, n)))


def _check(load: object, path: Path, data: bytes) -> None:
    path.write_bytes(data)
    with contextlib.suppress(TransferkitError):  # a clear, one-line error: what the user should see
        load()  # type: ignore[operator]


# -- YAML run configs ------------------------------------------------------------------------------------------------
_GOOD_YAML = (
    b"seeds: [0, 1]\ndata:\n  source: &src mnist-5k\n  target: digits-uci\n  batch_size: 32\n"
    b"model:\n  backbone: mlp\n  backbone_kwargs: {hidden: 16}\n  heads:\n  - {name: a, kind: regression, field: r}\n"
    b"adapt:\n  method: dann\n  options: {hidden: 64}\ntrain:\n  lr: 1.0e-3\n  epochs: 2\nname: *src\n"
)


@FUZZ
@given(_mutations(_GOOD_YAML))
def test_fuzz_yaml_configs(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("yaml") / "c.yaml"
    _check(lambda: RunConfig.from_yaml(path), path, data)


@FUZZ
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
                    max_leaves=30))
def test_fuzz_yaml_structures(tmp_path_factory: pytest.TempPathFactory, value: object) -> None:
    import yaml

    path = tmp_path_factory.mktemp("yaml") / "c.yaml"
    text = yaml.safe_dump({"model": value, "train": value}, allow_unicode=True).encode()
    _check(lambda: RunConfig.from_yaml(path), path, text)


# -- CSV tables -----------------------------------------------------------------------------------------------------
_GOOD_CSV = b"f0,f1,label,split\n" + b"".join(f"{i * 0.5},{i % 3},{i % 2},train\n".encode() for i in range(12))
_GOOD_TEXT_CSV = b"text,label\n" + b"".join(f"\"review {i}, words\",{'ab'[i % 2]}\n".encode() for i in range(12))


@FUZZ
@given(_mutations(_GOOD_CSV))
def test_fuzz_feature_csv(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("csv") / "d.csv"
    _check(lambda: load_data(str(path)), path, data)


@FUZZ
@given(_mutations(_GOOD_TEXT_CSV))
def test_fuzz_text_csv(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("csv") / "t.csv"
    _check(lambda: load_data(str(path)), path, data)


# -- npz arrays -----------------------------------------------------------------------------------------------------
def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


_GOOD_NPZ = _npz(x_train=np.arange(24, dtype=np.float32).reshape(8, 3), y_train=np.arange(8) % 2)

_ARRAYS = st.sampled_from([np.float32, np.float64, np.int64, np.uint8, np.bool_, np.complex64]).flatmap(
    lambda dtype: st.tuples(st.integers(0, 6), st.integers(0, 4)).map(
        lambda shape: np.ones(shape, dtype=dtype) * (np.nan if dtype in (np.float32,) and shape[0] == 3 else 1)))


@FUZZ
@given(_mutations(_GOOD_NPZ))
def test_fuzz_npz_bytes(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("npz") / "d.npz"
    _check(lambda: load_data(str(path)), path, data)


@FUZZ
@given(st.dictionaries(st.sampled_from(["x", "y", "x_train", "y_train", "classes", "x_test", "features"]), _ARRAYS,
                       min_size=1, max_size=4))
def test_fuzz_npz_contents(tmp_path_factory: pytest.TempPathFactory, arrays: dict[str, np.ndarray]) -> None:
    path = tmp_path_factory.mktemp("npz") / "d.npz"
    _check(lambda: load_data(str(path)), path, _npz(**arrays))


# -- issue 29: huge declared sizes, nested JSON, surrogates, out-of-range integers ---------------------------------
# A budget far below what any shape here declares: a loader that allocated before checking would show it as a
# MemoryError (or a slow test), not pass by luck on a large machine.
SMALL_BUDGET_GIB = repr(64 * 2**20 / 2**30)
FUZZ_SMALL = settings(FUZZ, max_examples=120)
_HUGE = st.integers(0, 2**40)


@st.composite
def _declared_npy(draw: st.DrawFn) -> bytes:
    """A ``.npy`` header declaring any shape and dtype, followed by a little data (or none)."""
    shape = tuple(draw(st.lists(st.one_of(st.integers(0, 8), _HUGE), min_size=1, max_size=4)))
    descr = draw(st.sampled_from(["<f4", "<f8", "|u1", "<i8", "<u8", "|b1", "<c8", "<U4"]))
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": draw(st.booleans()), "shape": shape})
    return buf.getvalue() + draw(st.binary(max_size=64))


@FUZZ_SMALL
@given(_declared_npy(), st.booleans())
def test_fuzz_declared_array_sizes(tmp_path_factory: pytest.TempPathFactory, npy: bytes, in_npz: bool) -> None:
    folder = tmp_path_factory.mktemp("declared")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRANSFERKIT_MAX_DATA_GIB", SMALL_BUDGET_GIB)
        if in_npz:
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as z:
                z.writestr("x.npy", npy)
                z.writestr("y.npy", _declared_label_npy())
            _check(lambda: load_data(str(folder / "d.npz")), folder / "d.npz", buf.getvalue())
        else:
            _check(lambda: load_data(str(folder / "d.npy")), folder / "d.npy", npy)


def _declared_label_npy() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.array([0, 1, 0, 1]))
    return buf.getvalue()


@FUZZ_SMALL
@given(st.integers(0, 2**62), st.integers(0, 2**40), st.sampled_from(["0", "1", "-1", "1e30", "2.5", "nan",
                                                                         str(2**64), "-" + str(2**63 + 1)]))
def test_fuzz_svmlight_indices_and_labels(tmp_path_factory: pytest.TempPathFactory, index: int, rows: int,
                                          label: str) -> None:
    path = tmp_path_factory.mktemp("svm") / "d.svm"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRANSFERKIT_MAX_DATA_GIB", SMALL_BUDGET_GIB)
        _check(lambda: load_data(str(path)), path, f"{label} {index}:1\n1 {rows % 97}:2.5\n".encode())


_OUT_OF_RANGE = st.one_of(st.integers(-(2**70), 2**70), st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, -(2**63)]),
                          st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e30, 2.0**53, 2.0**53 + 2]))


@FUZZ_SMALL
@given(st.lists(_OUT_OF_RANGE, min_size=1, max_size=6), st.sampled_from(["jsonl", "csv", "npz", "npz-test"]))
def test_fuzz_out_of_range_labels(tmp_path_factory: pytest.TempPathFactory, labels: list, fmt: str) -> None:
    folder = tmp_path_factory.mktemp("labels")
    n = len(labels)
    if fmt == "jsonl":
        data = "".join(json.dumps({"text": f"t{i}", "label": v}) + "\n" for i, v in enumerate(labels)).encode()
    elif fmt == "csv":
        data = ("f,label\n" + "".join(f"{i},{v}\n" for i, v in enumerate(labels))).encode()
    else:
        kind = np.float64 if any(isinstance(v, float) for v in labels) else \
            np.uint64 if all(0 <= v < 2**64 for v in labels) and max(labels) >= 2**63 else np.int64
        try:
            y = np.array(labels, dtype=kind)
        except OverflowError:  # not representable in any numpy dtype: nothing to write
            return
        x = np.zeros((n, 2), np.float32)
        data = _npz(x=x, y=y) if fmt == "npz" else _npz(x_train=x[:1], y_train=np.array([0]), x_test=x, y_test=y)
    path = folder / f"d.{fmt.split('-')[0]}"
    _check(lambda: load_data(str(path)), path, data)


_JSON_TEXT = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF, categories=None), max_size=12)


@FUZZ_SMALL
@given(st.one_of(
    st.integers(1, 200_000).map(lambda depth: "[" * depth + "]" * depth),
    st.integers(1, 5000).map(lambda digits: "9" * digits),
    st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | _JSON_TEXT,
                 lambda kids: st.lists(kids, max_size=3) | st.dictionaries(_JSON_TEXT, kids, max_size=3),
                 max_leaves=20).map(json.dumps),  # json.dumps escapes a lone surrogate as \udXXX: it reads back
), _JSON_TEXT, st.sampled_from(["text", "label", "rating", "domain"]))
def test_fuzz_json_lines_nesting_numbers_and_surrogates(tmp_path_factory: pytest.TempPathFactory, value: str,
                                                        text: str, field: str) -> None:
    path = tmp_path_factory.mktemp("jsonl") / "d.jsonl"
    good = {"text": text or "x", "label": 0, "rating": 1}
    line = json.dumps(good)[:-1] + f', "{field}": {value}}}'
    _check(lambda: load_data(str(path)), path, (json.dumps({"text": "y", "label": 1}) + "\n" + line + "\n").encode())


# -- safetensors model files ----------------------------------------------------------------------------------------
def _model_bytes() -> bytes:
    torch.manual_seed(0)
    model = TransferModel(create_backbone("mlp", in_features=3, hidden=4, depth=1), ["a", "b"])
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in model.state_dict().items()}, metadata=model.metadata())


_GOOD_MODEL = _model_bytes()
_HEADER_LEN = struct.unpack("<Q", _GOOD_MODEL[:8])[0]


@st.composite
def _headers(draw: st.DrawFn) -> bytes:
    """A valid file whose JSON header is replaced by a mutated one (its length field fixed or not)."""
    header = json.loads(_GOOD_MODEL[8: 8 + _HEADER_LEN])
    meta = header["__metadata__"]
    key = draw(st.sampled_from(sorted(meta)))
    meta[key] = draw(st.one_of(
        st.text(max_size=40), st.sampled_from(["hf:", "st:", "onnx:", "timm:", "file:", ""]).flatmap(
            lambda prefix: st.text(max_size=30).map(lambda rest: prefix + rest)),
        st.just("{}"), st.just("[]"), st.just('{"hidden": -1}'), st.just("mlp"),
        st.just("file:model.safetensors"), st.just("hf:../x"), st.just("timm:resnet18"),
        st.just(json.dumps([{"name": "label", "kind": "classification", "outputs": 10**9}])),
    ))
    if draw(st.booleans()):
        name = draw(st.sampled_from([k for k in header if k != "__metadata__"]))
        header[name]["shape"] = draw(st.lists(st.integers(-2, 10**6), max_size=3))
    body = json.dumps(header).encode()
    length = len(body) if draw(st.booleans()) else draw(st.integers(0, 2**63))
    return struct.pack("<Q", length) + body + _GOOD_MODEL[8 + _HEADER_LEN:]


@FUZZ
@given(st.one_of(_headers(), _mutations(_GOOD_MODEL[: 8 + _HEADER_LEN + 64])))
def test_fuzz_safetensors_model_files(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("st") / "model.safetensors"
    _check(lambda: TransferModel.load(path), path, data)
    _check(lambda: read_metadata(path), path, data)
    _check(lambda: create_backbone(f"file:{path}"), path, data)


def test_the_fuzz_seeds_are_valid_inputs(tmp_path: Path) -> None:
    # the mutations start from inputs that load: a failure above is the damage, not a broken seed
    (tmp_path / "c.yaml").write_bytes(_GOOD_YAML)
    assert RunConfig.from_yaml(tmp_path / "c.yaml").model.backbone == "mlp"
    for name, data in (("d.csv", _GOOD_CSV), ("t.csv", _GOOD_TEXT_CSV), ("d.npz", _GOOD_NPZ)):
        (tmp_path / name).write_bytes(data)
        assert len(load_data(str(tmp_path / name))) > 0
    (tmp_path / "model.safetensors").write_bytes(_GOOD_MODEL)
    assert TransferModel.load(tmp_path / "model.safetensors").classes == ["a", "b"]

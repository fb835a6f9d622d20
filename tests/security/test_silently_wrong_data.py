"""Data that used to train without a word while being wrong: high bit-depth and float images clipped to white or
black, and one stray integer label that made a 2,025-class head."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from transferkit.cli import app
from transferkit.data import load_data
from transferkit.data.domain import integer_classes, to_uint8
from transferkit.data.images import load_image_folder
from transferkit.errors import DataError

runner = CliRunner()


def _folder(root: Path, make: dict[str, np.ndarray]) -> Path:
    for cls, arr in make.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(2):
            suffix = ".tif" if arr.dtype.kind == "f" else ".png"
            Image.fromarray(arr).save(root / cls / f"{i}{suffix}")
    return root


def _ramp(dtype: type, top: float) -> np.ndarray:
    return (np.linspace(0, 1, 16 * 16).reshape(16, 16) * top).astype(dtype)


@pytest.mark.parametrize(("dtype", "top"), [(np.uint16, 65535), (np.float32, 1.0), (np.float32, 255.0)],
                         ids=["16-bit-png", "float-tiff-0-1", "float-tiff-0-255"])
def test_deep_images_keep_their_contrast(tmp_path: Path, dtype: type, top: float) -> None:
    root = _folder(tmp_path / "imgs", {"a": _ramp(dtype, top), "b": _ramp(dtype, top)[::-1]})
    ds = load_image_folder(root)
    pixels = np.asarray(ds.decode(0), dtype=np.float64)
    assert pixels.shape[-1] == 3
    # a ramp over the whole range: mean near mid-grey, from black to white (clipping gave 254 or 0)
    assert 120 < pixels.mean() < 135 and pixels.min() <= 1 and pixels.max() >= 254


def test_float_images_out_of_range_are_refused_by_name(tmp_path: Path) -> None:
    root = _folder(tmp_path / "imgs", {"a": _ramp(np.float32, 1.0), "b": _ramp(np.float32, 1.0)})
    Image.fromarray(np.full((16, 16), -3.5, np.float32)).save(root / "b" / "odd.tif")
    with pytest.raises(DataError, match=r"odd\.tif.*mode F.*range -3\.5"):
        load_image_folder(root)
    code = runner.invoke(app, ["fit", "--source", str(root), "--epochs", "1", "--output-dir", str(tmp_path / "runs"),
                               "--no-progress"])
    assert code.exit_code == 2 and "odd.tif" in code.output


def test_to_uint8_by_hand() -> None:
    assert to_uint8(np.array([0, 65535, 257], np.uint16), "x").tolist() == [0, 255, 1]
    assert to_uint8(np.array([0.0, 0.5, 1.0], np.float32), "x").tolist() == [0, 128, 255]
    assert to_uint8(np.array([0.0, 2.0, 255.0]), "x").tolist() == [0, 2, 255]
    with pytest.raises(DataError, match="NaN"):
        to_uint8(np.array([np.nan], np.float32), "x")
    with pytest.raises(DataError, match="outside 8 and 16 bits"):
        to_uint8(np.array([70000], np.int32), "x")


def test_integer_classes_allow_gaps_but_not_a_mostly_empty_head() -> None:
    assert integer_classes([0, 1, 1, 0], "f") == ["0", "1"]
    assert integer_classes([1, 2, 3, 10], "f") == ["1", "2", "3", "10"]  # 1-based, a few gaps: no empty class
    with pytest.raises(DataError, match=r"f: .*0\.\.2024.*only 3 of those 2,025.*2024 \(1 item\)"):
        integer_classes([0, 1] * 50 + [2024], "f")


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "npz"])
def test_a_stray_integer_label_is_refused_naming_the_file(tmp_path: Path, fmt: str) -> None:
    labels = [0, 1] * 20 + [2024]
    if fmt == "csv":
        path = tmp_path / "d.csv"
        path.write_text("f0,f1,label\n" + "".join(f"{i},{i % 3},{y}\n" for i, y in enumerate(labels)),
                        encoding="utf-8")
    elif fmt == "jsonl":
        path = tmp_path / "d.jsonl"
        path.write_text("".join(json.dumps({"text": f"item {i}", "label": y}) + "\n" for i, y in enumerate(labels)),
                        encoding="utf-8")
    else:
        path = tmp_path / "d.npz"
        np.savez(path, x=np.random.default_rng(0).normal(size=(len(labels), 3)).astype(np.float32),
                 y=np.asarray(labels))
    with pytest.raises(DataError, match=rf"{path.name}.*2024"):
        load_data(str(path))
    if fmt != "jsonl":  # the feature files through the CLI as well
        result = runner.invoke(app, ["fit", "--source", str(path), "--backbone", "mlp", "--epochs", "1",
                                     "--output-dir", str(tmp_path / "runs"), "--no-progress"])
        assert result.exit_code == 2 and "2024" in result.output and not (tmp_path / "runs").exists()

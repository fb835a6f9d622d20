from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from transferkit.data import images
from transferkit.data.images import load_image_folder
from transferkit.errors import DataError


def _save(path: Path, mode: str = "RGB", size: tuple[int, int] = (12, 10), seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    channels = {"L": None, "RGB": 3, "RGBA": 4}[mode]
    shape = (size[1], size[0]) if channels is None else (size[1], size[0], channels)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """hymenoptera-like: train/{ants,bees,wasps}, val/{ants,bees}; grey, RGB and RGBA mixed."""
    root = tmp_path / "hymenoptera"
    _save(root / "train/ants/a1.jpg", "RGB")
    _save(root / "train/ants/a2.png", "L")
    _save(root / "train/ants/A3.JPG", "RGB")
    _save(root / "train/bees/b1.png", "RGBA")
    _save(root / "train/bees/b2.jpeg", "L")
    _save(root / "train/wasps/w1.bmp", "RGB")
    _save(root / "val/ants/a9.png", "RGBA")
    _save(root / "val/bees/b9.jpg", "L")
    (root / "train/ants/.DS_Store").write_bytes(b"junk")
    (root / "train/ants/notes.txt").write_text("not an image")
    _save(root / "train/ants/.hidden.jpg")
    (root / ".cache").mkdir()
    return root


def test_reads_train_split_with_mixed_modes(tree: Path) -> None:
    ds = load_image_folder(tree)
    assert ds.kind == "image"
    assert ds.domain == "hymenoptera"
    assert ds.classes == ["ants", "bees", "wasps"]
    assert len(ds) == 6
    assert ds.class_counts() == {"ants": 3, "bees": 2, "wasps": 1}
    assert all(isinstance(p, str) and Path(p).is_file() for p in ds.inputs)
    assert not any(Path(p).name.startswith(".") for p in ds.inputs)
    for i in range(len(ds)):
        assert ds.decode(i).mode == "RGB"
        assert ds[i]["x"].shape == (3, 10, 12)


def test_class_indices_are_shared_across_splits(tree: Path) -> None:
    train = load_image_folder(tree, "train")
    val = load_image_folder(tree, "val")
    assert val.classes == train.classes == ["ants", "bees", "wasps"]
    by_name = {Path(p).name: val.classes[y] for p, y in zip(val.inputs, val.labels, strict=True)}
    assert by_name == {"a9.png": "ants", "b9.jpg": "bees"}


def test_any_split_folder_name_and_all(tree: Path) -> None:
    _save(tree / "test/bees/t1.webp", "RGB")
    test = load_image_folder(tree, "test")
    assert len(test) == 1 and test.classes[test.labels[0]] == "bees"
    assert len(load_image_folder(tree, "all")) == 6 + 2 + 1


def test_flat_tree_of_class_folders(tmp_path: Path) -> None:
    root = tmp_path / "flat"
    _save(root / "cat/1.tif", "RGB")
    _save(root / "cat/2.GIF", "L")
    _save(root / "dog/1.tiff", "RGBA")
    for split in ("train", "all", "val"):
        ds = load_image_folder(root, split)
        assert ds.classes == ["cat", "dog"] and ds.labels.tolist() == [0, 0, 1]


def test_unlabelled_loose_images_do_not_make_a_split_tree_flat(tree: Path) -> None:
    _save(tree / "test/loose.jpg")
    assert load_image_folder(tree, "train").classes == ["ants", "bees", "wasps"]
    with pytest.raises(DataError, match=r"no class folders.*not read"):
        load_image_folder(tree, "test")


def test_progress_bar_path(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "PROGRESS_THRESHOLD", 1)
    assert len(load_image_folder(tree)) == 6


# -- errors ------------------------------------------------------------------------------------
def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope does not exist"):
        load_image_folder(tmp_path / "nope")


def test_root_is_a_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is a file"):
        load_image_folder(_save(tmp_path / "x.png"))


def test_missing_split_lists_existing_splits(tree: Path) -> None:
    with pytest.raises(DataError, match=r"split folder .*test not found; split folders in .*: train, val"):
        load_image_folder(tree, "test")


def test_bad_split_name(tree: Path) -> None:
    with pytest.raises(DataError, match="split must be a folder name"):
        load_image_folder(tree, "../x")


def test_no_class_folders(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no class folders in .*empty"):
        load_image_folder(tmp_path / "empty")


def test_empty_class_folder_is_named(tree: Path) -> None:
    (tree / "val/wasps").mkdir()
    (tree / "val/wasps/readme.txt").write_text("no images")
    with pytest.raises(DataError, match=r"class folder .*val/wasps holds no images"):
        load_image_folder(tree, "val")
    assert len(load_image_folder(tree, "train")) == 6  # the empty folder is in val only


def test_all_corrupt_files_reported_in_one_error(tree: Path) -> None:
    good = _save(tree / "train/bees/big.jpg", size=(64, 64), seed=3)
    data = good.read_bytes()
    (tree / "train/bees/truncated.jpg").write_bytes(data[: len(data) // 2])
    (tree / "train/ants/zero.png").write_bytes(b"")
    (tree / "train/wasps/text.jpg").write_text("this is not a jpeg\n")
    with pytest.raises(DataError) as err:
        load_image_folder(tree)
    msg = str(err.value)
    assert msg.startswith("3 of 10 image files cannot be read")
    for name in ("truncated.jpg", "zero.png", "text.jpg"):
        assert name in msg
    assert "truncated" in msg.lower()
    assert len(load_image_folder(tree, verify=False)) == 10


def test_truncated_images_stay_errors_when_pil_allows_them(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = _save(tree / "train/bees/big.jpg", size=(64, 64), seed=3)
    data = good.read_bytes()
    (tree / "train/bees/truncated.jpg").write_bytes(data[: len(data) // 2])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(DataError, match=r"(?s)1 of 8 .*truncated\.jpg"):
        load_image_folder(tree)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is restored


def test_error_lists_first_ten_and_counts_the_rest(tmp_path: Path) -> None:
    root = tmp_path / "bad"
    for i in range(12):
        (root / "c").mkdir(parents=True, exist_ok=True)
        (root / "c" / f"{i:02d}.png").write_bytes(b"garbage")
    with pytest.raises(DataError) as err:
        load_image_folder(root)
    msg = str(err.value)
    assert "12 of 12" in msg and "... and 2 more" in msg
    assert "09.png" in msg and "10.png" not in msg


def test_decompression_bomb_warning_is_an_error(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 12x10 = 120 pixels: a warning, not yet PIL's error
    with pytest.raises(DataError, match="DecompressionBomb"):
        load_image_folder(tree)


def test_training_transform_draws_random_views_evaluation_stays_fixed(tree: Path) -> None:
    from transferkit.data.images import training_transform
    from transferkit.models.backbones import create_backbone

    bb = create_backbone("torchvision:mobilenet_v2", image_size=32)
    ds = load_image_folder(tree, "train")
    img = ds.decode(0)
    tf = training_transform(bb, min_scale=0.2)
    torch.manual_seed(0)
    views = [tf(img) for _ in range(4)]
    assert all(v.shape == (3, 32, 32) for v in views)
    assert any(not torch.equal(views[0], v) for v in views[1:])  # random crops / flips
    assert torch.equal(bb.transform(img), bb.transform(img))
    assert "RandomResizedCrop" in repr(tf) and "scale=(0.2, 1.0)" in repr(tf)


def test_augment_needs_an_image_backbone_with_a_data_config(tree: Path, tmp_path: Path) -> None:
    from transferkit.config import parse_config
    from transferkit.errors import ConfigError
    from transferkit.experiment import fit

    cfg = parse_config({"name": "aug", "output_dir": str(tmp_path / "runs"), "data": {"source": str(tree),
                        "augment": True, "val_fraction": 0.0, "eval_split": "val"}, "model": {"backbone": "lenet"}})
    with pytest.raises(ConfigError, match=r"data\.augment needs an image backbone from timm or torchvision"):
        fit(cfg, progress=False)
    assert not (tmp_path / "runs" / "aug").exists()
    probe = cfg.model_copy(update={"finetune": cfg.finetune.model_copy(update={"strategy": "linear-probe"}),
                                   "model": cfg.model.model_copy(update={"backbone": "torchvision:mobilenet_v2"})})
    with pytest.raises(ConfigError, match=r"no effect with finetune\.strategy 'linear-probe'"):
        fit(probe, progress=False)

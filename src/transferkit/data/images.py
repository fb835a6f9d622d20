"""Image folders laid out like the PyTorch transfer-learning tutorial (``hymenoptera_data``).

Two layouts are read::

    root/train/<class>/*.jpg        root/<class>/*.jpg
    root/val/<class>/*.jpg          (no split folders: one class folder per class)

Any split folder name works (``train``, ``val``, ``test``, ...). Class indices are the sorted union of the
class folder names of *all* split folders, so ``train`` and ``val`` share them even when a split lacks a
class. Only files directly inside a class folder are read; hidden files and files with other extensions are
ignored.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile

from transferkit.data.domain import DomainDataset, bad_files_error, image_as_rgb
from transferkit.data.pixels import EnsureMode
from transferkit.errors import ConfigError, DataError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
ALL_SPLITS = "all"
PROGRESS_THRESHOLD = 200  # a progress bar while verifying more images than this
_MAX_LISTED = 10  # bad files named in one error
_IGNORED_DIRS = frozenset({"__MACOSX", "__pycache__"})


def load_image_folder(root: str | Path, split: str = "train", verify: bool = True) -> DomainDataset:
    """Read an image folder tree as a labelled :class:`DomainDataset` of file paths.

    Args:
        root: the folder holding split folders (``train/``, ``val/``, ...) or class folders directly.
        split: the split folder to read. ``"all"`` reads every split folder (or, in a tree without split
            folders, the class folders at the root). A tree without split folders is read whole for any
            split name.
        verify: decode every image once now, so a corrupt file fails here (all of them listed in one
            error) instead of in the middle of training.

    Returns:
        A dataset with ``inputs`` a list of file paths (str), ``kind="image"``, ``domain`` the root folder's
        name and ``classes`` the sorted class folder names.

    Raises:
        DataError: the root or split folder is missing, there are no class folders, a class folder holds no
            images, or (with ``verify``) some files are not readable images.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(
            f"image folder {root} does not exist; pass the folder that holds train/<class>/ and val/<class>/ "
            "(or one folder per class)"
        )
    if not root.is_dir():
        raise DataError(f"image folder {root} is a file, not a folder; pass the folder that holds the class folders")
    if not split or split in (".", "..") or "/" in split or "\\" in split:
        raise DataError(f"split must be a folder name such as 'train', 'val' or 'all'; got {split!r}")

    top = _subdirs(root)
    if not top:
        raise DataError(
            f"no class folders in {root}: put the images in {root}/train/<class>/*.jpg and {root}/val/<class>/*.jpg, "
            f"or in {root}/<class>/*.jpg"
        )

    layout, classes, split_dirs = _split_folders(root, top, split)
    paths, labels = _labelled_files(split_dirs, {name: i for i, name in enumerate(classes)})

    if verify:
        verify_images(paths)

    return DomainDataset(
        inputs=paths,
        labels=np.asarray(labels, dtype=np.int64),
        domain=root.resolve().name or str(root),
        classes=classes,
        kind="image",
        meta={"root": str(root), "split": split, "layout": layout},
    )


def _split_folders(root: Path, top: list[Path], split: str) -> tuple[str, list[str], list[Path]]:
    """The tree's layout ("splits": split/class/, or "classes": class/), its sorted class names, and the folders
    to read for ``split``."""
    if not _is_split_layout(top):
        return "classes", [d.name for d in top], [root]
    classes = sorted({d.name for split_dir in top for d in _subdirs(split_dir)})
    if split == ALL_SPLITS:
        return "splits", classes, top
    split_dir = root / split
    if not split_dir.is_dir() or split_dir not in top:
        names = ", ".join(d.name for d in top)
        raise DataError(
            f"split folder {split_dir} not found; split folders in {root}: {names} "
            f"(pass one of them as the split, or split='all')"
        )
    return "splits", classes, [split_dir]


def _labelled_files(split_dirs: list[Path], index: dict[str, int]) -> tuple[list[str], list[int]]:
    """Every image under ``split_dirs/<class>/`` and its class index; an empty class folder is an error."""
    paths: list[str] = []
    labels: list[int] = []
    for split_dir in split_dirs:
        class_dirs = _subdirs(split_dir)
        if not class_dirs:
            loose = " (images lying directly in it are not read: they have no class)" if _image_files(split_dir) else ""
            raise DataError(
                f"no class folders in {split_dir}{loose}: put each class's images in its own subfolder, "
                f"e.g. {split_dir}/<class>/image.jpg"
            )
        for class_dir in class_dirs:
            files = _image_files(class_dir)
            if not files:
                raise DataError(_empty_class_message(class_dir))
            paths.extend(str(f) for f in files)
            labels.extend([index[class_dir.name]] * len(files))
    return paths, labels


def verify_images(paths: list[str] | list[Path]) -> None:
    """Fully decode every image once; raise one :class:`DataError` listing all unreadable files.

    Truncated files are errors (PIL's ``LOAD_TRUNCATED_IMAGES`` is switched off while checking) and so are
    decompression bombs (PIL's ``DecompressionBombWarning`` is raised as an error).
    """
    bad: list[tuple[str, str]] = []
    saved = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            for path in _progress(paths):
                reason = _decode_error(Path(path))
                if reason is not None:
                    bad.append((str(path), reason))
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = saved
    if bad:
        raise bad_files_error(bad, len(paths), "image files cannot be read (corrupt, truncated or not an image)",
                              "remove or replace these files (or re-download the data set), then run again",
                              _MAX_LISTED)


# -- helpers -----------------------------------------------------------------------------------
def _visible(path: Path) -> bool:
    return not path.name.startswith(".") and path.name not in _IGNORED_DIRS


def _subdirs(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and _visible(p)), key=lambda p: p.name)


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        (p for p in folder.iterdir() if p.is_file() and _visible(p) and p.suffix.lower() in IMAGE_EXTENSIONS),
        key=lambda p: p.name,
    )


def _is_split_layout(top: list[Path]) -> bool:
    """Split folders hold class folders (``root/*/*/image``); class folders hold images (``root/*/image``)."""
    if any(_image_files(c) for d in top for c in _subdirs(d)):
        return True  # a stray root/test/*.jpg (unlabelled Kaggle-style test set) does not make it flat
    if any(_image_files(d) for d in top):
        return False
    return any(_subdirs(d) for d in top)  # all class folders empty: report the empty one, not the layout


def _empty_class_message(class_dir: Path) -> str:
    extensions = " ".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))
    hint = f"put its images there (extensions: {extensions}) or delete the folder"
    nested = _subdirs(class_dir)
    if nested:
        hint += f"; images in its subfolders ({', '.join(d.name for d in nested[:5])}) are not read"
    return f"class folder {class_dir} holds no images: {hint}"


def _decode_error(path: Path) -> str | None:
    try:
        with Image.open(path) as im:
            im.load()
            image_as_rgb(im, path)  # pixels of a depth or range that cannot be read faithfully
    except Exception as exc:  # any failure to decode means the file is unusable
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return None


def _progress(paths: list[str] | list[Path]):
    if len(paths) <= PROGRESS_THRESHOLD:
        yield from paths
        return
    from rich.console import Console
    from rich.progress import track

    yield from track(paths, description="Checking images", console=Console(stderr=True), transient=True)


def training_transform(backbone: Any, min_scale: float = 0.08) -> Any:
    """timm's training preprocessing for ``backbone``: RandomResizedCrop (area ``min_scale``..1), horizontal flip,
    then the backbone's own normalisation; the evaluation transform stays resize + centre crop.

    Raises:
        ConfigError: the backbone has no image data config (a built-in or non-image backbone).
    """
    from timm.data import create_transform

    cfg = getattr(backbone, "data_config", None)
    if cfg is None:
        raise ConfigError(
            f"data.augment needs an image backbone from timm or torchvision (it builds timm's training transform "
            f"from the backbone's input size and normalisation); {backbone.spec!r} has none: set data.augment=false"
        )
    from torchvision import transforms as T

    tf = create_transform(**cfg, is_training=True, scale=(min_scale, 1.0), hflip=0.5, color_jitter=None,
                          auto_augment=None)
    return T.Compose([EnsureMode("RGB" if cfg["input_size"][0] == 3 else "L"), tf])

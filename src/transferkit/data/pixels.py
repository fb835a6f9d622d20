"""Pixels read faithfully: any image file or array as 8-bit RGB, rescaled from its own range rather than clipped.

Apart from :mod:`transferkit.data.domain` so that the image modality's decoder
(:mod:`transferkit.data.modality`) does not import the dataset type back. :class:`EnsureMode`, the colour-mode step
of every image backbone's transform, lives here too, so that ``data.images`` does not import ``models``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from transferkit.errors import DataError


def array_to_pil(arr: np.ndarray) -> Image.Image:
    if arr.dtype != np.uint8:
        arr = to_uint8(arr, "an image array")
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    return Image.fromarray(arr)


def to_uint8(arr: np.ndarray, what: str) -> np.ndarray:
    """Pixels as 8 bits, rescaled from their own range rather than clipped: 16-bit (0..65535) and float images
    (0..1, or 0..255) keep their contrast. Anything else is refused, naming ``what``: a silent clip turned a 16-bit
    grey PNG almost white and a float TIFF black, and both trained without a word."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype.kind in "iub":
        lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
        if lo < 0 or hi > 65535:
            raise DataError(f"{what}: integer pixels range {lo}..{hi}, outside 8 and 16 bits; save it as 8- or "
                            "16-bit, or scale it to 0..1 floats")
        top = 65535.0 if arr.dtype.itemsize >= 2 and (arr.dtype == np.uint16 or hi > 255) else 255.0
        return np.rint(arr.astype(np.float64) * (255.0 / top)).astype(np.uint8)
    if arr.dtype.kind == "f":
        if arr.size and not np.isfinite(arr).all():
            raise DataError(f"{what}: float pixels include NaN or infinity")
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
        if lo >= 0.0 and hi <= 1.0:
            scale = 255.0
        elif lo >= 0.0 and hi <= 255.0:
            scale = 1.0
        else:
            raise DataError(f"{what}: float pixels range {lo:.4g}..{hi:.4g}; transferkit reads float images in 0..1 "
                            "(or 0..255): rescale it")
        return np.clip(np.rint(arr.astype(np.float64) * scale), 0, 255).astype(np.uint8)
    raise DataError(f"{what}: pixels of type {arr.dtype} cannot be read as an image")


# PIL modes of more than 8 bits per channel: read as arrays and rescaled (convert("RGB") would clip them)
_DEEP_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def image_as_rgb(im: Image.Image, path: Path | str) -> Image.Image:
    """An opened image as 8-bit RGB whatever its mode (grey, palette, RGBA, CMYK, 16-bit, float)."""
    if im.mode in _DEEP_MODES:
        grey = to_uint8(np.asarray(im), f"image {path} (mode {im.mode})")
        return Image.fromarray(grey, "L").convert("RGB")
    return im.convert("RGB")


def open_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            return image_as_rgb(im, path)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"cannot read image {path}: {exc}") from exc


# -- paired source/target iteration ------------------------------------------------------------


class EnsureMode:
    """Convert a PIL image to the colour mode the backbone expects (grey digits into an RGB model)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(self, img: Any) -> Any:
        return img.convert(self.mode) if hasattr(img, "convert") and img.mode != self.mode else img

    def __repr__(self) -> str:
        return f"EnsureMode({self.mode!r})"

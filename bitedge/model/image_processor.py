"""`BitImageProcessor`: BiT preprocessing with transformers' fields, defaults and order of operations.

convert RGB (alpha composited onto white) -> resize the shortest edge (aspect kept, PIL resample) -> center
crop (floor offsets; zero pad if too small) -> rescale (float64 multiply, then float32) -> normalize
(float32) -> CHW. Matches transformers' PIL backend (`BitImageProcessorPil`) to float32 rounding.

One deliberate difference: 16-bit and 32-bit images (PIL modes ``I;16*``, ``I``, ``F``) are scaled to 8 bits
before RGB conversion; transformers lets PIL clip them at 255, which turns most 16-bit photos white.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bitedge.errors import ConfigError, ImageError
from bitedge.fileio import read_json_object, write_json
from bitedge.limits import check_image_size

PROCESSOR_NAME = "preprocessor_config.json"
OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
RESAMPLE_NAMES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}

ImageInput = str | Path | Image.Image | np.ndarray


@dataclass
class BitImageProcessor:
    """Turns images into the ``pixel_values`` a BiT model takes, ``(N, 3, crop_h, crop_w)`` float32.

    Defaults are transformers' class defaults (224 bicubic, CLIP mean/std). google/bit-50 uses shortest edge
    448, bilinear, crop 448, mean = std = 0.5: load its ``preprocessor_config.json`` with
    :meth:`from_pretrained`.
    """

    do_resize: bool = True
    size: dict[str, int] = field(default_factory=lambda: {"shortest_edge": 224})
    resample: int = 3
    do_center_crop: bool = True
    crop_size: dict[str, int] = field(default_factory=lambda: {"height": 224, "width": 224})
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: list[float] = field(default_factory=lambda: list(OPENAI_CLIP_MEAN))
    image_std: list[float] = field(default_factory=lambda: list(OPENAI_CLIP_STD))
    do_convert_rgb: bool = True

    def __post_init__(self) -> None:
        self.size = _size_dict("size", self.size, square=False)
        self.crop_size = _size_dict("crop_size", self.crop_size, square=True)
        if self.resample not in RESAMPLE_NAMES:
            raise ConfigError(f"resample must be a PIL filter id 0..5, got {self.resample!r}")
        self.image_mean = _triple("image_mean", self.image_mean)
        self.image_std = _triple("image_std", self.image_std)
        if any(s <= 0 for s in self.image_std):
            raise ConfigError(f"image_std must be positive, got {self.image_std}")

    # --------------------------------------------------------------------------------------------- config I/O
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BitImageProcessor:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_pretrained(cls, path: str | Path) -> BitImageProcessor:
        """Read ``preprocessor_config.json`` from a directory (or the file itself)."""
        return cls.from_dict(read_json_object(path, PROCESSOR_NAME))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "image_processor_type": "BitImageProcessor"}

    def save_pretrained(self, directory: str | Path) -> Path:
        return write_json(directory, PROCESSOR_NAME, self.to_dict())

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the model input this processor produces (needs center crop or a fixed size)."""
        if self.do_center_crop:
            return self.crop_size["height"], self.crop_size["width"]
        if "height" in self.size:
            return self.size["height"], self.size["width"]
        raise ConfigError("input size depends on each image: enable center crop or give size height/width")

    # -------------------------------------------------------------------------------------------- processing
    def __call__(self, images: ImageInput | Sequence[ImageInput], return_tensors: str | None = "np") -> dict[str, Any]:
        """Preprocess one image or a list; returns ``{"pixel_values": array or tensor (N, 3, H, W)}``."""
        batch = [images] if isinstance(images, str | Path | Image.Image | np.ndarray) else list(images)
        arrays = [self.preprocess_one(img) for img in batch]
        if return_tensors in (None, "np"):
            pixel_values: Any = np.stack(arrays) if return_tensors else arrays
        elif return_tensors == "pt":
            import torch

            pixel_values = torch.from_numpy(np.stack(arrays))
        else:
            raise ConfigError(f"return_tensors must be 'np', 'pt' or None, got {return_tensors!r}")
        return {"pixel_values": pixel_values}

    preprocess = __call__

    def preprocess_one(self, image: ImageInput) -> np.ndarray:
        """One image -> (3, H, W) float32 (uint8 if neither rescale nor normalize is on)."""
        rgb = to_rgb_array(image) if self.do_convert_rgb else _as_hwc(image)  # (H, W, C) uint8
        if self.do_resize:
            rgb = self._resize(rgb)
        chw = np.moveaxis(rgb, -1, 0)
        if self.do_center_crop:
            chw = center_crop(chw, self.crop_size["height"], self.crop_size["width"])
        out: np.ndarray = chw
        if self.do_rescale:
            out = (out.astype(np.float64) * self.rescale_factor).astype(np.float32)
        if self.do_normalize:
            out = out.astype(np.float32) if not np.issubdtype(out.dtype, np.floating) else out
            mean = np.asarray(self.image_mean, dtype=out.dtype)[:, None, None]
            std = np.asarray(self.image_std, dtype=out.dtype)[:, None, None]
            out = (out - mean) / std
        return out

    def _resize(self, rgb: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]
        if "shortest_edge" in self.size:
            short, long = (w, h) if w <= h else (h, w)
            edge = self.size["shortest_edge"]
            new_long = int(edge * long / short)
            new_h, new_w = (new_long, edge) if w <= h else (edge, new_long)
        else:
            new_h, new_w = self.size["height"], self.size["width"]
        if new_h * new_w > MAX_RESIZED_PIXELS:  # an extreme aspect ratio: resizing the short edge up explodes it
            raise ImageError(
                f"a {w}x{h} image resizes to {new_w}x{new_h} before the center crop, past the "
                f"{MAX_RESIZED_PIXELS:,}-pixel limit; crop it to a less extreme aspect ratio first"
            )
        resized = Image.fromarray(rgb).resize((new_w, new_h), resample=Image.Resampling(self.resample))
        return np.asarray(resized)


# Largest intermediate (resized, before the crop) image preprocessing will build: PIL's own bomb limit
MAX_RESIZED_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485


def center_crop(chw: np.ndarray, height: int, width: int) -> np.ndarray:
    """Crop (C, H, W) to (C, height, width) at offset floor((H - height) / 2); zero pad when too small."""
    _, h, w = chw.shape
    if h < height or w < width:
        new_h, new_w = max(h, height), max(w, width)
        padded = np.zeros((chw.shape[0], new_h, new_w), dtype=chw.dtype)
        top, left = -(-(new_h - h) // 2), -(-(new_w - w) // 2)  # ceil, as transformers
        padded[:, top : top + h, left : left + w] = chw
        chw, h, w = padded, new_h, new_w
    top, left = (h - height) // 2, (w - width) // 2
    return chw[:, top : top + height, left : left + width]


def open_image(path: str | Path) -> Image.Image:
    """Open and fully decode an image file, turning every failure into an :class:`ImageError`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{path}: refused as a possible decompression bomb ({exc})") from None
    except FileNotFoundError:
        raise ImageError(f"{path}: no such image file") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{path}: not a readable image ({exc}); check the file or remove it") from None
    return image


def error_at(path: str | Path, exc: ImageError) -> str:
    """The message of ``exc`` naming the file it is about (once)."""
    text = str(exc)
    return text if text.startswith(str(path)) else f"{path}: {text}"


def to_rgb_array(image: ImageInput) -> np.ndarray:
    """Any supported image -> (H, W, 3) uint8 RGB, compositing transparency onto white."""
    if isinstance(image, str | Path):
        image = open_image(image)
    if isinstance(image, Image.Image):
        image = _to_8bit(image)
        if "A" in image.getbands() or image.info.get("transparency") is not None:
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
        return np.asarray(image.convert("RGB"))
    hwc = _as_hwc(image)
    if hwc.shape[-1] == 1:
        return np.repeat(hwc, 3, axis=-1)
    if hwc.shape[-1] == 4:
        alpha = hwc[..., 3:4] / 255
        composite: np.ndarray = np.round(alpha * hwc[..., :3] + (1 - alpha) * 255).astype(np.uint8)
        return composite
    return hwc


def _as_hwc(image: ImageInput) -> np.ndarray:
    if isinstance(image, str | Path):
        image = open_image(image)
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise ImageError(f"expected an (H, W), (H, W, 1|3|4) image array, got shape {array.shape}")
    if array.dtype != np.uint8:
        raise ImageError(f"image arrays must be uint8 (0..255), got {array.dtype}; pass a PIL image instead")
    return array


def _to_8bit(image: Image.Image) -> Image.Image:
    """Scale 16/32-bit integer and float images to 8 bits (PIL would clip them)."""
    if image.mode.startswith("I;16") or image.mode == "I":
        array = np.asarray(image).astype(np.float64)
        scale = 257.0 if image.mode.startswith("I;16") or array.max() > 255 else 1.0
        return Image.fromarray(np.clip(np.round(array / scale), 0, 255).astype(np.uint8))
    if image.mode == "F":
        array = np.asarray(image).astype(np.float64)
        array = array * 255 if array.size and array.max() <= 1.0 else array
        return Image.fromarray(np.clip(np.round(array), 0, 255).astype(np.uint8))
    return image


def _size_dict(name: str, value: Any, *, square: bool) -> dict[str, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = {"height": value, "width": value} if square else {"shortest_edge": value}
    if not isinstance(value, dict):
        raise ConfigError(f"{name} must be an int or a dict, got {value!r}")
    keys = set(value)
    if keys not in ({"shortest_edge"}, {"height", "width"}):
        raise ConfigError(f"{name} must have 'shortest_edge' or 'height' and 'width', got {sorted(keys)}")
    for k, v in value.items():
        if isinstance(v, bool) or not isinstance(v, int) or not 0 < v <= 16384:
            raise ConfigError(f"{name}.{k} must be an integer in 1..16384, got {v!r}")
    return dict(value)


def _triple(name: str, value: Any) -> list[float]:
    values = [value] * 3 if isinstance(value, int | float) else value
    if not isinstance(values, list | tuple) or len(values) != 3:
        raise ConfigError(f"{name} must be a number or a list of 3 numbers, got {value!r}")
    return [float(v) for v in values]


def resolve_processor(processor: BitImageProcessor | None, image_size: int | None) -> BitImageProcessor:
    """The checkpoint's preprocessing (BiT's default when it has none), resized to ``image_size`` if given."""
    if processor is None:
        processor = BitImageProcessor(resample=2, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    if image_size is not None:
        processor = replace(
            processor, size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
        )
    check_image_size(processor.input_size, "--image-size" if image_size else "the checkpoint's preprocessing")
    return processor

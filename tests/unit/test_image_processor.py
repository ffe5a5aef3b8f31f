"""BitImageProcessor against transformers' PIL processor, on real photos that scikit-image ships."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import skimage
from conftest import assert_close
from PIL import Image

from bitedge import BitImageProcessor
from bitedge.errors import ConfigError, ImageError

BIT_50 = dict(
    size={"shortest_edge": 448},
    resample=2,
    crop_size={"height": 448, "width": 448},
    image_mean=[0.5, 0.5, 0.5],
    image_std=[0.5, 0.5, 0.5],
)
SKIMAGE_DATA = Path(skimage.__file__).parent / "data"


def _oracle(**kwargs: object):  # type: ignore[no-untyped-def]
    from transformers import BitImageProcessorPil

    return BitImageProcessorPil(**kwargs)


def _variants(photos: dict[str, Image.Image]) -> dict[str, Image.Image]:
    """The photos plus the PIL modes users feed: translucent RGBA, palette, CMYK."""
    astronaut = photos["astronaut"]
    yy, xx = np.mgrid[0:512, 0:512]
    alpha = np.clip(255 - np.hypot(yy - 256, xx - 256), 0, 255).astype(np.uint8)  # opaque centre, clear rim
    translucent = astronaut.copy()
    translucent.putalpha(Image.fromarray(alpha))
    return {
        **photos,
        "translucent": translucent,
        "palette": photos["coffee"].quantize(64),
        "cmyk": photos["coffee"].convert("CMYK"),
    }


@pytest.mark.parametrize("settings", [{}, BIT_50], ids=["class-defaults", "google-bit-50"])
def test_matches_transformers_on_real_photos(photos: dict[str, Image.Image], settings: dict[str, object]) -> None:
    ours, theirs = BitImageProcessor(**settings), _oracle(**settings)  # type: ignore[arg-type]
    for name, image in _variants(photos).items():
        expected = theirs(image, return_tensors="np")["pixel_values"]
        got = ours(image, return_tensors="np")["pixel_values"]
        assert got.dtype == np.float32, name
        assert_close(got, expected)


def test_defaults_are_transformers_class_defaults() -> None:
    oracle, ours = _oracle(), BitImageProcessor()
    assert ours.size == {"shortest_edge": oracle.size["shortest_edge"]}
    assert ours.resample == int(oracle.resample)
    assert ours.crop_size == {"height": 224, "width": 224}
    assert np.allclose(ours.image_mean, oracle.image_mean) and np.allclose(ours.image_std, oracle.image_std)


def test_file_paths_arrays_and_pil_agree(photos: dict[str, Image.Image], tmp_path: Path) -> None:
    proc = BitImageProcessor(**BIT_50)  # type: ignore[arg-type]
    path = tmp_path / "coffee.png"
    photos["coffee"].save(path)
    from_path = proc(str(path))["pixel_values"]
    from_pil = proc(photos["coffee"])["pixel_values"]
    from_array = proc(np.asarray(photos["coffee"]))["pixel_values"]
    assert_close(from_path, from_pil, atol=0)
    assert_close(from_array, from_pil, atol=0)


def test_animated_gif_from_disk_uses_first_frame() -> None:
    gif = SKIMAGE_DATA / "no_time_for_that_tiny.gif"
    ours = BitImageProcessor()(gif)["pixel_values"]
    expected = _oracle()(Image.open(gif), return_tensors="np")["pixel_values"]
    assert_close(ours, expected)


def test_batch_and_torch_output(photos: dict[str, Image.Image]) -> None:
    import torch

    out = BitImageProcessor(**BIT_50)([photos["camera"], photos["astronaut"]], return_tensors="pt")  # type: ignore[arg-type]
    assert isinstance(out["pixel_values"], torch.Tensor)
    assert out["pixel_values"].shape == (2, 3, 448, 448)


def test_sixteen_bit_images_are_scaled_not_clipped(photos: dict[str, Image.Image]) -> None:
    gray8 = np.asarray(photos["camera"])
    gray16 = Image.fromarray(gray8.astype(np.uint16) * 257)  # same picture in 16 bits
    assert gray16.mode.startswith("I;16")
    proc = BitImageProcessor()
    assert_close(proc(gray16)["pixel_values"], proc(photos["camera"])["pixel_values"], atol=0)


def test_small_images_are_zero_padded_like_transformers() -> None:
    image = Image.fromarray(np.full((10, 30, 3), 200, np.uint8))
    settings = dict(do_resize=False, crop_size={"height": 16, "width": 16})
    assert_close(
        BitImageProcessor(**settings)(image)["pixel_values"],
        _oracle(**settings)(image, return_tensors="np")["pixel_values"],
    )  # type: ignore[arg-type]


def test_round_trip_through_preprocessor_config(tmp_path: Path) -> None:
    BitImageProcessor(**BIT_50).save_pretrained(tmp_path)  # type: ignore[arg-type]
    again = BitImageProcessor.from_pretrained(tmp_path)
    assert again == BitImageProcessor(**BIT_50)  # type: ignore[arg-type]
    from transformers import BitImageProcessorPil

    theirs = BitImageProcessorPil.from_pretrained(tmp_path)  # transformers reads the file we wrote
    assert theirs.crop_size["height"] == 448 and int(theirs.resample) == 2


@pytest.mark.parametrize(
    "content",
    [b"", b"not an image at all", None],
    ids=["empty", "text", "truncated-png"],
)
def test_unreadable_images_raise_image_error(
    photos: dict[str, Image.Image], tmp_path: Path, content: bytes | None
) -> None:
    path = tmp_path / "bad.png"
    if content is None:
        photos["astronaut"].save(path)
        content = path.read_bytes()[:2000]
    path.write_bytes(content)
    with pytest.raises(ImageError, match=r"bad\.png"):
        BitImageProcessor()(path)


def test_bad_settings_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="image_std"):
        BitImageProcessor(image_std=[0.5, 0.0, 0.5])
    with pytest.raises(ConfigError, match="crop_size"):
        BitImageProcessor(crop_size={"h": 3})

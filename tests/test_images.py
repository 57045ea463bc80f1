"""images.load_rgb: every image mode becomes (H, W, 3) uint8; every broken file becomes an ImageError
that names the path."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lora_harness.core.images import ImageError, load_rgb


def save(tmp_path: Path, image: Image.Image, name: str = "img.png", **kwargs) -> Path:
    path = tmp_path / name
    image.save(path, **kwargs)
    return path


def assert_rgb(array: np.ndarray, height: int, width: int) -> None:
    assert array.shape == (height, width, 3)
    assert array.dtype == np.uint8


def test_rgb_png_round_trips_exactly(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    array = load_rgb(save(tmp_path, Image.fromarray(pixels)))
    assert_rgb(array, 5, 7)
    np.testing.assert_array_equal(array, pixels)


@pytest.mark.parametrize(("suffix", "fmt"), [(".jpg", "JPEG"), (".jpeg", "JPEG"), (".webp", "WEBP")])
def test_lossy_formats_decode(tmp_path, suffix, fmt):
    pixels = np.full((16, 24, 3), (200, 100, 50), dtype=np.uint8)
    array = load_rgb(save(tmp_path, Image.fromarray(pixels), f"img{suffix}", format=fmt, quality=95))
    assert_rgb(array, 16, 24)
    assert np.abs(array.astype(int) - pixels).max() <= 6


def test_grayscale_l_is_repeated_into_three_channels(tmp_path):
    grey = np.array([[0, 64], [128, 255]], dtype=np.uint8)
    array = load_rgb(save(tmp_path, Image.fromarray(grey, mode="L")))
    assert_rgb(array, 2, 2)
    for channel in range(3):
        np.testing.assert_array_equal(array[..., channel], grey)


def test_rgba_is_composited_on_white(tmp_path):
    rgba = np.array(
        [[[0, 0, 0, 0], [10, 20, 30, 255]], [[0, 0, 0, 128], [255, 0, 0, 0]]],
        dtype=np.uint8,
    )
    array = load_rgb(save(tmp_path, Image.fromarray(rgba, mode="RGBA")))
    assert_rgb(array, 2, 2)
    np.testing.assert_array_equal(array[0, 0], [255, 255, 255])  # fully transparent black -> white
    np.testing.assert_array_equal(array[1, 1], [255, 255, 255])  # fully transparent red -> white
    np.testing.assert_array_equal(array[0, 1], [10, 20, 30])  # opaque: unchanged
    assert np.all(np.abs(array[1, 0].astype(int) - 127) <= 1)  # half-transparent black -> mid grey


def test_la_is_composited_on_white(tmp_path):
    la = Image.merge("LA", [Image.new("L", (3, 1), 0), Image.frombytes("L", (3, 1), bytes([0, 255, 0]))])
    array = load_rgb(save(tmp_path, la))
    assert_rgb(array, 1, 3)
    np.testing.assert_array_equal(array[0, :, 0], [255, 0, 255])


def test_16_bit_grey_is_scaled_to_8_bit(tmp_path):
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    image = Image.fromarray(values)
    assert image.mode.startswith("I;16")
    path = save(tmp_path, image)
    with Image.open(path) as reopened:
        assert reopened.mode in ("I;16", "I")
    array = load_rgb(path)
    assert_rgb(array, 1, 4)
    np.testing.assert_array_equal(array[0, :, 0], [0, 1, 128, 255])


def test_dark_16_bit_image_stays_dark(tmp_path):
    """Values up to 255 of 65535 are near-black, not an 8-bit image in disguise."""
    values = np.array([[0, 100, 255]], dtype=np.uint16)
    array = load_rgb(save(tmp_path, Image.fromarray(values)))
    assert array.max() <= 1


def test_32_bit_int_with_8_bit_values_is_taken_as_8_bit(tmp_path):
    image = Image.fromarray(np.array([[0, 100, 255]], dtype=np.int32), mode="I")
    path = save(tmp_path, image, "img.tiff")  # PNG cannot hold mode I; TIFF keeps it
    with Image.open(path) as reopened:
        assert reopened.mode == "I"
    array = load_rgb(path)
    np.testing.assert_array_equal(array[0, :, 1], [0, 100, 255])


def test_palette_image_is_expanded(tmp_path):
    image = Image.new("P", (2, 1))
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))
    image.putdata([0, 1])
    array = load_rgb(save(tmp_path, image))
    assert_rgb(array, 1, 2)
    np.testing.assert_array_equal(array[0], [[255, 0, 0], [0, 0, 255]])


def test_palette_with_transparency_is_composited_on_white(tmp_path):
    image = Image.new("P", (2, 1))
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))
    image.putdata([0, 1])
    image.info["transparency"] = 0
    path = save(tmp_path, image, transparency=0)
    array = load_rgb(path)
    np.testing.assert_array_equal(array[0], [[255, 255, 255], [0, 0, 255]])


def test_bilevel_and_cmyk(tmp_path):
    bilevel = Image.new("1", (2, 2), 1)
    assert_rgb(load_rgb(save(tmp_path, bilevel, "b.png")), 2, 2)
    cmyk = Image.new("CMYK", (3, 2), (0, 0, 0, 0))
    array = load_rgb(save(tmp_path, cmyk, "c.jpg", quality=95))
    assert_rgb(array, 2, 3)
    assert array.min() >= 250  # no ink = white


# --- broken files ----------------------------------------------------------------------------------------


def _png_bytes(size: tuple[int, int] = (64, 64)) -> bytes:
    buffer = io.BytesIO()
    noise = np.random.default_rng(1).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(noise).save(buffer, format="PNG")
    return buffer.getvalue()


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="not found") as info:
        load_rgb(tmp_path / "gone.png")
    assert str(tmp_path / "gone.png") in str(info.value)


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageError) as info:
        load_rgb(path)
    assert str(path) in str(info.value)
    assert "0 bytes" in str(info.value)
    assert "interrupted" in str(info.value)


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_png(tmp_path, keep):
    data = _png_bytes()
    path = tmp_path / "cut.png"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ImageError) as info:
        load_rgb(path)
    assert str(path) in str(info.value)
    assert "truncated or corrupt" in str(info.value)


def test_png_header_only(tmp_path):
    path = tmp_path / "header.png"
    path.write_bytes(_png_bytes()[:40])
    with pytest.raises(ImageError) as info:
        load_rgb(path)
    assert str(path) in str(info.value)


def test_text_file_with_image_suffix(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not a picture\n")
    with pytest.raises(ImageError) as info:
        load_rgb(path)
    assert str(path) in str(info.value)
    assert "not a readable image" in str(info.value)


def test_image_over_the_pixel_limit_is_refused_before_decoding(tmp_path):
    path = save(tmp_path, Image.new("RGB", (40, 30)))
    with pytest.raises(ImageError) as info:
        load_rgb(path, pixel_limit=1000)
    message = str(info.value)
    assert str(path) in message
    assert "40x30 = 1,200 pixels" in message
    assert "1,000" in message
    assert "run.image_pixel_limit" in message
    assert load_rgb(path, pixel_limit=1200).shape == (30, 40, 3)  # at the limit: allowed


def test_pixel_limit_above_pillows_own_limit_is_honoured(tmp_path, monkeypatch):
    """`run.image_pixel_limit` also sets Pillow's MAX_IMAGE_PIXELS, so it can be raised above Pillow's ~89 MP."""
    path = save(tmp_path, Image.new("RGB", (40, 30)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow alone would warn above 1000, refuse above 2000
    assert load_rgb(path, pixel_limit=1200).shape == (30, 40, 3)
    assert Image.MAX_IMAGE_PIXELS == 1200


def _png_header_claiming(tmp_path: Path, width: int, height: int) -> Path:
    """A PNG whose IHDR claims width x height (valid CRC), with one pixel's data: a huge header, tiny file."""
    import struct
    import zlib

    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    path = tmp_path / "huge.png"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("side", [10_000, 40_000])  # Pillow's warning zone (1-2x its limit) and its error zone
def test_huge_header_gets_our_message_not_pillows(tmp_path, monkeypatch, side):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 89_478_485)  # Pillow's default, whatever earlier tests set
    path = _png_header_claiming(tmp_path, side, side)
    with pytest.raises(ImageError) as info:
        load_rgb(path, pixel_limit=50_000_000)
    message = str(info.value)
    assert str(path) in message
    assert "exceeds the limit of 50,000,000" in message
    assert "run.image_pixel_limit" in message
    assert "DOS attack" not in message  # Pillow's wording

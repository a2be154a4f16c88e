"""Image digests: the key under which engines share work for the same image."""

from __future__ import annotations

from PIL import Image

from models.image_digest import image_digest


def test_image_digest_follows_the_pixels_not_the_object():
    red, also_red, blue = (
        Image.new("RGB", (8, 8), "red"),
        Image.new("RGB", (8, 8), "red"),
        Image.new("RGB", (8, 8), "blue"),
    )
    assert image_digest(red) == image_digest(also_red) != image_digest(blue)
    assert image_digest(red) != image_digest(red.convert("L"))
    assert image_digest(red) == image_digest(red)  # cached, same answer

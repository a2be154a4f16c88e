"""Content digests of images: the key under which engines share work done for the same image."""

from __future__ import annotations

import hashlib
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL.Image import Image

# id(image) -> digest, for as long as the image object lives (PIL images are unhashable, and a digest
# kept in `image.info` would be copied onto converted images with other pixels).
_digests: dict[int, str] = {}


def image_digest(image: Image) -> str:
    """A SHA-256 of a PIL image's mode, size and pixels, computed once per image object."""
    digest = _digests.get(id(image))
    if digest is None:
        hasher = hashlib.sha256(f"{image.mode}:{image.size}:".encode())
        hasher.update(image.tobytes())
        digest = _digests[id(image)] = hasher.hexdigest()
        weakref.finalize(image, _digests.pop, id(image), None)
    return digest

"""Turns `image_url` parts into checked PIL images: data URLs always, http(s) only when allowed.

Every failure is the client's (400): bad base64, bytes that are not an image, too many pixels
(decompression bombs are refused from the header, before any pixel is decoded), remote hosts that
resolve to loopback/private/link-local addresses, remote images too large or too slow.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import ipaddress
import socket
import warnings
from urllib.parse import urlsplit

from PIL import Image, UnidentifiedImageError

from server.errors import APIError
from server.settings import ImageLimits


def open_image(data: bytes, limits: ImageLimits, param: str) -> Image.Image:
    """Decode image bytes to RGB after checking the pixel count from the header."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > limits.max_pixels:
                raise APIError(
                    400,
                    f"image is {width}x{height} pixels; the limit is {limits.max_pixels} pixels",
                    param=param,
                    code="image_too_large",
                )
            image.load()
            return image.convert("RGB")
    except APIError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise APIError(400, f"image refused: {exc}", param=param, code="image_too_large") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise APIError(400, "the image data is not a readable image", param=param, code="invalid_image") from exc


def decode_data_url(url: str, limits: ImageLimits, param: str) -> Image.Image:
    header, sep, payload = url.partition(",")
    if not sep or not header.startswith("data:") or not header.endswith(";base64"):
        raise APIError(
            400, "image data URLs must look like data:image/<type>;base64,<data>", param=param, code="invalid_image_url"
        )
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise APIError(400, "the image data URL is not valid base64", param=param, code="invalid_base64") from exc
    return open_image(data, limits, param)


async def _check_host(host: str, port: int, limits: ImageLimits, param: str) -> None:
    """Refuse hosts that resolve to addresses inside this machine or its network (SSRF)."""
    if host in limits.private_hosts_allowed or f"{host}:{port}" in limits.private_hosts_allowed:
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise APIError(400, f"cannot resolve image host {host!r}", param=param, code="invalid_image_url") from exc
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if (
            address.is_loopback
            or address.is_private
            or address.is_link_local
            or address.is_reserved
            or address.is_multicast
            or address.is_unspecified
        ):
            raise APIError(
                400, f"image host {host!r} resolves to a non-public address", param=param, code="image_url_not_allowed"
            )


async def fetch_image(url: str, limits: ImageLimits, param: str) -> Image.Image:
    """Download an http(s) image within the size and time limits (no redirects followed)."""
    import httpx

    parts = urlsplit(url)
    if not parts.hostname:
        raise APIError(400, "the image URL has no host", param=param, code="invalid_image_url")
    await _check_host(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80), limits, param)

    async def download() -> bytes:
        async with (
            httpx.AsyncClient(follow_redirects=False, timeout=limits.remote_timeout_s) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                raise APIError(
                    400, f"fetching the image gave HTTP {response.status_code}", param=param, code="image_fetch_failed"
                )
            declared = int(response.headers.get("content-length") or 0)
            if declared > limits.remote_max_bytes:
                raise _too_big(limits, param)
            chunks, size = [], 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > limits.remote_max_bytes:
                    raise _too_big(limits, param)
                chunks.append(chunk)
            return b"".join(chunks)

    try:
        data = await asyncio.wait_for(download(), timeout=limits.remote_timeout_s)
    except (TimeoutError, httpx.TimeoutException) as exc:
        raise APIError(
            400,
            f"fetching the image took longer than {limits.remote_timeout_s:g} s",
            param=param,
            code="image_fetch_timeout",
        ) from exc
    except httpx.HTTPError as exc:
        raise APIError(400, f"fetching the image failed: {exc}", param=param, code="image_fetch_failed") from exc
    return open_image(data, limits, param)


def _too_big(limits: ImageLimits, param: str) -> APIError:
    return APIError(
        400, f"the remote image is larger than {limits.remote_max_bytes} bytes", param=param, code="image_too_large"
    )


async def load_image(url: str, limits: ImageLimits, param: str) -> Image.Image:
    scheme = url.split(":", 1)[0].lower()
    if scheme == "data":
        # Decoding is CPU work: off the event loop, so other requests keep flowing meanwhile.
        return await asyncio.to_thread(decode_data_url, url, limits, param)
    if scheme in ("http", "https"):
        if not limits.allow_remote:
            raise APIError(
                400,
                "remote image URLs are disabled on this server (send a base64 data URL, "
                "or start it with --allow-remote-images)",
                param=param,
                code="remote_images_disabled",
            )
        return await fetch_image(url, limits, param)
    raise APIError(400, f"unsupported image URL scheme {scheme!r}", param=param, code="invalid_image_url")

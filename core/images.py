"""Images made safe to store and to send to a model: decoded to prove they are images, bounded
in pixels, re-encoded without EXIF (GPS included) or any other metadata.

Pillow is imported on first use: the web process only needs it for a thumbnail.
"""
import io
from dataclasses import dataclass

from django.conf import settings

# What LINE users send (and what Pillow decodes safely); anything else is refused.
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF")
JPEG_QUALITY = 85


class ImageRejected(ValueError):
    """Not an image we keep: `reason` says why, in words fit for a message's error field."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class CleanImage:
    data: bytes
    content_type: str  # image/jpeg or image/png
    width: int
    height: int


def sanitize_image(data: bytes, *, max_pixels: int | None = None, max_side: int | None = None) -> CleanImage:
    """`data` decoded, turned upright, scaled to `max_side`, and re-encoded (PNG when it has
    transparency, else JPEG) from its pixels alone, so no metadata survives."""
    from PIL import Image, ImageOps

    limits = settings.LINEBOT_MEDIA
    max_pixels = max_pixels or limits["MAX_IMAGE_PIXELS"]
    max_side = max_side or limits["MAX_IMAGE_SIDE"]
    image = _open(data, max_pixels=max_pixels)
    try:
        # The first frame of an animation is what a model can read.
        image.seek(0)
        # EXIF orientation is applied to the pixels before EXIF itself goes.
        image = ImageOps.exif_transpose(image)
        has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
        image = image.convert("RGBA" if has_alpha else "RGB")
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageRejected(f"the image could not be decoded ({type(exc).__name__})") from None
    image.thumbnail((max_side, max_side))
    # A new image of the pixels alone: nothing of the original's info (EXIF, XMP, ICC, comments).
    clean = Image.new(image.mode, image.size)
    clean.paste(image)
    buffer = io.BytesIO()
    if has_alpha:
        clean.save(buffer, format="PNG", optimize=True)
        content_type = "image/png"
    else:
        clean.save(buffer, format="JPEG", quality=JPEG_QUALITY)
        content_type = "image/jpeg"
    return CleanImage(buffer.getvalue(), content_type, clean.width, clean.height)


def thumbnail(data: bytes, *, side: int | None = None) -> tuple[bytes, str]:
    """A small JPEG (PNG if transparent) of a stored, already clean image."""
    clean = sanitize_image(data, max_side=side or settings.LINEBOT_MEDIA["THUMBNAIL_SIDE"])
    return clean.data, clean.content_type


def image_content_type(data: bytes) -> str:
    """The content type of `data` as it is (image/jpeg, image/png, image/webp, image/gif), proven
    by decoding it within the pixel limit; ImageRejected when it is not an image we accept."""
    from PIL import Image

    image = _open(data, max_pixels=settings.LINEBOT_MEDIA["MAX_IMAGE_PIXELS"])
    return Image.MIME[image.format]


def _open(data: bytes, *, max_pixels: int):
    from PIL import Image

    if not data:
        raise ImageRejected("the file is empty")
    try:
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except Image.UnidentifiedImageError:
        raise ImageRejected("not an image in a format we accept (JPEG, PNG, WebP, GIF)") from None
    except Image.DecompressionBombError:
        raise ImageRejected(f"the image has more pixels than the limit of {max_pixels}") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageRejected(f"the image could not be read ({type(exc).__name__})") from None
    # Checked from the header, before a single pixel is decoded: a decompression bomb is
    # small on the wire and huge in memory. Pillow's own global limit is left alone.
    width, height = image.size
    if width * height > max_pixels:
        raise ImageRejected(f"the image is {width}×{height} pixels, more than the limit of {max_pixels}")
    try:
        image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageRejected(f"the image could not be decoded ({type(exc).__name__})") from None
    return image

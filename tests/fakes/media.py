"""Photos and voice messages as LINE users send them, made at test time (no binary fixtures).

Images come from Pillow; the M4A is a minimal ISO base media file (an `ftyp` box of brand
"M4A " and an `mdat` box) built here byte by byte: enough for type checks, not for playback.
"""
from __future__ import annotations

import io
import struct
import zlib

# Taipei 101, as a phone would write it into EXIF.
GPS_LATITUDE = (25.0, 2.0, 1.0)
GPS_LONGITUDE = (121.0, 33.0, 54.0)
CAMERA = "FakePhone 15 Pro"


def image_bytes(fmt: str = "JPEG", *, size: tuple[int, int] = (64, 48), color=(200, 30, 30),
                alpha: bool = False, exif: bool = False, orientation: int | None = None) -> bytes:
    """An image in `fmt` (JPEG, PNG, WEBP, GIF); `exif` adds a camera model and GPS position,
    `orientation` the EXIF tag that says how to turn it upright."""
    from PIL import Image

    image = Image.new("RGBA" if alpha else "RGB", size, color + ((128,) if alpha else ()))
    # A marker in one corner, so a test can tell whether the image was turned.
    image.paste((0, 0, 255) + ((255,) if alpha else ()), (0, 0, max(1, size[0] // 4), max(1, size[1] // 4)))
    options = {}
    if exif or orientation:
        data = Image.Exif()
        if exif:
            data[0x0110] = CAMERA  # Model
            data[0x8825] = {1: "N", 2: GPS_LATITUDE, 3: "E", 4: GPS_LONGITUDE}  # GPSInfo
        if orientation:
            data[0x0112] = orientation
        options["exif"] = data.tobytes()
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def animated_gif(frames: int = 3) -> bytes:
    from PIL import Image

    images = [Image.new("RGB", (32, 32), (index * 60, 0, 0)) for index in range(frames)]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=100, loop=0)
    return buffer.getvalue()


def png_bomb(width: int = 50_000, height: int = 50_000) -> bytes:
    """A PNG whose header claims `width`×`height` pixels: a few hundred bytes on the wire,
    gigabytes once decoded (the rows are all zero, so they compress to almost nothing)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    rows = zlib.compress(b"\0" * (1 + (width + 7) // 8) * 16)  # only the first rows; enough for a header read
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def m4a_bytes(payload_size: int = 2048, *, duration_ms: int | None = None) -> bytes:
    """A minimal M4A: `ftyp` (brand "M4A ", compatible M4A/mp42/isom) then `mdat`; with
    `duration_ms`, a `moov` box whose movie header (`mvhd`, version 0) says how long it plays."""
    ftyp_body = b"M4A " + struct.pack(">I", 0) + b"M4A mp42isom"
    ftyp = struct.pack(">I", 8 + len(ftyp_body)) + b"ftyp" + ftyp_body
    mdat = struct.pack(">I", 8 + payload_size) + b"mdat" + bytes(range(256)) * (payload_size // 256) \
        + b"\0" * (payload_size % 256)
    if duration_ms is None:
        return ftyp + mdat
    # version+flags, creation and modification times, timescale (1/44100 s), duration; the rest zero.
    mvhd_body = struct.pack(">IIIII", 0, 0, 0, 44100, duration_ms * 44100 // 1000) + b"\0" * 80
    mvhd = struct.pack(">I", 8 + len(mvhd_body)) + b"mvhd" + mvhd_body
    moov = struct.pack(">I", 8 + len(mvhd)) + b"moov" + mvhd
    return ftyp + moov + mdat

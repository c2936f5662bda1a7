"""Voice messages: LINE sends them as M4A (AAC in an MP4 container). Kept as they are, after
checking that they are one: nothing here decodes audio."""

# ISO base media files open with a box `size (4 bytes) + "ftyp" + major brand`.
_MP4_AUDIO_BRANDS = {b"M4A ", b"mp42", b"isom", b"mp41", b"M4B ", b"iso2", b"dash"}


class AudioRejected(ValueError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def audio_content_type(data: bytes) -> str:
    """The content type of a voice message LINE sent, or AudioRejected when it is not M4A."""
    if len(data) < 12 or data[4:8] != b"ftyp":
        raise AudioRejected("not an M4A audio file")
    if data[8:12] not in _MP4_AUDIO_BRANDS:
        raise AudioRejected(f"an MP4 file of brand {data[8:12]!r}, not M4A audio")
    return "audio/mp4"


def m4a_duration_ms(data: bytes) -> int | None:
    """How long an M4A plays, in milliseconds, from its movie header (`moov` → `mvhd`); None
    when the file has none (an incomplete file: players cannot play it either)."""
    moov = _box(data, b"moov")
    header = _box(moov, b"mvhd") if moov is not None else None
    if header is None or len(header) < 4:
        return None
    # mvhd: version (1 byte), flags (3); then times of 4 bytes (version 0) or 8 (version 1).
    if header[0] == 1 and len(header) >= 32:
        timescale = int.from_bytes(header[20:24], "big")
        duration = int.from_bytes(header[24:32], "big")
    elif header[0] == 0 and len(header) >= 20:
        timescale = int.from_bytes(header[12:16], "big")
        duration = int.from_bytes(header[16:20], "big")
    else:
        return None
    return duration * 1000 // timescale if timescale else None


def _box(data: bytes, kind: bytes) -> bytes | None:
    """The body of the first box of `kind` among the boxes `data` is made of."""
    offset = 0
    while offset + 8 <= len(data):
        size = int.from_bytes(data[offset:offset + 4], "big")
        header = 8
        if size == 1 and offset + 16 <= len(data):  # a 64-bit size follows the type
            size, header = int.from_bytes(data[offset + 8:offset + 16], "big"), 16
        elif size == 0:  # the box runs to the end of the file
            size = len(data) - offset
        if size < header:
            return None
        if data[offset + 4:offset + 8] == kind:
            return data[offset + header:offset + size]
        offset += size
    return None

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

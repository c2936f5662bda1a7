"""LINE's limits on text messages, which count UTF-16 code units, not characters."""
MAX_TEXT_UNITS = 5000
MAX_MESSAGES_PER_CALL = 5


def utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def split_text(text: str, *, limit: int = MAX_TEXT_UNITS) -> list[str]:
    """Cuts text into pieces of at most `limit` UTF-16 units.

    A cut prefers the last line break, then the last space, in the back fifth of a
    piece, so sentences survive where they can; a surrogate pair is never cut.
    """
    if utf16_units(text) <= limit:
        return [text]
    pieces: list[str] = []
    start = 0
    while start < len(text):
        units = 0
        end = start
        while end < len(text):
            width = 2 if ord(text[end]) > 0xFFFF else 1
            if units + width > limit:
                break
            units += width
            end += 1
        if end < len(text):
            floor = start + (end - start) * 4 // 5
            for separator in ("\n", " "):
                cut = text.rfind(separator, floor, end)
                if cut > start:
                    end = cut + 1
                    break
        pieces.append(text[start:end])
        start = end
    return pieces


def batches(pieces: list[str], *, size: int = MAX_MESSAGES_PER_CALL) -> list[list[str]]:
    return [pieces[i : i + size] for i in range(0, len(pieces), size)]

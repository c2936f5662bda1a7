"""LINE's limits on text messages, which count UTF-16 code units, not characters."""
import re

MAX_TEXT_UNITS = 5000
MAX_MESSAGES_PER_CALL = 5


def utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


# Where a cut may go, best first, each searched for in the back part of a full piece
# (the share of the piece it may give up): a paragraph, a line, a sentence (also CJK
# 。！？ and a closing quote or bracket after them), a space.
_CUTS = [
    (re.compile(r"\n[ \t]*\n\s*"), 0.5),
    (re.compile(r"\n"), 0.5),
    (re.compile(r"[.!?](?:[\"')\]]*)\s+|[。！？!?][」』）〉》”’]*"), 0.5),
    (re.compile(r"\s+"), 0.2),
]


def split_text(text: str, *, limit: int = MAX_TEXT_UNITS) -> list[str]:
    """Cuts text into pieces of at most `limit` UTF-16 units, losing nothing.

    A cut prefers a paragraph break, then a line break, then the end of a sentence, then
    a space (see _CUTS); only text with none of them near the limit is cut mid-word. A
    surrogate pair is never cut.
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
            end = _best_cut(text, start, end)
        pieces.append(text[start:end])
        start = end
    return pieces


def _best_cut(text: str, start: int, end: int) -> int:
    """Where to end the piece text[start:end], which is as long as a piece may be."""
    for pattern, share in _CUTS:
        floor = end - int((end - start) * share)
        cut = None
        for match in pattern.finditer(text, floor, end):
            cut = match.end()
        if cut is not None and cut > start:
            return cut
    return end


def batches(pieces: list[str], *, size: int = MAX_MESSAGES_PER_CALL) -> list[list[str]]:
    return [pieces[i : i + size] for i in range(0, len(pieces), size)]

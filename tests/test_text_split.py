"""LINE counts text length in UTF-16 code units; splitting must respect that."""
from conversations.line.text import MAX_TEXT_UNITS, batches, split_text, utf16_units


def test_short_text_is_one_piece():
    assert split_text("hello") == ["hello"]


def test_12000_characters_split_into_pieces_within_the_limit():
    pieces = split_text("a" * 12_000)
    assert [len(p) for p in pieces] == [5000, 5000, 2000]


def test_emoji_count_twice_and_are_never_cut_in_half():
    text = "😀" * 3000  # 6,000 UTF-16 units
    pieces = split_text(text)
    assert all(utf16_units(p) <= MAX_TEXT_UNITS for p in pieces)
    assert [utf16_units(p) for p in pieces] == [5000, 1000]
    assert "".join(pieces) == text


def test_cuts_prefer_line_breaks_then_spaces():
    paragraph = ("word " * 900).strip()  # 4,499 characters
    text = paragraph + "\n" + paragraph
    pieces = split_text(text)
    assert pieces == [paragraph + "\n", paragraph]
    spaced = "abcd " * 1200
    assert all(p.endswith(" ") for p in split_text(spaced)[:-1])


def test_no_text_is_lost_or_reordered():
    text = "".join(chr(0x4E00 + i % 500) + ("\n" if i % 97 == 0 else "") for i in range(23_456))
    assert "".join(split_text(text)) == text


def test_batches_hold_at_most_five_texts():
    assert [len(b) for b in batches([str(i) for i in range(12)])] == [5, 5, 2]

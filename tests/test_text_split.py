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


def _fits(pieces: list[str]) -> bool:
    return all(utf16_units(p) <= MAX_TEXT_UNITS for p in pieces)


def test_a_paragraph_break_is_preferred_to_a_later_line_break():
    first = "a" * 3000 + "\n\n"
    second = "b" * 1500 + "\n" + "c" * 1000  # a line break nearer the limit than the paragraph
    pieces = split_text(first + second)
    assert pieces == [first, second] and _fits(pieces)


def test_a_sentence_end_is_preferred_to_a_later_space():
    sentence = ("word " * 700).strip() + ". "  # ends at 3,501 units
    rest = "more words " * 300
    pieces = split_text(sentence + rest)
    assert pieces[0] == sentence
    assert "".join(pieces) == sentence + rest and _fits(pieces)


def test_chinese_sentences_end_at_full_stops_and_closing_quotes():
    sentence = "這是一個很長的句子，" * 300 + "結束了。」"  # no spaces anywhere
    text = sentence + "下一句" * 800
    pieces = split_text(text)
    assert pieces[0] == sentence
    assert "".join(pieces) == text and _fits(pieces)
    for mark in "！？":
        exclaimed = "字" * 4000 + mark + "字" * 2000
        assert split_text(exclaimed)[0] == "字" * 4000 + mark


def test_a_word_is_cut_only_when_no_space_is_near():
    text = "x" * 4000 + " " + "y" * 999 + "z" * 2000
    assert split_text(text)[0] == "x" * 4000 + " "
    unbroken = "y" * 6000
    assert split_text(unbroken) == ["y" * 5000, "y" * 1000]


def test_a_sentence_far_back_loses_to_a_paragraph_within_half():
    text = "a" * 2600 + "\n\n" + "b" * 2000 + ". " + "c" * 2000
    assert split_text(text)[0] == "a" * 2600 + "\n\n"

"""Finds and masks personal data in chat text before it is stored or leaves for a cloud model.

Five kinds: email addresses, phone numbers, Taiwan national ID / resident certificate
numbers, credit card numbers and IP addresses. Each matcher is a precompiled regex behind
a cheap prefilter, followed by a validator (checksum, Luhn + issuer ranges, libphonenumber
metadata, `ipaddress`), so a look-alike that fails validation is left as it was.

Pure functions: no models, no settings; safe to call from any thread.
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

import phonenumbers


class PiiKind(str, Enum):
    EMAIL = "email"
    PHONE = "phone"
    NATIONAL_ID = "national_id"
    CREDIT_CARD = "credit_card"
    IP_ADDRESS = "ip_address"

    @property
    def marker(self) -> str:
        """The text that replaces a match, e.g. "[PHONE]"."""
        return MARKERS[self]


MARKERS: dict[PiiKind, str] = {
    PiiKind.EMAIL: "[EMAIL]",
    PiiKind.PHONE: "[PHONE]",
    PiiKind.NATIONAL_ID: "[ID]",
    PiiKind.CREDIT_CARD: "[CARD]",
    PiiKind.IP_ADDRESS: "[IP]",
}


ALL_KINDS: frozenset[PiiKind] = frozenset(PiiKind)


@dataclass(frozen=True, slots=True)
class Match:
    """One piece of personal data: `text[start:end] == value`."""

    kind: PiiKind
    start: int
    end: int
    value: str


@dataclass(frozen=True)
class MaskResult:
    """The masked text and how many matches of each kind (by value, e.g. "phone") it had."""

    text: str
    found: dict[str, int]


def mask_pii(text: str, *, kinds: Iterable[PiiKind] | None = None) -> MaskResult:
    """Replaces each match of `kinds` (all when None) with its marker, e.g. "[EMAIL]"."""
    matches = find_pii(text, kinds=kinds)
    if not matches:
        return MaskResult(text, {})
    pieces: list[str] = []
    found: dict[str, int] = {}
    cursor = 0
    for match in matches:
        pieces.append(text[cursor : match.start])
        pieces.append(MARKERS[match.kind])
        found[match.kind.value] = found.get(match.kind.value, 0) + 1
        cursor = match.end
    pieces.append(text[cursor:])
    return MaskResult("".join(pieces), found)


def find_pii(text: str, *, kinds: Iterable[PiiKind] | None = None) -> list[Match]:
    """Non-overlapping matches in text order.

    Where candidates overlap, the longer one wins, then the more specific kind
    (email > card > ID > IP > phone). Every kind takes part in that contest even when
    `kinds` asks for fewer, so a card number is never reported as a phone number;
    `kinds` only filters what is returned.
    """
    if not text:
        return []
    wanted = ALL_KINDS if kinds is None else frozenset(PiiKind(k) for k in kinds)
    if not wanted:
        return []
    # Full-width forms (０９１２, ＠) are common from CJK keyboards; mapping them one to one
    # onto ASCII keeps every offset valid for the original text.
    scan = _FULLWIDTH_RUN.sub(_to_ascii, text) if _FULLWIDTH_RUN.search(text) else text
    digits = sum(map(scan.count, "0123456789"))

    candidates: list[tuple[int, int, PiiKind]] = []
    if "@" in scan:
        candidates.extend(_find_emails(scan))
    if digits >= 13:
        candidates.extend(_find_cards(scan))
    if digits >= 8:
        candidates.extend(_find_national_ids(scan))
        candidates.extend(_find_phones(scan))
    if digits >= 4 and "." in scan:
        candidates.extend(_find_ipv4(scan))
    if scan.count(":") >= 2:
        candidates.extend(_find_ipv6(scan))
    if not candidates:
        return []

    chosen: list[tuple[int, int, PiiKind]] = []
    candidates.sort(key=lambda c: (c[0] - c[1], _PRIORITY[c[2]], c[0]))
    for start, end, kind in candidates:
        if all(end <= s or start >= e for s, e, _k in chosen):
            chosen.append((start, end, kind))
    chosen.sort()
    return [
        Match(kind, start, end, text[start:end]) for start, end, kind in chosen if kind in wanted
    ]


_PRIORITY = {
    PiiKind.EMAIL: 0,
    PiiKind.CREDIT_CARD: 1,
    PiiKind.NATIONAL_ID: 2,
    PiiKind.IP_ADDRESS: 3,
    PiiKind.PHONE: 4,
}

_FULLWIDTH = {cp: cp - 0xFEE0 for cp in range(0xFF01, 0xFF5F)}
_FULLWIDTH[0x3000] = 0x20  # ideographic space
_FULLWIDTH_RUN = re.compile("[\uff01-\uff5e\u3000]+")


def _to_ascii(run: re.Match) -> str:
    return run.group().translate(_FULLWIDTH)


def _context_before(text: str, start: int, width: int = 12) -> str:
    return text[max(0, start - width) : start].lower()


# Words that make the number after them a reference (order, invoice, tracking, tax ID)
# rather than a phone or card number, unless a phone/card word is closer at hand.
_REFERENCE_WORDS = re.compile(
    r"訂單|订单|單號|单号|編號|编号|序號|追蹤|追踪|貨號|發票|发票|統編|統一編號|"
    r"注文|伝票|問い合わせ番号|條碼|条码|バーコード|order|invoice|tracking|barcode|isbn|ref\b|no\."
)
_PHONE_WORDS = re.compile(
    r"電話|电话|手機|手机|市話|聯絡|联系|連絡|傳真|分機|撥|打|tel|phone|mobile|call|fax|"
    r"携帯|でんわ|line"
)
_CARD_WORDS = re.compile(r"卡|card|visa|master|amex|jcb|カード")


def _is_reference(text: str, start: int, own_words: re.Pattern) -> bool:
    before = _context_before(text, start)
    return bool(_REFERENCE_WORDS.search(before)) and not own_words.search(before)


# The digit-led regexes below start with the character they consume first and check what
# precedes it afterwards (or in Python): a leading lookbehind stops `re` from skipping
# ahead to candidate characters, which made scanning CJK text three to four times slower.

# --- email ----------------------------------------------------------------------------

# Practical RFC 5322 subset: dot-atom local parts without the rarely used symbols that
# would swallow neighbouring punctuation (`=`, `'`, `/`...); dots may repeat or end the
# local part because Japanese carriers issued such addresses (abc..d.@docomo.ne.jp).
_EMAIL = re.compile(
    r"[A-Za-z0-9_%+\-][A-Za-z0-9._%+\-]{0,63}"  # bounded: no quadratic scans of long tokens
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
    r"(?![A-Za-z0-9\-])",
    re.ASCII,
)


# Retina image names (icon@2x.png) have an email's shape; these endings are not TLDs.
_FILE_EXTENSIONS = frozenset(
    "png jpg jpeg gif svg webp bmp heic tif tiff pdf txt json html htm css".split()
)


def _find_emails(text: str):
    for m in _EMAIL.finditer(text):
        if m.group().rpartition(".")[2].lower() in _FILE_EXTENSIONS:
            continue
        yield m.start(), m.end(), PiiKind.EMAIL


# --- credit cards ---------------------------------------------------------------------

_CARD = re.compile(
    r"[0-9](?<![A-Za-z0-9.,][0-9])"
    r"(?:[0-9]{12,18}"
    r"|[0-9]{3}(?P<a>[ \-])[0-9]{4}(?P=a)[0-9]{4}(?P=a)[0-9]{1,4}(?:(?P=a)[0-9]{1,3})?"
    r"|[0-9]{3}(?P<b>[ \-])[0-9]{6}(?P=b)[0-9]{4,5})"
    r"(?![A-Za-z0-9]|[\-.,/][0-9])",
    re.ASCII,
)

# (prefix low, prefix high, allowed lengths); prefixes compared on their own width.
_CARD_RANGES: tuple[tuple[str, str, frozenset[int]], ...] = (
    ("4", "4", frozenset({13, 16, 19})),  # Visa
    ("51", "55", frozenset({16})),  # Mastercard
    ("2221", "2720", frozenset({16})),  # Mastercard 2-series
    ("34", "34", frozenset({15})),  # American Express
    ("37", "37", frozenset({15})),
    ("3528", "3589", frozenset(range(16, 20))),  # JCB
    ("62", "62", frozenset(range(16, 20))),  # UnionPay
    ("6011", "6011", frozenset(range(16, 20))),  # Discover
    ("65", "65", frozenset(range(16, 20))),
    ("644", "649", frozenset(range(16, 20))),
    ("300", "305", frozenset(range(14, 20))),  # Diners Club
    ("36", "36", frozenset(range(14, 20))),
    ("38", "38", frozenset(range(14, 20))),
)


def luhn_ok(digits: str) -> bool:
    """The Luhn (mod 10) check used by every card number."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def is_card_number(digits: str) -> bool:
    """A known issuer range, a length that issuer uses, and a passing Luhn check."""
    length = len(digits)
    for low, high, lengths in _CARD_RANGES:
        if length in lengths and low <= digits[: len(low)] <= high:
            return luhn_ok(digits)
    return False


def _find_cards(text: str):
    for m in _CARD.finditer(text):
        digits = m.group().replace(" ", "").replace("-", "")
        if is_card_number(digits) and not _is_reference(text, m.start(), _CARD_WORDS):
            yield m.start(), m.end(), PiiKind.CREDIT_CARD


# --- Taiwan national ID and resident certificate numbers -----------------------------

# Area letter -> code. I, O, W, X, Y, Z were added later, hence their out-of-order codes.
_ID_LETTER_CODES = dict(
    zip(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
        (10, 11, 12, 13, 14, 15, 16, 17, 34, 18, 19, 20, 21,
         22, 35, 23, 24, 25, 26, 27, 28, 29, 32, 30, 31, 33),
    )
)
_ID_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 1, 1)

# Second character: 1/2 national ID, 8/9 resident certificate (2021 format), A-D the
# old resident certificate format (valid until the end of 2030).
_NATIONAL_ID = re.compile(
    r"[A-Za-z](?<![A-Za-z0-9][A-Za-z])(?:[1289][0-9]{8}|[A-Da-d][0-9]{8})(?![A-Za-z0-9])",
    re.ASCII,
)
_INVOICE_WORDS = re.compile(r"發票|发票|invoice|載具|收據|レシート")


def is_taiwan_id(value: str) -> bool:
    """National ID (A123456789), new (A800000014) or old (AA00000009) resident certificate.

    The letter becomes its two-digit area code (A=10 ... Z=33), weighted 1 and 9; the
    next eight digits are weighted 8..1 and the check digit 1; the sum must end in 0.
    An old-style certificate's second letter contributes its code's last digit.
    """
    if len(value) != 10:
        return False
    value = value.upper()
    code = _ID_LETTER_CODES.get(value[0])
    second = value[1]
    if code is None or not value[2:].isdigit():
        return False
    if second in "1289":
        first_digit = ord(second) - 48
    elif second in "ABCD":
        first_digit = _ID_LETTER_CODES[second] % 10
    else:
        return False
    total = code // 10 + (code % 10) * 9 + first_digit * 8
    for ch, weight in zip(value[2:], _ID_WEIGHTS[1:]):
        total += (ord(ch) - 48) * weight
    return total % 10 == 0


def _find_national_ids(text: str):
    for m in _NATIONAL_ID.finditer(text):
        value = m.group()
        if not is_taiwan_id(value):
            continue
        # Two letters + eight digits is also the shape of a uniform-invoice number.
        if value[1].isalpha() and _INVOICE_WORDS.search(_context_before(text, m.start(), 16)):
            continue
        yield m.start(), m.end(), PiiKind.NATIONAL_ID


# --- phone numbers --------------------------------------------------------------------

# A run of digit groups joined by single separators, optionally led by "+" or an area code
# in parentheses. Slashes, colons and commas never join groups, which keeps dates, times
# and amounts out; the run is then cut into the longest valid numbers it holds.
_PHONE_RUN = re.compile(
    r"(?:\+ ?(?:\(\+?[0-9]{1,4}\) ?)?[0-9]|\(\+?[0-9]{1,4}\) ?[0-9]|[0-9])[0-9]*"
    r"(?:(?:[ .\-]| ?\([0-9]{1,4}\)[ \-]?)[0-9]+)*"
    r"(?![0-9A-Za-z]|[.\-][0-9])",
    re.ASCII,
)
_PHONE_GROUP = re.compile(r"[0-9]+")
# A run glued to a word, a decimal point or a dash is part of something else.
_PHONE_GLUE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+.-")
# Taiwanese numbers with their area code have 9 or 10 digits; 8 leaves room for short
# international ones.
_MIN_PHONE_DIGITS = 8
_MAX_PHONE_DIGITS = 15  # E.164


def _valid_phone(candidate: str, digits: str) -> bool:
    try:
        if candidate.lstrip("(").startswith("+"):
            return phonenumbers.is_valid_number(phonenumbers.parse(candidate, None))
        if digits.startswith("0"):
            # A Taiwanese number first; the bot also serves Japan, where 090-1234-5678 and
            # 03-1234-5678 are written without a country code.
            return phonenumbers.is_valid_number(
                phonenumbers.parse(candidate, "TW")
            ) or phonenumbers.is_valid_number(phonenumbers.parse(candidate, "JP"))
        if digits.startswith("886"):
            return phonenumbers.is_valid_number(phonenumbers.parse("+" + digits, None))
    except phonenumbers.NumberParseException:
        return False
    # Without a trunk 0 or a country code a digit string is far more likely an order
    # number, a tax ID or an amount than a phone number.
    return False


def _find_phones(text: str):
    for run in _PHONE_RUN.finditer(text):
        run_start, run_text = run.start(), run.group()
        if run_start and text[run_start - 1] in _PHONE_GLUE:
            continue
        groups = [(g.start(), g.end()) for g in _PHONE_GROUP.finditer(run_text)]
        # Prefix sums of digits and of short (1-2 digit) groups keep each window O(1).
        digit_sums, short_sums = [0], [0]
        for s, e in groups:
            digit_sums.append(digit_sums[-1] + e - s)
            short_sums.append(short_sums[-1] + (e - s <= 2))
        international = "+" in run_text[:2]
        i = 0
        while i < len(groups):
            found = None
            first = run_text[groups[i][0] : groups[i][1]]
            plus = i == 0 and international
            if plus or first.startswith(("0", "886")):
                last = i
                while (
                    last + 1 < len(groups)
                    and digit_sums[last + 2] - digit_sums[i] <= _MAX_PHONE_DIGITS
                ):
                    last += 1
                # Longest first: "+886 2 2345 6789" must not stop at "+886 2 2345".
                for j in range(last, i - 1, -1):
                    if digit_sums[j + 1] - digit_sums[i] < _MIN_PHONE_DIGITS:
                        break
                    # Lottery numbers and scores come in pairs ("03 12 25 33 41"); a
                    # nationally written phone number has at most two short groups.
                    if not plus and short_sums[j + 1] - short_sums[i] > 2:
                        continue
                    start = 0 if i == 0 else groups[i][0]  # keep a leading "+" or "("
                    end = groups[j][1]
                    digits = "".join(run_text[s:e] for s, e in groups[i : j + 1])
                    if _valid_phone(run_text[start:end], digits):
                        found = (start, end, j)
                        break
            if found is None:
                i += 1
                continue
            start, end, j = found
            if not _is_reference(text, run_start + start, _PHONE_WORDS):
                yield run_start + start, run_start + end, PiiKind.PHONE
            i = j + 1


# --- IP addresses ---------------------------------------------------------------------

# Octets are range-checked in Python; zero-padded ones (192.168.001.001) are how some
# router pages show addresses.
_IPV4 = re.compile(
    r"[0-9](?<![0-9.][0-9])[0-9]{0,2}(?:\.[0-9]{1,3}){3}(?![A-Za-z0-9]|\.[0-9])", re.ASCII
)
_ASCII_LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
# Letters glued to a quad make it a token (v1.2.3.4, build7.1.2.3), except the label "IP".
_IP_LABELS = frozenset({"", "ip", "ipv4"})
# Version and section numbers have the same shape as an address; the word before tells.
_NOT_AN_ADDRESS_WORDS = re.compile(
    r"(?:(?<![a-z])(?:version|ver\.?|v|firmware|section|chapter)|版本號?|版號|韌體|"
    r"バージョン|ファームウェア|第|§)\s*(?:[:：=]|是|は|為)?\s*$"
)

_IPV6 = re.compile(
    r"(?<![A-Za-z0-9:])"
    r"(?=[0-9A-Fa-f:]*::|(?:[0-9A-Fa-f]{1,4}:){7})"
    r"[0-9A-Fa-f:]{2,39}(?:\.[0-9]{1,3}){0,3}(?:%[A-Za-z0-9]+)?"
    r"(?![A-Za-z0-9:])",
    re.ASCII,
)


def _find_ipv4(text: str):
    for m in _IPV4.finditer(text):
        start = m.start()
        if any(int(octet) > 255 for octet in m.group().split(".")):
            continue
        glued = start
        while glued and text[glued - 1] in _ASCII_LETTERS:
            glued -= 1
        if text[glued:start].lower() not in _IP_LABELS:
            continue
        if _NOT_AN_ADDRESS_WORDS.search(_context_before(text, start, 10)):
            continue
        yield start, m.end(), PiiKind.IP_ADDRESS


def _find_ipv6(text: str):
    for m in _IPV6.finditer(text):
        value = m.group()
        # "::" alone is punctuation and "a::b" a C++ scope; real addresses carry digits.
        if not any(c.isdigit() for c in value):
            continue
        try:
            ipaddress.IPv6Address(value)
        except ValueError:
            continue
        yield m.start(), m.end(), PiiKind.IP_ADDRESS

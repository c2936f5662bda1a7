"""PII masking: each matcher on its own, then precision and recall over a hand-marked corpus.

The corpus (tests/data/pii_corpus.jsonl, made by tests/data/make_pii_corpus.py) stores the
spans a careful human would mask. A predicted match is a true positive only when a gold
span has the same start, end and kind; anything else is a false positive, and every gold
span not predicted exactly is a false negative. Run with -s to see the table.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conversations.pii import (
    MARKERS,
    MaskResult,
    Match,
    PiiKind,
    find_pii,
    is_card_number,
    is_taiwan_id,
    luhn_ok,
    mask_pii,
)

CORPUS = Path(__file__).resolve().parent / "data" / "pii_corpus.jsonl"


def masked(text: str, **kwargs) -> str:
    return mask_pii(text, **kwargs).text


# --- email ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("請寄到abc.def+tw@mail.example.com.tw謝謝", "請寄到[EMAIL]謝謝"),
        ("jenny.lin@gmail.com 是我的信箱", "[EMAIL] 是我的信箱"),
        ("Send it to billing@acme-corp.co.jp.", "Send it to [EMAIL]."),
        ("「signup2024@events.ntu.edu.tw」", "「[EMAIL]」"),
        ("<User.Name@Example.COM>", "<[EMAIL]>"),
        ("a@b.tw、c.d@e-f.example.org", "[EMAIL]、[EMAIL]"),
        ("yuki＠example.jp（全角）", "[EMAIL]（全角）"),
        ("docomo: taro..yamada.@docomo.ne.jp", "docomo: [EMAIL]"),
        ("?email=abc@example.com&x=1", "?email=[EMAIL]&x=1"),
    ],
)
def test_emails_are_masked(text, expected):
    assert masked(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "@陳小明 明天記得帶東西",
        "@Bot 幫我翻譯",
        "加我LINE：@abc123",
        "LINE ID: @shop.tw",
        "用 @gmail.com 結尾的都可以",
        "email 欄位寫 foo@bar 會報錯",
        "圖檔要 icon@2x.png",
        "https://line.me/R/ti/p/@abc123",
        "https://www.google.com/maps/@25.0330,121.5654,15z",
    ],
)
def test_mentions_ids_and_urls_are_not_emails(text):
    assert masked(text) == text


# --- phone ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "number",
    [
        "0912-345-678",
        "0912345678",
        "0912 345 678",
        "0912-345678",
        "+886 912 345 678",
        "+886-912-345-678",
        "+886912345678",
        "886912345678",
        "(02) 2345-6789",
        "(02)2345-6789",
        "02-2345-6789",
        "02 2345 6789",
        "04-2234-5678",
        "+886 2 2345 6789",
        "+886 (0)2 2345 6789",
        "037-123456",
        "049-2345678",
        "089-345678",
        "07-123-4567",
        "0800-080-123",
        "+81 90-1234-5678",
        "+1 415 555 0100",
        "+1 (415) 555-0100",
        "+852 9123 4567",
        "+44 20 7946 0958",
        "090-1234-5678",  # Japanese mobile, written nationally
        "03-1234-5678",  # Tokyo landline
        "０９１２－３４５－６７８",  # full-width
    ],
)
def test_phone_formats_are_masked(number):
    assert masked(f"電話{number}謝謝") == "電話[PHONE]謝謝"
    assert masked(f"call {number}.") == "call [PHONE]."


def test_phone_extension_stays_and_number_goes():
    assert masked("公司電話(02) 2345-6789#123") == "公司電話[PHONE]#123"
    assert masked("02-2771-1234 分機 567") == "[PHONE] 分機 567"


@pytest.mark.parametrize(
    "text",
    [
        "2024-05-01",
        "2024/05/01 到 2024/05/07",
        "113年5月1日",
        "14:30-16:00",
        "營業時間 0900-2100",
        "NT$1,234,567",
        "價格 1234567 元",
        "統一編號 12345678",
        "統編 04595252",
        "訂單編號 20240501123456",
        "訂單編號：0912345678",
        "order no. 0223456789",
        "Python 3.11.7",
        "v1.2.3",
        "大樂透 03 12 25 33 41 45",
        "0912 開頭的都是手機",
        "電話 0912-345 後面忘了",
        "+886 是台灣的國碼",
        "3+4=7",
        "請打 119 或 110",
        "黑貓宅急便 9012-3456-7890",
        "郵局掛號 12345678901234567890",
    ],
)
def test_phone_look_alikes_are_not_masked(text):
    assert masked(text) == text


def test_several_phones_in_one_run_of_digits():
    assert masked("0912 345 678 0987 654 321") == "[PHONE] [PHONE]"
    assert masked("2024 0912 345 678") == "2024 [PHONE]"
    assert masked("0912345678/0987654321") == "[PHONE]/[PHONE]"
    assert masked("02-2345-6789／0912-345-678") == "[PHONE]／[PHONE]"


def test_order_words_keep_numbers_but_phone_words_win():
    assert masked("訂單編號 0912345678") == "訂單編號 0912345678"
    assert masked("訂單有問題打0912345678") == "訂單有問題打[PHONE]"
    assert masked("訂單編號 4111111111111111") == "訂單編號 4111111111111111"
    assert masked("訂單刷卡 4111111111111111") == "訂單刷卡 [CARD]"


# --- national ID ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, valid",
    [
        ("A123456789", True),  # the textbook example
        ("a123456789", True),
        ("A123456788", False),
        ("A323456789", False),  # second digit must be 1, 2, 8 or 9
        ("A800000014", True),  # new resident certificate
        ("AA00000009", True),  # old resident certificate
        ("AA00000008", False),
        ("AE00000009", False),  # old certificates use A-D only
        ("A12345678", False),
        ("1123456789", False),
    ],
)
def test_taiwan_id_checksum(value, valid):
    assert is_taiwan_id(value) is valid


@pytest.mark.parametrize(
    "text, expected",
    [
        ("身分證A123456789謝謝", "身分證[ID]謝謝"),
        ("身分證字號：a123456789。", "身分證字號：[ID]。"),
        ("居留證 A800000014", "居留證 [ID]"),
        ("舊居留證 AA00000009", "舊居留證 [ID]"),
        ("（Ａ１２３４５６７８９）", "（[ID]）"),
    ],
)
def test_national_ids_are_masked(text, expected):
    assert masked(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "身分證 A123456788 打錯了",
        "XA123456789",
        "A123456789B",
        "A1234567890",
        "學號 B12345678",
        "統一發票 AB-12345678",
        "EMS EE123456789TW",
    ],
)
def test_id_look_alikes_are_not_masked(text):
    assert masked(text) == text


def test_invoice_number_shaped_like_an_old_certificate_is_left_alone():
    assert is_taiwan_id("CA12345677")
    assert masked("發票號碼 CA12345677") == "發票號碼 CA12345677"
    assert masked("居留證 CA12345677") == "居留證 [ID]"


# --- credit cards ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "number",
    [
        "4111 1111 1111 1111",  # Visa
        "4111-1111-1111-1111",
        "4111111111111111",
        "4222222222222",  # Visa, 13 digits
        "5555 5555 5555 4444",  # Mastercard
        "2223 0031 2200 3222",  # Mastercard 2-series
        "3782 822463 10005",  # Amex 4-6-5
        "378282246310005",
        "3530 1113 3330 0000",  # JCB
        "6200 0000 0000 0005",  # UnionPay
        "6011 1111 1111 1117",  # Discover
        "3056 930902 5904",  # Diners 4-6-4
    ],
)
def test_card_numbers_are_masked(number):
    assert masked(f"卡號{number}謝謝") == "卡號[CARD]謝謝"
    assert mask_pii(number).found == {"credit_card": 1}


@pytest.mark.parametrize(
    "number",
    [
        "4111 1111 1111 1112",  # fails Luhn
        "5555-5555-5555-4445",
        "1234 5678 9012 3452",  # passes Luhn, no card starts with 1
        "9999 9999 9999 9995",
        "4111 1111 1111",  # too short
        "4111-1111-1111-1111-2222",  # too long
        "3782 82246 31000 5",  # not a grouping any card uses
    ],
)
def test_card_look_alikes_are_not_masked(number):
    assert masked(number) == number


def test_luhn_and_issuer_ranges():
    assert luhn_ok("79927398713") and not luhn_ok("79927398710")
    assert is_card_number("4111111111111111")
    assert not is_card_number("4111111111111112")
    assert not is_card_number("378282246310005"[:-1] + "0")
    assert not is_card_number("3782822463100050")  # Amex is 15 digits long


def test_card_is_never_reported_as_phone():
    text = "卡號 4111 1111 1111 1111 電話 0912345678"
    assert [m.kind for m in find_pii(text)] == [PiiKind.CREDIT_CARD, PiiKind.PHONE]
    assert [m.value for m in find_pii(text, kinds=[PiiKind.PHONE])] == ["0912345678"]
    assert masked("4111 1111 1111 1111", kinds=[PiiKind.PHONE]) == "4111 1111 1111 1111"


# --- IP addresses ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("伺服器IP是192.168.1.10", "伺服器IP是[IP]"),
        ("IP61.220.10.3被封鎖", "IP[IP]被封鎖"),
        ("連不上 10.0.0.1:8080", "連不上 [IP]:8080"),
        ("10.0.0.0/8", "[IP]/8"),
        ("ping 8.8.8.8.", "ping [IP]."),
        ("2001:db8::1", "[IP]"),
        ("本機 ::1 可以", "本機 [IP] 可以"),
        ("[2001:db8::1]:8080", "[[IP]]:8080"),
        ("2001:0db8:85a3:0000:0000:8a2e:0370:7334", "[IP]"),
        ("::ffff:192.0.2.128", "[IP]"),
        ("fe80::1%eth0", "[IP]"),
    ],
)
def test_ip_addresses_are_masked(text, expected):
    assert masked(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "v1.2.3",
        "v1.2.3.4",
        "version 1.2.3.4",
        "版本號：10.2.0.1",
        "第 3.2.1.4 節",
        "256.1.1.1",
        "1.2.3.4.5",
        "192.168.1",
        "12:30",
        "12:30:45",
        "比數 3:2",
        "MAC 00:1A:2B:3C:4D:5E",
        "std::vector",
        "a::b",
        "2001:db8 是前綴",
    ],
)
def test_ip_look_alikes_are_not_masked(text):
    assert masked(text) == text


# --- API ------------------------------------------------------------------------------


def test_mask_result_counts_each_kind():
    result = mask_pii(
        "A123456789 / 0912-345-678 / 0987654321 / a@b.tw / 4111111111111111 / 10.0.0.1"
    )
    assert result == MaskResult(
        "[ID] / [PHONE] / [PHONE] / [EMAIL] / [CARD] / [IP]",
        {"national_id": 1, "phone": 2, "email": 1, "credit_card": 1, "ip_address": 1},
    )


def test_kinds_restricts_what_is_masked():
    text = "a@b.tw 0912-345-678 A123456789"
    assert mask_pii(text, kinds=[PiiKind.EMAIL]) == MaskResult(
        "[EMAIL] 0912-345-678 A123456789", {"email": 1}
    )
    assert masked(text, kinds={PiiKind.PHONE, PiiKind.NATIONAL_ID}) == "a@b.tw [PHONE] [ID]"
    assert masked(text, kinds=["email"]) == "[EMAIL] 0912-345-678 A123456789"
    assert masked(text, kinds=[]) == text


def test_nothing_found():
    assert mask_pii("早安☀️") == MaskResult("早安☀️", {})
    assert mask_pii("") == MaskResult("", {})


def test_find_pii_reports_offsets_in_the_original_text():
    text = "電話０９１２３４５６７８，信箱 a@b.tw"
    matches = find_pii(text)
    assert matches == [
        Match(PiiKind.PHONE, 2, 12, "０９１２３４５６７８"),
        Match(PiiKind.EMAIL, 16, 22, "a@b.tw"),
    ]
    assert all(text[m.start : m.end] == m.value for m in matches)


@pytest.mark.parametrize(
    "text",
    [
        ("0912 345 678 " * 400)[:5000],
        "1" * 5000,
        "0 " * 2500,
        "A" * 4999 + "@",
        "a." * 2500 + "@x",
        "1." * 2500,
        "a:" * 2500,
    ],
)
def test_long_hostile_messages_stay_fast(text):
    # LINE allows 5,000 characters; a quadratic regex would take seconds on these.
    started = time.perf_counter()
    mask_pii(text)
    assert time.perf_counter() - started < 1.0


def test_masking_is_idempotent():
    once = masked("請打0912-345-678或寄a@b.tw")
    assert masked(once) == once


def test_kind_values_and_markers():
    values = ["email", "phone", "national_id", "credit_card", "ip_address"]
    assert [k.value for k in PiiKind] == values
    assert [MARKERS[k] for k in PiiKind] == ["[EMAIL]", "[PHONE]", "[ID]", "[CARD]", "[IP]"]
    assert PiiKind.PHONE.marker == "[PHONE]"


# --- the corpus -------------------------------------------------------------------------


def load_corpus(path: Path = CORPUS) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@dataclass
class Score:
    tp: Counter = field(default_factory=Counter)
    fp: Counter = field(default_factory=Counter)
    fn: Counter = field(default_factory=Counter)
    messages: int = 0
    exact_messages: int = 0

    def precision(self, kind: str | None = None) -> float:
        tp, fp = self._sum(self.tp, kind), self._sum(self.fp, kind)
        return tp / (tp + fp) if tp + fp else 1.0

    def recall(self, kind: str | None = None) -> float:
        tp, fn = self._sum(self.tp, kind), self._sum(self.fn, kind)
        return tp / (tp + fn) if tp + fn else 1.0

    def gold(self, kind: str | None = None) -> int:
        return self._sum(self.tp, kind) + self._sum(self.fn, kind)

    @staticmethod
    def _sum(counter: Counter, kind: str | None) -> int:
        return sum(counter.values()) if kind is None else counter[kind]


def score(rows: list[dict]) -> Score:
    """Strict match-level scoring: (start, end, kind) must agree exactly."""
    result = Score()
    for row in rows:
        gold = {(s, e, k) for s, e, k in row["spans"]}
        predicted = {(m.start, m.end, m.kind.value) for m in find_pii(row["text"])}
        for _s, _e, kind in gold & predicted:
            result.tp[kind] += 1
        for _s, _e, kind in predicted - gold:
            result.fp[kind] += 1
        for _s, _e, kind in gold - predicted:
            result.fn[kind] += 1
        result.messages += 1
        result.exact_messages += mask_pii(row["text"]).text == row["expected"]
    return result


def format_table(result: Score) -> str:
    lines = [
        "| kind | gold spans | TP | FP | FN | precision | recall |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for kind in [k.value for k in PiiKind] + [None]:
        lines.append(
            f"| {kind or '**overall**'} | {result.gold(kind)} | {result._sum(result.tp, kind)} "
            f"| {result._sum(result.fp, kind)} | {result._sum(result.fn, kind)} "
            f"| {result.precision(kind):.3f} | {result.recall(kind):.3f} |"
        )
    lines.append(
        f"\n{result.messages} messages; masked text identical to the expected text in "
        f"{result.exact_messages} ({result.exact_messages / result.messages:.1%})."
    )
    return "\n".join(lines)


def test_corpus_is_well_formed():
    rows = load_corpus()
    assert len(rows) >= 250
    with_pii = sum(bool(r["spans"]) for r in rows)
    assert 0.35 <= with_pii / len(rows) <= 0.65
    assert {k for r in rows for _s, _e, k in r["spans"]} == {k.value for k in PiiKind}
    for row in rows:
        text, rebuilt, cursor = row["text"], [], 0
        for start, end, kind in sorted(row["spans"]):
            assert cursor <= start < end <= len(text)
            rebuilt += [text[cursor:start], MARKERS[PiiKind(kind)]]
            cursor = end
        assert "".join(rebuilt) + text[cursor:] == row["expected"]


def test_corpus_precision_and_recall():
    rows = load_corpus()
    overall = score(rows)
    print("\nPII masking on", CORPUS.name)
    print(format_table(overall))
    for split in ("dev", "holdout"):
        print(f"\nsplit = {split}")
        print(format_table(score([r for r in rows if r.get("split") == split])))
    assert overall.precision() >= 0.97
    assert overall.recall() >= 0.95
    for kind in PiiKind:
        assert overall.precision(kind.value) >= 0.9, kind
        assert overall.recall(kind.value) >= 0.9, kind

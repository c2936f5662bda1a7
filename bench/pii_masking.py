"""Throughput and accuracy of conversations.pii.mask_pii on the hand-marked corpus.

    .venv/bin/python bench/pii_masking.py [--messages 50000] [--rounds 3]

Repeats tests/data/pii_corpus.jsonl to about --messages messages, masks them all on one
core, and prints messages/s beside two baselines timed in the same run over the same
messages (`str.lower()` and one `re.sub` of a trivial pattern), so the figure can be read
on any machine. The best of --rounds rounds is reported. Then prints the precision and
recall table used by tests/test_pii.py.
"""
from __future__ import annotations

import argparse
import platform
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from conversations.pii import find_pii, mask_pii  # noqa: E402
from tests.test_pii import format_table, load_corpus, score  # noqa: E402

_TRIVIAL = re.compile(r"\d")


def best_rate(label: str, fn, messages: list[str], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for text in messages:
            fn(text)
        best = min(best, time.perf_counter() - started)
    rate = len(messages) / best
    print(f"  {label:<34} {rate:>12,.0f} msg/s  {best / len(messages) * 1e6:8.2f} µs/msg")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    rows = load_corpus()
    corpus = [r["text"] for r in rows]
    messages = (corpus * (args.messages // len(corpus) + 1))[: args.messages]
    with_pii = [r["text"] for r in rows if r["spans"]]
    without_pii = [r["text"] for r in rows if not r["spans"]]
    lengths = sorted(len(t) for t in corpus)

    print(f"Python {platform.python_version()} on {platform.machine()}, one core")
    print(
        f"{len(messages):,} messages from {len(corpus)} corpus lines "
        f"({len(with_pii)} with PII; length median {lengths[len(lengths) // 2]}, "
        f"max {lengths[-1]} characters); best of {args.rounds} rounds"
    )
    mask_pii("warm up 0912-345-678 a@b.tw")
    baseline_lower = best_rate("baseline: str.lower()", str.lower, messages, args.rounds)
    baseline_sub = best_rate(
        r"baseline: re.sub(r'\d', '#', text)",
        lambda t: _TRIVIAL.sub("#", t),
        messages,
        args.rounds,
    )
    rate = best_rate("mask_pii(text)", mask_pii, messages, args.rounds)
    half = args.messages // 2
    for label, subset in (
        ("  messages with PII only", with_pii),
        ("  messages without PII only", without_pii),
        ("  messages of 100+ characters only", [t for t in corpus if len(t) >= 100]),
    ):
        best_rate(label, mask_pii, (subset * (half // len(subset) + 1))[:half], args.rounds)
    print(
        f"mask_pii is {baseline_lower / rate:.0f}x the cost of str.lower() and "
        f"{baseline_sub / rate:.1f}x the cost of one trivial re.sub"
    )

    slowest = max(corpus, key=lambda t: _time_one(t))
    print(f"slowest corpus message ({_time_one(slowest) * 1e6:.0f} µs): {slowest!r}")
    print(f"matches found in the corpus: {sum(len(find_pii(t)) for t in corpus)}")

    print("\nPrecision and recall (strict: same start, end and kind)")
    print(format_table(score(rows)))
    for split in ("dev", "holdout"):
        print(f"\nsplit = {split}")
        print(format_table(score([r for r in rows if r.get("split") == split])))


def _time_one(text: str, repeat: int = 50) -> float:
    started = time.perf_counter()
    for _ in range(repeat):
        mask_pii(text)
    return (time.perf_counter() - started) / repeat


if __name__ == "__main__":
    main()

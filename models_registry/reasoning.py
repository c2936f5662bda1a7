"""Reasoning ("thinking") blocks some models write before their answer, taken out.

Qwen3, DeepSeek-R1 and their kin wrap their reasoning in <think>…</think> (or
<thinking>…</thinking>). It is not the answer, may quote the prompt at length, and is
never shown nor stored. A block cut off by the token limit (an opening tag never closed)
runs to the end; a closing tag with no opening one (the chat template opened it in the
prompt) ends reasoning that started the text.
"""
import re

_BLOCK = re.compile(r"<(think|thinking)\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_UNCLOSED = re.compile(r"<(?:think|thinking)\b[^>]*>.*\Z", re.IGNORECASE | re.DOTALL)
_LEADING_CLOSE = re.compile(r"\A.*?</(?:think|thinking)\s*>", re.IGNORECASE | re.DOTALL)
_OPEN = re.compile(r"<(?:think|thinking)\b[^>]*>", re.IGNORECASE)


def without_reasoning(text: str) -> str:
    """The text with every reasoning block removed, and the whitespace around it."""
    first_close = re.search(r"</(?:think|thinking)\s*>", text, re.IGNORECASE)
    if first_close and not _OPEN.search(text, 0, first_close.start()):
        text = _LEADING_CLOSE.sub("", text, count=1)
    text = _BLOCK.sub("", text)
    text = _UNCLOSED.sub("", text)
    return text.strip()

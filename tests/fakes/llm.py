"""Pieces shared by the fake language-model servers: default answer and tokens."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

_TOKEN = re.compile(r"\S+\s*|\s+")


def last_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """The content of the last ``user`` message (text parts joined)."""
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content", "")
            if isinstance(content, list):  # OpenAI-style content parts
                return "".join(part.get("text", "") for part in content if isinstance(part, Mapping))
            return str(content)
    return ""


def echo_chat(messages: Sequence[Mapping[str, Any]], options: Mapping[str, Any]) -> str:
    """Default chat responder: ``echo: <last user message>``."""
    return f"echo: {last_user_text(messages)}"


def echo_prompt(inputs: Mapping[str, Any]) -> str:
    """Default prompt responder: ``echo: <prompt>``."""
    return f"echo: {inputs.get('prompt', '')}"


def split_tokens(text: str) -> list[str]:
    """Word-sized pieces that join back into ``text`` exactly."""
    return _TOKEN.findall(text)


def count_tokens(text: str) -> int:
    """A plausible token count: whitespace-separated words, at least 1 for non-empty text."""
    return len(text.split()) or (1 if text else 0)


def truncate(text: str, max_tokens: Any) -> tuple[str, bool]:
    """Cut ``text`` to ``max_tokens`` tokens; returns (text, was_truncated)."""
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 0:
        return text, False
    tokens = split_tokens(text)
    if len(tokens) <= max_tokens:
        return text, False
    return "".join(tokens[:max_tokens]), True


def prompt_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """All message contents, for counting prompt tokens."""
    parts = []
    for message in messages:
        content = message.get("content", "")
        parts.append(content if isinstance(content, str) else str(content))
    return "\n".join(parts)

"""Pieces shared by the fake language-model servers: default answer and tokens."""

from __future__ import annotations

import base64
import binascii
import io
import re
from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image, UnidentifiedImageError

_TOKEN = re.compile(r"\S+\s*|\s+")
_DATA_URL = re.compile(r"data:(?P<type>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)", re.DOTALL)
# Pillow's format names as a data URL's media type says them.
_FORMAT_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif", "WEBP": "image/webp"}


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


class BadImage(ValueError):
    """An image part a vision model's server would refuse; the message says why."""


def decode_base64(text: Any) -> bytes:
    if not isinstance(text, str) or not text:
        raise BadImage("image data must be a non-empty base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadImage("illegal base64 data") from None


def decode_data_url(url: Any) -> tuple[str, bytes]:
    """``data:<type>;base64,<data>`` as (type, bytes)."""
    found = _DATA_URL.fullmatch(url) if isinstance(url, str) else None
    if found is None:
        raise BadImage("image url must be a data URL: data:<media type>;base64,<data>")
    return found.group("type"), decode_base64(found.group("data"))


def image_label(data: bytes, *, content_type: str | None = None) -> str:
    """``4x3 PNG``: the image decoded as a vision model's server decodes it, or BadImage."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            width, height, kind = image.width, image.height, image.format or "?"
    except (UnidentifiedImageError, OSError, ValueError):
        raise BadImage("image: unknown format") from None
    if content_type is not None and _FORMAT_TYPES.get(kind) != content_type:
        raise BadImage(f"image is {kind}, not the {content_type} its data URL says")
    return f"{width}x{height} {kind}"


def seen_images(labels: Sequence[str]) -> str:
    """What a vision model answers first when images came with the prompt."""
    if len(labels) == 1:
        return f"I see an image {labels[0]}. "
    return f"I see {len(labels)} images: {', '.join(labels)}. " if labels else ""

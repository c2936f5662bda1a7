"""Who a group message is for, and the text a model is shown of it.

The log keeps what the user wrote. What the model sees leaves out the bot's own mention and
the reply keyword, and shows another member's mention as that member's name; the spans that
say so are kept on the Message (`Message.mentions`) as `[start, end, kind, member id]`.
"""
from collections.abc import Callable

from .line.events import IncomingMessage, Mention
from .models import Chat, ReplyMode, SourceType

SELF, KEYWORD, MEMBER = "self", "keyword", "member"
Span = list  # [start, end, kind, member id or None]

def keyword_end(*, chat: Chat, text: str) -> int | None:
    """Where the reply keyword that opens `text` ends, in a group or room answered on its keyword."""
    prefix = chat.reply_prefix.strip()
    if chat.source_type == SourceType.USER or chat.reply_mode != ReplyMode.PREFIX or not prefix:
        return None
    stripped = text.lstrip()
    if not stripped.startswith(prefix):
        return None
    return len(text) - len(stripped) + len(prefix)


def is_addressed(*, chat: Chat, message: IncomingMessage) -> bool:
    """Whether the message is for the bot: any in a 1:1 chat or in reply mode "always"; in a
    group or room one that mentions the bot, or opens with the keyword in keyword mode."""
    if chat.source_type == SourceType.USER or chat.reply_mode == ReplyMode.ALWAYS:
        return True
    return message.mentions_self or keyword_end(chat=chat, text=message.text) is not None


def spans(*, chat: Chat, text: str, mentions: tuple[Mention, ...], member_ids: dict[str, int]) -> list[Span]:
    """The spans of `text` that the model sees differently, in order."""
    found: list[Span] = []
    end = keyword_end(chat=chat, text=text)
    if end is not None:
        found.append([0, end, KEYWORD, None])
    for mention in mentions:
        if end is not None and mention.start < end:
            continue
        if mention.is_self:
            found.append([mention.start, mention.end, SELF, None])
        elif mention.user_id:
            found.append([mention.start, mention.end, MEMBER, member_ids.get(mention.user_id)])
    return found


def transformed(text: str, spans: list[Span], transform: Callable[[str], str]) -> tuple[str, list[Span]]:
    """`transform` (PII masking) applied to each piece between and inside the spans on its own,
    so the spans still cover the same words afterwards."""
    pieces, cuts = [], sorted({0, len(text), *(bound for span in spans for bound in span[:2])})
    moved: dict[int, int] = {}
    position = 0
    for start, end in zip(cuts, cuts[1:]):
        moved[start] = position
        piece = transform(text[start:end])
        pieces.append(piece)
        position += len(piece)
    moved[len(text)] = position
    return "".join(pieces), [[moved[start], moved[end], kind, member] for start, end, kind, member in spans]


def for_model(text: str, spans: list[Span], *, names: dict[int, str] | None = None) -> str:
    """The text without the bot's mention and the keyword, other members' mentions as names."""
    names = names or {}
    out, position = "", 0
    for start, end, kind, member in _valid(spans, len(text)):
        out += text[position:start]
        if kind == MEMBER:
            out += names.get(member) or text[start:end].lstrip("@")
        elif text[end:end + 1].isspace():
            # "hi @Bot there" reads "hi there", not "hi  there".
            out = out.rstrip(" \t\u3000")
        position = end
    return (out + text[position:]).strip()


def _valid(spans: list, length: int) -> list[Span]:
    # The column is ours, yet a span that no longer fits its text (an edit missed) is skipped,
    # never applied to the wrong words.
    valid, position = [], 0
    for span in sorted((s for s in spans if isinstance(s, list) and len(s) == 4), key=lambda s: s[0]):
        start, end = span[0], span[1]
        if isinstance(start, int) and isinstance(end, int) and position <= start < end <= length:
            valid.append(span)
            position = end
    return valid

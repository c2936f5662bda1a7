"""Read-side queries: which channel a webhook is for, which preset a chat uses, prompt history."""
import time
from dataclasses import dataclass

from django.db.models import Q

from models_registry.models import SamplingPreset

from .pii import PiiKind
from .models import Chat, Direction, LineChannel, Message, PrivacyPolicy

_CHANNEL_TTL = 10.0
_channel_cache: dict[str | None, tuple[float, LineChannel | None]] = {}


def channel_for_webhook(*, slug: str | None) -> LineChannel | None:
    """The channel a webhook URL names, cached briefly: every request needs its secret.

    `slug=None` is /line/webhook/, the default channel (or the only one).
    """
    now = time.monotonic()
    cached = _channel_cache.get(slug)
    if cached and cached[0] > now:
        return cached[1]
    if slug is None:
        channel = LineChannel.objects.filter(is_default=True).first()
        if channel is None and LineChannel.objects.count() == 1:
            channel = LineChannel.objects.first()
    else:
        channel = LineChannel.objects.filter(slug=slug).first()
    _channel_cache[slug] = (now + _CHANNEL_TTL, channel)
    return channel


def forget_cached_channels() -> None:
    _channel_cache.clear()


def preset_for_chat(*, chat: Chat) -> SamplingPreset | None:
    """The chat's own preset, else its channel's default, else the global default."""
    preset_id = chat.preset_id or chat.channel.default_preset_id
    query = Q(pk=preset_id) if preset_id else Q(is_default=True)
    return SamplingPreset.objects.select_related("backend", "fallback_backend").filter(query).first()


def prompt_history(*, message: Message, turns: int) -> list[Message]:
    """The message and up to `turns` earlier ones of its chat, oldest first.

    Redacted, unsent and empty messages stay out, and so do the bot's apologies
    (outbound texts no backend wrote).
    """
    rows = (
        Message.objects.filter(chat_id=message.chat_id, id__lte=message.id, redacted=False, unsent=False)
        .exclude(text="")
        .exclude(direction=Direction.OUT, backend__isnull=True)
        .order_by("-id")
        .only("id", "direction", "text")[: turns + 1]
    )
    return list(reversed(rows))


_policy_cache: list = []


def privacy_policy() -> PrivacyPolicy:
    """The single privacy-policy row (created on first use), cached like channels."""
    now = time.monotonic()
    if _policy_cache and _policy_cache[0] > now:
        return _policy_cache[1]
    policy, _ = PrivacyPolicy.objects.get_or_create(pk=1)
    _policy_cache[:] = [now + _CHANNEL_TTL, policy]
    return policy


def masking_kinds() -> frozenset[PiiKind]:
    """The kinds of personal data the privacy policy asks to mask."""
    policy = privacy_policy()
    return frozenset(kind for kind in PiiKind if getattr(policy, f"mask_{kind.value}"))


def forget_cached_policy() -> None:
    _policy_cache.clear()


@dataclass
class ThreadPage:
    messages: list[Message]
    older_before_id: int | None


def thread_page(*, chat: Chat, before_id: int | None = None, size: int = 50) -> ThreadPage:
    """One page of a chat, oldest first, ending before `before_id` (newest when None)."""
    rows = Message.objects.filter(chat=chat).select_related("preset", "backend").order_by("-id")
    if before_id:
        rows = rows.filter(id__lt=before_id)
    page = list(rows[: size + 1])
    older = page[size - 1].id if len(page) > size else None
    return ThreadPage(messages=list(reversed(page[:size])), older_before_id=older)

"""Read-side queries: which channel a webhook is for, which preset a chat uses, prompt history."""
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import (
    Case, CharField, Count, Exists, F, OuterRef, Q, QuerySet, Subquery, Sum, Value, When,
)
from django.utils import timezone
from django_q.models import Schedule
from django_q.status import Stat

from core.caching import TTLCache
from core.models import AuditAction, AuditEvent
from models_registry.models import ModelBackend, SamplingPreset

from . import queue
from .line.events import CLOCK_SKEW as EVENT_CLOCK_SKEW
from .pii import PiiKind
from .models import (
    BOT_EVENT_TYPES, SKIP_RATE_LIMITED, SKIPS_NOT_ADDRESSED, Chat, ChatMember, Direction, GroupMemory, LineChannel,
    Message, PrivacyPolicy, SourceType, Status, pseudonym,
)

# Settings read on every webhook, per process: a change reaches every process within this.
SETTINGS_CACHE_SECONDS = 10.0
_channels: TTLCache[dict[str | None, LineChannel]] = TTLCache(seconds=SETTINGS_CACHE_SECONDS, max_entries=1)
_policy: TTLCache[PrivacyPolicy] = TTLCache(seconds=SETTINGS_CACHE_SECONDS, max_entries=1)
# Keyed by preset id (None: the global default), ids from our database.
_presets: TTLCache[SamplingPreset] = TTLCache(seconds=SETTINGS_CACHE_SECONDS, max_entries=256)


def channel_for_webhook(*, slug: str | None) -> LineChannel | None:
    """The channel a webhook URL names: every request needs its secret.

    `slug=None` is /line/webhook/, the default channel (or the only one). All channels are
    cached together, keyed by what the database holds, so requests for made-up slugs
    (unsigned, from anyone) add nothing to the cache.
    """
    return _channels.get_or_set("by_slug", _channels_by_slug).get(slug)


def _channels_by_slug() -> dict[str | None, LineChannel]:
    channels = list(LineChannel.objects.all())
    by_slug: dict[str | None, LineChannel] = {channel.slug: channel for channel in channels}
    default = next((channel for channel in channels if channel.is_default), None)
    real = [channel for channel in channels if not channel.is_simulated]
    if default is None and len(real) == 1:
        # The only channel that LINE calls; the simulator's Sandbox does not count.
        default = real[0]
    if default is not None:
        by_slug[None] = default
    return by_slug


def forget_cached_channels() -> None:
    _channels.clear()


def preset_for_chat(*, chat: Chat) -> SamplingPreset | None:
    """The chat's own preset, else its channel's default, else the global default."""
    return _preset(chat.preset_id or chat.channel.default_preset_id)


def preset_for_answer(*, chat: Chat) -> SamplingPreset | None:
    """`preset_for_chat` for the worker, which asks for every turn: presets and backends are
    settings, cached per process like the channels (a change made in another process counts
    within SETTINGS_CACHE_SECONDS; in this one at once). Not to be changed by its users."""
    preset_id = chat.preset_id or chat.channel.default_preset_id
    preset = _presets.get(preset_id)
    if preset is None:
        preset = _preset(preset_id)
        if preset is not None:  # none at all: asked again next time, so a new default counts at once
            _presets.set(preset_id, preset)
    return preset


def forget_cached_presets() -> None:
    _presets.clear()


def _preset(preset_id: int | None) -> SamplingPreset | None:
    query = Q(pk=preset_id) if preset_id else Q(is_default=True)
    return SamplingPreset.objects.select_related("backend", "fallback_backend").filter(query).first()


def prompt_history(*, message: Message, turns: int) -> list[Message]:
    """The message and up to `turns` earlier ones of its chat, oldest first.

    Left out: redacted, erased, unsent and empty messages (follow, join and leave rows are
    empty, so never in a prompt); commands and what the bot said itself (command answers, apologies: outbound texts no backend wrote); messages held back
    by the per-user limit; whatever came before the chat's last /reset; and, in a group that
    keeps only what is addressed to the bot, earlier messages that were not.
    """
    chat = message.chat
    # An answer stored after later questions came (they waited for it) still reads right after
    # the question it answers.
    before = Q(id__lte=message.id) | Q(direction=Direction.OUT, reply_to_id__lt=message.id)
    rows = (
        Message.objects.filter(before, chat_id=message.chat_id, redacted=False, erased=False,
                               unsent=False, command="")
        # A photo has no text, yet is part of the conversation (a voice message once transcribed).
        .exclude(Q(text="") & ~Q(message_type="image", direction=Direction.IN))
        .exclude(direction=Direction.OUT, backend__isnull=True)
        .exclude(skip_reason=SKIP_RATE_LIMITED)
    )
    if chat.context_reset_after:
        rows = rows.filter(id__gt=chat.context_reset_after)
    if chat.source_type != SourceType.USER and chat.group_memory == GroupMemory.ADDRESSED:
        rows = rows.exclude(skip_reason__in=SKIPS_NOT_ADDRESSED)
    rows = rows.order_by("-id").only(
        "id", "direction", "message_type", "text", "line_user_id", "mentions", "reply_to_id")[: turns + 1]
    return sorted(rows, key=_place_in_conversation)


def _place_in_conversation(message: Message) -> float:
    return message.reply_to_id + 0.5 if message.direction == Direction.OUT and message.reply_to_id else message.id


@dataclass
class Names:
    """How a group's prompt names people: by LINE user id (speakers) and by ChatMember id
    (the members a message mentions)."""

    speakers: dict[str, str]
    members: dict[int, str]

    def speaker(self, line_user_id: str) -> str:
        return self.speakers.get(line_user_id) or pseudonym(line_user_id)


def member_names(*, chat: Chat, messages: list[Message]) -> Names:
    """The names of the people who wrote or are mentioned in `messages`, as LINE gives them,
    else pseudonyms; one query. A mention of someone the bot never heard from keeps the
    words the writer's LINE showed (`addressing.for_model`)."""
    user_ids = {message.line_user_id for message in messages if message.line_user_id}
    member_ids = {span[3] for message in messages for span in message.mentions
                  if isinstance(span, list) and len(span) == 4 and isinstance(span[3], int)}
    return _names(chat, user_ids=user_ids, member_ids=member_ids)


def _names(chat: Chat, *, user_ids: set[str], member_ids: set[int]) -> Names:
    rows = ChatMember.objects.filter(chat=chat).filter(Q(line_user_id__in=user_ids) | Q(pk__in=member_ids))
    speakers, members = {}, {}
    for pk, line_user_id, name in rows.values_list("pk", "line_user_id", "display_name"):
        speakers[line_user_id] = members[pk] = name or pseudonym(line_user_id)
    return Names(speakers=speakers, members=members)


def privacy_policy() -> PrivacyPolicy:
    """The single privacy-policy row (created on first use), cached like channels."""
    return _policy.get_or_set("policy", lambda: PrivacyPolicy.objects.get_or_create(pk=1)[0])


def masking_kinds() -> frozenset[PiiKind]:
    """The kinds of personal data the privacy policy asks to mask."""
    policy = privacy_policy()
    return frozenset(kind for kind in PiiKind if getattr(policy, f"mask_{kind.value}"))


def forget_cached_policy() -> None:
    _policy.clear()


def with_activity(chats: QuerySet) -> QuerySet:
    """Chats annotated with `last_activity_at` and `messages_total`, each one index lookup."""
    return chats.annotate(
        last_activity_at=Subquery(Message.objects.filter(chat=OuterRef("pk")).order_by("-id").values("event_at")[:1]),
        messages_total=Subquery(
            Message.objects.filter(chat=OuterRef("pk")).order_by().values("chat").annotate(n=Count("id")).values("n")[:1]
        ),
    )


@dataclass
class ThreadEntry:
    """A message of the thread with the bot's answers to it, which the thread shows under it."""

    message: Message
    answers: list[Message]
    # Who said it: the 1:1 chat's name, or in a group or room the name the prompt gives them.
    sender_name: str = ""

    @property
    def is_event(self) -> bool:
        """Follow, unfollow, join or leave: a line in the thread, not a bubble."""
        return self.message.direction == Direction.IN and self.message.message_type in BOT_EVENT_TYPES


@dataclass
class ThreadPage:
    entries: list[ThreadEntry]
    older_before_id: int | None


def thread_page(*, chat: Chat, before_id: int | None = None, size: int = 50) -> ThreadPage:
    """One page of a chat, oldest first, ending before `before_id` (newest when None).

    Pages count the chat's messages other than linked answers; each answer comes with its
    question (one more query, by `reply_to`), so it is never split from it by a page break
    nor by what others said in a group meanwhile (the privacy notice likewise stays with the
    follow or join it answers). Each entry names its sender as the prompt names its speaker.
    """
    rows = (Message.objects.filter(chat=chat).filter(Q(direction=Direction.IN) | Q(reply_to__isnull=True))
            .select_related("preset", "backend", "media").order_by("-id"))
    if before_id:
        rows = rows.filter(id__lt=before_id)
    page = list(rows[: size + 1])
    older = page[size - 1].id if len(page) > size else None
    shown = list(reversed(page[:size]))
    answers: dict[int, list[Message]] = {}
    questions = [message.pk for message in shown if message.direction == Direction.IN]
    if questions:
        for answer in (Message.objects.filter(reply_to_id__in=questions, direction=Direction.OUT)
                       .select_related("preset", "backend").order_by("id")):
            answers.setdefault(answer.reply_to_id, []).append(answer)
    if chat.source_type == SourceType.USER:
        def sender(message: Message) -> str:
            return chat.display_name or pseudonym(message.line_user_id)
    else:
        names = member_names(chat=chat, messages=shown)

        def sender(message: Message) -> str:
            return names.speaker(message.line_user_id) if message.line_user_id else ""
    entries = [ThreadEntry(message, answers.get(message.pk, []),
                           sender(message) if message.direction == Direction.IN and message.line_user_id else "")
               for message in shown]
    return ThreadPage(entries=entries, older_before_id=older)


@dataclass
class SenderFigures:
    """One member of a group or room: their messages, what became of them, and the tokens of
    the bot's answers to them."""

    name: str
    messages: int
    answered: int
    skipped: int
    prompt_tokens: int
    completion_tokens: int


@dataclass
class ChatFigures:
    """A chat's figures, over all it has kept. Follow, join and leave rows are not messages;
    tokens are those of the bot's answers (commands and notices use none)."""

    messages_in: int = 0
    messages_out: int = 0  # the bot's: answers, command answers, notices
    answered: int = 0
    skipped: int = 0
    skipped_by_reason: dict[str, int] = field(default_factory=dict)  # commonest first
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # Groups and rooms, with `top_senders`: the members with the most messages, busiest first.
    senders: list[SenderFigures] = field(default_factory=list)
    more_senders: int = 0  # members left out of `senders`


def chat_figures(*, chat: Chat, top_senders: int = 0) -> ChatFigures:
    """Counts and tokens of one chat, from aggregate queries along the (chat, id) index.

    One GROUP BY over the chat's rows gives the chat's figures; in a group or room with
    `top_senders`, one more gives each member's (by sender), and a third the tokens of the
    answers to the `top_senders` busiest (joined to their questions), then their names as
    the thread shows them. Messages whose sender was erased count for the chat only.
    """
    figures = ChatFigures()
    reasons: Counter[str] = Counter()
    rows = (Message.objects.filter(chat=chat).order_by().values_list("direction", "status", "skip_reason")
            .annotate(n=Count("id"), events=Count("id", filter=Q(message_type__in=BOT_EVENT_TYPES)),
                      prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens")))
    for direction, status, reason, count, events, prompt, completion in rows:
        if direction == Direction.OUT:
            figures.messages_out += count
            figures.prompt_tokens += prompt or 0
            figures.completion_tokens += completion or 0
            continue
        count -= events
        figures.messages_in += count
        if status == Status.REPLIED:
            figures.answered += count
        elif status == Status.FAILED:
            figures.failed += count
        elif status == Status.SKIPPED and count:
            figures.skipped += count
            reasons[reason] += count
    figures.skipped_by_reason = dict(reasons.most_common())
    if top_senders and chat.source_type != SourceType.USER:
        figures.senders, figures.more_senders = _sender_figures(chat, top=top_senders)
    return figures


def _sender_figures(chat: Chat, *, top: int) -> tuple[list[SenderFigures], int]:
    # Every sender's counts (a group has a few hundred at most), busiest first; the tokens and
    # names only for those shown.
    counts = list(
        Message.objects.filter(chat=chat, direction=Direction.IN).exclude(line_user_id="")
        .exclude(message_type__in=BOT_EVENT_TYPES).order_by().values_list("line_user_id")
        .annotate(n=Count("id"), answered=Count("id", filter=Q(status=Status.REPLIED)),
                  skipped=Count("id", filter=Q(status=Status.SKIPPED)))
        .order_by("-n", "line_user_id")
    )
    shown = counts[:top]
    user_ids = [row[0] for row in shown]
    tokens = {user_id: (prompt or 0, completion or 0) for user_id, prompt, completion in (
        Message.objects.filter(chat=chat, direction=Direction.OUT, reply_to__line_user_id__in=user_ids).order_by()
        .values_list("reply_to__line_user_id").annotate(Sum("prompt_tokens"), Sum("completion_tokens")))}
    names = _names(chat, user_ids=set(user_ids), member_ids=set())
    return [SenderFigures(names.speaker(user_id), n, answered, skipped, *tokens.get(user_id, (0, 0)))
            for user_id, n, answered, skipped in shown], len(counts) - len(shown)


def with_sender_names(messages: QuerySet) -> QuerySet:
    """Messages annotated with `sender_name`: the 1:1 chat's name, or the member's name in
    a group ("" when not known: show `pseudonym`); one index lookup per row."""
    member_name = ChatMember.objects.filter(chat=OuterRef("chat"), line_user_id=OuterRef("line_user_id"))
    return messages.annotate(sender_name=Case(
        When(direction=Direction.OUT, then=Value("")),
        When(chat__source_type=SourceType.USER, then=F("chat__display_name")),
        default=Subquery(member_name.values("display_name")[:1]),
        output_field=CharField(),
    ))


def sent_by_name(name: str) -> Q:
    """Inbound messages whose sender's name (in their group, or of their 1:1 chat) holds `name`."""
    members = ChatMember.objects.filter(chat=OuterRef("chat"), line_user_id=OuterRef("line_user_id"),
                                        display_name__icontains=name)
    return Q(direction=Direction.IN) & (
        Q(chat__source_type=SourceType.USER, chat__display_name__icontains=name) | Q(Exists(members)))


def group_memory_counts() -> list[dict]:
    """Groups and rooms per group-memory setting, for the dashboard."""
    counts = dict(Chat.objects.exclude(source_type=SourceType.USER).order_by().values_list("group_memory")
                  .annotate(n=Count("id")))
    return [{"value": value, "label": label, "count": counts.get(value, 0)} for value, label in GroupMemory.choices]


def erasure_requests(*, latest: int = 5) -> dict:
    """Self-service erasures a legal hold stopped (in part): for the compliance officer."""
    events = AuditEvent.objects.filter(action=AuditAction.ERASURE_REQUESTED).order_by("-created_at", "-id")
    return {"count": events.count(), "latest": list(events.values("id", "created_at", "target_id", "details")[:latest])}


def dashboard_stats(*, now: datetime | None = None, days: int = 14, latency_days: int = 7,
                    include_simulated: bool = True) -> dict:
    """The dashboard's figures: traffic per day, latency per backend, failures, queue, workers.

    Without `include_simulated`, messages of the simulator's chats are left out."""
    now = now or timezone.now()
    messages = Message.objects.all() if include_simulated else Message.objects.exclude(chat__channel__is_simulated=True)
    tz = timezone.get_current_timezone()
    first_day = (now.astimezone(tz) - timedelta(days=days - 1)).date()
    # One small GROUP BY per local day, each read from the (event_at, direction) index alone;
    # a single pass with 28 conditional counts was five times slower on SQLite.
    days_list = [first_day + timedelta(days=i) for i in range(days)]
    bounds = [datetime.combine(day, datetime.min.time(), tzinfo=tz) for day in days_list]
    bounds.append(bounds[-1] + timedelta(days=1))
    events = _bot_events_per_day(messages, since=bounds[0], until=bounds[-1], tz=tz)
    per_day = []
    for index, day in enumerate(days_list):
        # COUNT(*), not of a column the index lacks: PostgreSQL then reads the index alone.
        counts = dict(messages.filter(event_at__gte=bounds[index], event_at__lt=bounds[index + 1])
                      .values_list("direction").annotate(n=Count("*")).order_by())
        per_day.append({"day": day, "in": counts.get(Direction.IN, 0) - events[day],
                        "out": counts.get(Direction.OUT, 0)})
    return {
        "generated_at": now,
        "messages_per_day": per_day,
        "latency_by_backend": latency_by_backend(since=now - timedelta(days=latency_days), messages=messages),
        "media_messages": media_message_counts(messages, since=bounds[0]),
        "failures_24h": messages.filter(
            direction=Direction.IN, status=Status.FAILED, status_changed_at__gte=now - timedelta(hours=24)).count(),
        "queue_depth": queue_depth(),
        "workers_alive": workers_alive(now=now),
    }


MEDIA_COUNTED = {"image": "photos", "audio": "voice"}


def media_message_counts(messages: QuerySet, *, since: datetime) -> dict[str, int]:
    """Photos and voice messages received since `since`, and how many voice messages were
    transcribed (their text is the transcript)."""
    rows = (messages.filter(direction=Direction.IN, event_at__gte=since, message_type__in=list(MEDIA_COUNTED))
            .values_list("message_type").annotate(n=Count("id"), heard=Count("id", filter=~Q(text="")))
            .order_by())
    counts = {name: 0 for name in MEDIA_COUNTED.values()} | {"transcribed": 0}
    for message_type, count, heard in rows:
        counts[MEDIA_COUNTED[message_type]] = count
        if message_type == "audio":
            counts["transcribed"] = heard
    return counts


def _bot_events_per_day(messages: QuerySet, *, since: datetime, until: datetime, tz) -> Counter:
    """Follow, join and leave rows per local day, which the per-day counts take out: they are
    not messages.

    Read along the (status, status_changed_at) index: events are all `skipped`, and stored no
    earlier than LINE's clock says they happened, less the skew `line.events` lets pass. The
    window on event_at is applied here, not in SQL, where it would lead SQLite to scan the
    time index instead; filtering the per-day counts on message_type would make each of them
    read its rows (twice the time on a million messages).
    """
    moments = (messages.filter(status=Status.SKIPPED, status_changed_at__gte=since - EVENT_CLOCK_SKEW,
                               message_type__in=BOT_EVENT_TYPES)
               .order_by().values_list("event_at", flat=True))
    return Counter(moment.astimezone(tz).date() for moment in moments if since <= moment < until)


def latency_by_backend(*, since: datetime, sample: int = 20_000, messages: QuerySet | None = None) -> list[dict]:
    """p50 and p95 answer latency per backend since `since`, over at most `sample` recent answers each."""
    result = []
    answers = (Message.objects.all() if messages is None else messages).filter(direction=Direction.OUT, event_at__gte=since, latency_ms__isnull=False)
    for backend_id, name in ModelBackend.objects.order_by("name").values_list("id", "name"):
        recent = answers.filter(backend_id=backend_id).order_by("-event_at")
        values = sorted(recent.values_list("latency_ms", flat=True)[:sample])
        if values:
            result.append({"backend": name, "answers": len(values), "p50_ms": _percentile(values, 0.50),
                           "p95_ms": _percentile(values, 0.95)})
    return result


def _percentile(ordered: list[int], share: float) -> int:
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def queue_depth() -> int | None:
    """Tasks waiting in django-q2's broker; None when the broker cannot be reached."""
    try:
        return queue.broker().queue_size()
    except Exception:  # a broker that is down must not take the dashboard with it
        return None


def workers_alive(*, now: datetime) -> int:
    """Worker processes of running qclusters (0: none).

    Clusters publish their status through the broker (Redis) or the cache; where this
    process cannot see it (the ORM broker with a per-process cache), a scheduler that
    keeps the minute-by-minute sweep on time counts as one. A schedule that never ran
    (no task yet) says nothing, however fresh its next_run.
    """
    try:
        processes = sum(len(stat.workers) for stat in Stat.get_all(broker=queue.broker()))
    except Exception:  # a broker that is down must not take the dashboard with it
        processes = 0
    if processes:
        return processes
    return int(Schedule.objects.filter(
        func=queue.SWEEP_TASK, task__isnull=False, next_run__gt=now - timedelta(seconds=150)).exists())

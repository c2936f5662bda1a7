"""One answer at a time per chat: claiming a chat's next turn, and letting it go.

A turn is the chat's oldest pending messages, answered together: a command, a postback or a
message the bot answers itself (a video, a file…) on its own; otherwise every message for the
model — a plain text, a photo, a voice message — up to the next such one (the
last of them, the "lead", is what the answer replies to: its reply token is the newest). The
worker that claims a turn holds the chat under a lease it renews while it works
(`renew_claims`), and a slot on the backend that will generate the answer
(`models_registry.concurrency`); while it holds them, the chat's later messages wait in the
database. A worker that dies lets its lease expire, and the sweeper gives its messages back.
"""
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from core.sqlite_writes import one_writer_at_a_time
from models_registry import concurrency
from models_registry.models import ModelBackend, SamplingPreset
from models_registry.services import allowed_backends

from . import selectors
from .line.events import MEDIA_WITH_CONTENT
from .models import Chat, Direction, Message, Status

# More pending messages than this wait for the next turn: a prompt has room for only so many.
MAX_TURN_MESSAGES = 20
# What a model answers ("What is this?" and the photo after it are one turn); any other type
# gets the bot's own short answer.
MODEL_MESSAGE_TYPES = frozenset({"text", *MEDIA_WITH_CONTENT})


class Outcome(Enum):
    CLAIMED = "claimed"
    BUSY = "busy"  # another worker is answering in the chat
    WAITING = "waiting"  # the backend is at its limit: the chat waits for a free slot
    NOTHING = "nothing"  # nothing left to answer


@dataclass
class Turn:
    chat_id: int
    claim: str
    message_ids: tuple[int, ...]
    backend_id: int | None
    # The chat (with its channel) and its preset as read when the turn was claimed.
    chat: Chat | None = field(default=None, compare=False, repr=False)
    preset: SamplingPreset | None = field(default=None, compare=False, repr=False)
    # Whether a photo or voice message is among the messages (None: not known, look).
    media: bool | None = field(default=None, compare=False)
    # The backend slot was given back (once the answer was generated).
    slot_given_back: bool = field(default=False, compare=False)
    # Once the chat is given back: (the chat woken for the slot, the chat's next pending message).
    ended: tuple[int | None, int | None] | None = field(default=None, compare=False)

    @property
    def lead_id(self) -> int:
        return self.message_ids[-1]


def lease_seconds() -> float:
    return settings.LINEBOT["CLAIM_LEASE"]


def claim_turn(*, chat_id: int, now: datetime | None = None) -> tuple[Outcome, Turn | None]:
    """Claims the chat's next turn for this worker.

    What the turn holds is read first, outside the write transaction; the transaction then
    only takes the chat, the backend slot and the messages, each write conditional on what
    was read still holding (another worker may have been quicker: then it is done again).
    """
    now = now or timezone.now()
    for _ in range(3):
        outcome, turn = _try_claim(chat_id=chat_id, now=now)
        if outcome is not None:
            return outcome, turn
    return Outcome.BUSY, None  # others keep taking the messages from under it: they are answering


def _try_claim(*, chat_id: int, now: datetime) -> tuple[Outcome | None, Turn | None]:
    chat = Chat.objects.select_related("channel").filter(pk=chat_id).first()
    if chat is None:
        return Outcome.NOTHING, None
    if chat.answering_claim and chat.answering_until and chat.answering_until > now:
        return Outcome.BUSY, None
    pending = list(
        Message.objects.filter(chat_id=chat_id, direction=Direction.IN, status=Status.PENDING,
                               attempts__lt=settings.LINEBOT["MAX_ATTEMPTS"])
        .order_by("id").values_list("id", "command", "message_type", "attempts")[:MAX_TURN_MESSAGES]
    )
    unheld = Q(answering_claim="") | Q(answering_until__lte=now) | Q(answering_until__isnull=True)
    if not pending:
        if chat.answering_claim or chat.waiting_for_id or chat.waiting_since:
            with one_writer_at_a_time():
                Chat.objects.filter(unheld, pk=chat_id).update(answering_claim="", answering_until=None,
                                                               waiting_for=None, waiting_since=None)
        return Outcome.NOTHING, None
    message_ids = _turn_of(pending)
    claim = secrets.token_hex(16)
    until = now + timedelta(seconds=lease_seconds())
    preset = selectors.preset_for_answer(chat=chat) if _needs_model(pending[0]) else None
    backend = _generating_backend(chat, preset)
    with one_writer_at_a_time(), transaction.atomic():
        if not Chat.objects.filter(unheld, pk=chat_id).update(answering_claim=claim, answering_until=until,
                                                              waiting_for=None, waiting_since=None):
            return Outcome.BUSY, None
        if backend is not None and not concurrency.take_slot(backend=backend, holder=claim, until=until, now=now):
            Chat.objects.filter(pk=chat_id).update(answering_claim="", answering_until=None, waiting_for=backend,
                                                   waiting_since=chat.waiting_since or now)
            return Outcome.WAITING, None
        claimed = Message.objects.filter(id__in=message_ids, status=Status.PENDING).update(
            status=Status.GENERATING, attempts=F("attempts") + 1, status_changed_at=now)
        if claimed != len(message_ids):
            transaction.set_rollback(True)  # answered meanwhile: read the chat again
            return None, None
    return Outcome.CLAIMED, Turn(chat_id=chat_id, claim=claim, message_ids=message_ids,
                                 backend_id=backend.pk if backend else None, chat=chat, preset=preset,
                                 media=any(row[2] in MEDIA_WITH_CONTENT for row in pending if row[0] in message_ids))


def _needs_model(first: tuple) -> bool:
    _, command, message_type, _ = first
    return not command and message_type in MODEL_MESSAGE_TYPES


def _turn_of(pending: list[tuple]) -> tuple[int, ...]:
    """The ids answered together: a message the bot answers itself alone, else the run of
    messages for the model; cut at the first one that already has a stored answer (a run before this
    one stored it and died: that answer is sent, not another)."""
    if not _needs_model(pending[0]):
        return (pending[0][0],)
    run = []
    for row in pending:
        if not _needs_model(row):
            break
        run.append(row[0])
    retried = [row[0] for row in pending if row[0] in run and row[3] > 0]
    if retried:
        answered = set(Message.objects.filter(reply_to_id__in=retried, direction=Direction.OUT)
                       .values_list("reply_to_id", flat=True))
        if answered:
            run = [message_id for message_id in run if message_id <= min(answered)]
    return tuple(run)


def _generating_backend(chat: Chat, preset: SamplingPreset | None) -> ModelBackend | None:
    """The backend the answer will be asked of first (its slot is what the turn waits for)."""
    if preset is None:
        return None
    backends = allowed_backends(preset=preset, local_only=chat.local_only)
    return backends[0] if backends else None


def give_back_slot(*, turn: Turn) -> int | None:
    """Gives the turn's backend slot back, once, and takes the chat that waited longest for
    one off the waiting list: its id, to be answered next. Call inside a transaction."""
    if turn.backend_id is None or turn.slot_given_back:
        return None
    turn.slot_given_back = True
    if not concurrency.release_slot(holder=turn.claim):
        return None  # it expired and was swept: whoever took it woke the waiting chat
    return wake_waiting_chat(backend_id=turn.backend_id)


def release_turn(*, turn: Turn) -> None:
    """Gives the chat back, only if the claim is still this worker's (the slot: `give_back_slot`)."""
    Chat.objects.filter(pk=turn.chat_id, answering_claim=turn.claim).update(answering_claim="",
                                                                             answering_until=None)


def renew_claims(*, claims: list[str], now: datetime | None = None) -> None:
    """Extends the leases of the turns this worker is answering (its heartbeat)."""
    if not claims:
        return
    until = (now or timezone.now()) + timedelta(seconds=lease_seconds())
    Chat.objects.filter(answering_claim__in=claims).update(answering_until=until)
    concurrency.renew_slots(holders=claims, until=until)


def wake_waiting_chat(*, backend_id: int) -> int | None:
    """Takes the chat that has waited longest for a slot on the backend off the waiting list.

    Taken with a conditional UPDATE, so two turns ending at once wake two chats, not one
    twice; the chat keeps its `waiting_since`, its place if it must wait again.
    """
    for _ in range(5):
        chat_id = (Chat.objects.filter(waiting_for_id=backend_id).order_by("waiting_since", "id")
                   .values_list("id", flat=True).first())
        if chat_id is None:
            return None
        if Chat.objects.filter(pk=chat_id, waiting_for_id=backend_id).update(waiting_for=None):
            return chat_id
    return None


def first_pending_message(*, chat_id: int, after: int = 0) -> int | None:
    return (Message.objects.filter(chat_id=chat_id, direction=Direction.IN, status=Status.PENDING, id__gt=after)
            .order_by("id").values_list("id", flat=True).first())


def expired_claims(*, now: datetime) -> Q:
    """Messages of chats nobody holds (never claimed, released, or the lease ran out)."""
    return Q(chat__answering_claim="") | Q(chat__answering_until__lt=now) | Q(chat__answering_until__isnull=True)

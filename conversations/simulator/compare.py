"""Comparing presets on a conversation: its last user turns answered again by each preset.

Each user turn is answered as the pipeline would have answered it then (the same history
from the log, `answering.prompt_turns`), by `generate` with the chat's local-only rule and
masking for cloud backends (`answering.masked_for_cloud`). Nothing goes to LINE and nothing
enters the conversation log; the replayed answers are kept for COMPARISON_KEEP, then go.
The replay runs as a django-q2 task, step by step, so it shows progress and can be cancelled.
"""
import logging
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.translation import gettext as _

from core import audit
from models_registry.models import SamplingPreset
from models_registry.services import GenerationFailed, allowed_backends, generate

from .. import answering
from ..models import Chat, Direction, Message
from ..queue import COMPARE_TASK, enqueue_after_commit
from .models import ComparisonAnswer, ComparisonState, PresetComparison

logger = logging.getLogger(__name__)

COMPARISON_KEEP = timedelta(days=1)
MAX_EXCHANGES = 10
MAX_PRESETS = 6
ACTIVE = (ComparisonState.QUEUED, ComparisonState.RUNNING)


def replayable_messages(*, chat: Chat, exchanges: int) -> list[Message]:
    """The user turns of the chat's last `exchanges` exchanges (texts the bot answered), oldest first."""
    rows = (Message.objects.filter(chat=chat, direction=Direction.IN, message_type="text", redacted=False,
                                   unsent=False, erased=False, replies__direction=Direction.OUT)
            .exclude(text="").order_by("-id").distinct()[:exchanges])
    return list(reversed(rows))


def start_comparison(*, chat: Chat, presets: list[SamplingPreset], exchanges: int, actor) -> PresetComparison:
    """Queues a replay of the last `exchanges` user turns against each preset; reading them is audited."""
    presets = list({preset.pk: preset for preset in presets}.values())
    if not 2 <= len(presets) <= MAX_PRESETS:
        raise ValidationError(_("Choose between 2 and %(max)d presets.") % {"max": MAX_PRESETS})
    if not 1 <= exchanges <= MAX_EXCHANGES:
        raise ValidationError(_("Replay between 1 and %(max)d exchanges.") % {"max": MAX_EXCHANGES})
    messages = replayable_messages(chat=chat, exchanges=exchanges)
    if not messages:
        raise ValidationError(_("This chat has no answered messages to replay yet."))
    purge_expired_comparisons()
    with transaction.atomic():
        comparison = PresetComparison.objects.create(
            chat=chat, message_ids=[message.pk for message in messages], total=len(messages) * len(presets),
            requested_by=actor if isinstance(actor, str) else actor.get_username())
        comparison.presets.set(presets)
        audit.record_conversation_view(
            actor=actor, target_type="chat", target_id=chat.pk, via="admin", what="preset comparison",
            comparison=comparison.pk, presets=sorted(preset.name for preset in presets), exchanges=len(messages))
        enqueue_after_commit(COMPARE_TASK, comparison.pk)
    return comparison


def run_comparison(*, comparison_id: int) -> None:
    """The task: answers each (user turn, preset) not answered yet, until done or cancelled.

    Safe to run again (a retried task): finished steps are skipped, one row per step.
    """
    claimed = PresetComparison.objects.filter(pk=comparison_id, state__in=ACTIVE).update(
        state=ComparisonState.RUNNING)
    if not claimed:
        return
    comparison = PresetComparison.objects.select_related("chat__channel").get(pk=comparison_id)
    chat = comparison.chat
    presets = list(comparison.presets.select_related("backend", "fallback_backend").order_by("name"))
    messages = {m.pk: m for m in Message.objects.filter(pk__in=comparison.message_ids, chat=chat)}
    finished = set(comparison.answers.values_list("message_id", "preset_id"))
    prepare = answering.masked_for_cloud(chat)
    try:
        for message_id in comparison.message_ids:
            for preset in presets:
                if (message_id, preset.pk) in finished:
                    continue
                if _cancelled(comparison_id):
                    return
                _replay_one(comparison, messages.get(message_id), message_id, preset, chat=chat, prepare=prepare)
    except Exception as exc:  # a bug must not leave the page waiting for ever
        logger.exception("Preset comparison %s failed", comparison_id)
        PresetComparison.objects.filter(pk=comparison_id, state=ComparisonState.RUNNING).update(
            state=ComparisonState.FAILED, error=str(exc)[:500], finished_at=timezone.now())
        return
    PresetComparison.objects.filter(pk=comparison_id, state=ComparisonState.RUNNING).update(
        state=ComparisonState.DONE, finished_at=timezone.now())


def _replay_one(comparison, message: Message | None, message_id: int, preset: SamplingPreset, *, chat: Chat,
                prepare) -> None:
    fields = {}
    if message is None or message.redacted or message.erased or message.unsent:
        fields["error"] = _("This message is no longer in the log.")
    else:
        try:
            generation = generate(preset=preset, turns=answering.prompt_turns(message=message, preset=preset),
                                  local_only=chat.local_only, prepare=prepare)
        except GenerationFailed as exc:
            fields["error"] = str(exc)
        else:
            completion = generation.completion
            fields = {"text": completion.text, "backend_name": generation.backend.name,
                      "backend_is_local": generation.backend.is_local, "latency_ms": generation.latency_ms,
                      "prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens}
    try:
        with transaction.atomic():
            ComparisonAnswer.objects.create(comparison=comparison, message_id=message_id, preset=preset, **fields)
    except IntegrityError:
        return  # another run of this task answered it first
    PresetComparison.objects.filter(pk=comparison.pk).update(done=F("done") + 1)


def _cancelled(comparison_id: int) -> bool:
    return not PresetComparison.objects.filter(pk=comparison_id, state=ComparisonState.RUNNING).exists()


def cancel_comparison(*, comparison: PresetComparison) -> bool:
    """Stops a comparison before its next step; False when it had already ended."""
    return bool(PresetComparison.objects.filter(pk=comparison.pk, state__in=ACTIVE).update(
        state=ComparisonState.CANCELLED, finished_at=timezone.now()))


def purge_expired_comparisons(*, now=None) -> int:
    """Replayed answers come from a conversation: they are kept a day, not for ever."""
    now = now or timezone.now()
    return PresetComparison.objects.filter(created_at__lt=now - COMPARISON_KEEP).delete()[0]


def comparison_report(*, comparison: PresetComparison) -> dict:
    """The page's data: one row per user turn, one column per preset, JSON-ready."""
    presets = list(comparison.presets.select_related("backend", "fallback_backend").order_by("name"))
    chat = comparison.chat
    messages = {m.pk: m for m in Message.objects.filter(pk__in=comparison.message_ids, chat=chat)}
    originals = {a.reply_to_id: a for a in Message.objects.filter(
        reply_to_id__in=comparison.message_ids, direction=Direction.OUT).select_related("backend", "preset")}
    cells = {(a.message_id, a.preset_id): a for a in comparison.answers.all()}
    rows = []
    for message_id in comparison.message_ids:
        message = messages.get(message_id)
        gone = message is None or message.redacted or message.erased or message.unsent
        original = originals.get(message_id)
        rows.append({
            "message_id": message_id,
            "text": _("(no longer in the log)") if gone else message.text,
            "original": None if gone or original is None else {
                "text": original.text, "latency_ms": original.latency_ms,
                "backend": original.backend.name if original.backend else "",
                "preset": original.preset.name if original.preset else ""},
            "answers": [_cell(cells.get((message_id, preset.pk)), hidden=gone) for preset in presets],
        })
    return {
        "id": comparison.pk, "state": comparison.state, "state_label": comparison.get_state_display(),
        "done": comparison.done, "total": comparison.total, "error": comparison.error,
        "presets": [_preset_column(preset, local_only=chat.local_only) for preset in presets],
        "rows": rows,
    }


def _preset_column(preset: SamplingPreset, *, local_only: bool) -> dict:
    usable = allowed_backends(preset=preset, local_only=local_only)
    backends = [preset.backend] + ([preset.fallback_backend] if preset.fallback_backend else [])
    return {"id": preset.pk, "name": preset.name, "backends": [
        {"name": backend.name, "model": backend.model, "local": backend.is_local, "used": backend in usable}
        for backend in backends]}


def _cell(answer: ComparisonAnswer | None, *, hidden: bool) -> dict | None:
    if answer is None:
        return None
    return {"text": "" if hidden else answer.text, "error": answer.error, "backend": answer.backend_name,
            "local": answer.backend_is_local, "latency_ms": answer.latency_ms,
            "prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens}

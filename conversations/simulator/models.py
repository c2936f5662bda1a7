"""What the simulator keeps: its chats and members, the events it sent, the calls its
Messaging API emulator answered, and preset comparisons.

None of this holds what was said: the texts live in `Message` rows, where redaction,
erasure and retention reach them. The emulator records the shape of each call (types,
lengths, quote tokens), and reads the texts back from the answer it delivered. The one
exception is a photo or voice message uploaded with an event, kept as LINE keeps what users
send until the worker fetches it: a day at most, and not at all once the bot did not store it.
"""
import posixpath
import uuid

from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from models_registry.models import SamplingPreset

from ..media.storage import media_storage
from ..models import Chat, LineChannel, Message, SourceType


class Trouble(models.TextChoices):
    """How the emulator answers reply and push calls, as LINE does on a bad day."""

    NONE = "", _("none: LINE answers normally")
    RATE_LIMITED_ONCE = "429_once", _("next call: 429 rate limit")
    SERVER_ERROR_ONCE = "500_once", _("next call: 500 server error")
    SERVER_ERROR_ALWAYS = "500_always", _("every call: 500 (LINE is down)")
    EXPIRED_REPLY_TOKEN = "expired", _("reply tokens expired")


class SimulatedChat(models.Model):
    """A 1:1 chat, group or room played in the console; its `Chat` is made by the webhook."""

    channel = models.ForeignKey(LineChannel, on_delete=models.CASCADE, related_name="simulated_chats",
                                limit_choices_to={"is_simulated": True}, verbose_name=_("channel"))
    source_type = models.CharField(_("type"), max_length=8, choices=SourceType.choices)
    line_id = models.CharField(_("LINE ID"), max_length=64)
    title = models.CharField(_("name"), max_length=100, blank=True, default="")
    trouble = models.CharField(_("LINE trouble"), max_length=12, choices=Trouble.choices, default=Trouble.NONE,
                               blank=True)
    created_by = models.CharField(max_length=150, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("simulated chat")
        verbose_name_plural = _("simulator")
        constraints = [models.UniqueConstraint(fields=["channel", "line_id"], name="unique_simulated_chat")]

    def __str__(self) -> str:
        return self.title or f"{self.get_source_type_display()} {self.line_id[-6:]}"

    def chat(self) -> Chat | None:
        return Chat.objects.filter(channel_id=self.channel_id, line_id=self.line_id).first()


class SimulatedMember(models.Model):
    """Someone the operator types as; kept after leaving, so earlier messages keep a name."""

    simulated_chat = models.ForeignKey(SimulatedChat, on_delete=models.CASCADE, related_name="members")
    user_id = models.CharField(max_length=64)
    display_name = models.CharField(_("name"), max_length=20)
    left_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["simulated_chat", "user_id"], name="unique_simulated_member")]

    def __str__(self) -> str:
        return self.display_name


def simulated_content_name(instance: "SimulatedEvent", filename: str) -> str:
    # A folder of its own and a random name, as the pipeline's files have (media.models).
    return f"simulator/{uuid.uuid4().hex}{posixpath.splitext(filename)[1].lower()}"


class SimulatedEvent(models.Model):
    """A webhook event the simulator delivered: the tokens LINE would have issued with it."""

    simulated_chat = models.ForeignKey(SimulatedChat, on_delete=models.CASCADE, related_name="events")
    event_type = models.CharField(max_length=32)
    message_type = models.CharField(max_length=16, blank=True, default="")
    webhook_event_id = models.CharField(max_length=32, unique=True)
    line_message_id = models.CharField(max_length=32, blank=True, default="")
    sender_id = models.CharField(max_length=64, blank=True, default="")
    reply_token = models.CharField(max_length=64, blank=True, default="", db_index=True)
    quote_token = models.CharField(max_length=128, blank=True, default="", db_index=True)
    mentions_bot = models.BooleanField(default=False)
    sent_at = models.DateTimeField()
    reply_used_at = models.DateTimeField(null=True, blank=True)
    sent_by = models.CharField(max_length=150, blank=True, default="")
    webhook_status = models.PositiveSmallIntegerField(null=True, blank=True)
    # Set when the webhook acknowledged a message without storing it, and why (UNSTORED_REASONS):
    # the simulator still shows that it was said, as the chat's members saw it, but not its text.
    unstored_reason = models.CharField(max_length=16, blank=True, default="")
    # The photo or voice message uploaded with the event, as the emulator serves it on LINE's
    # content endpoint: in the private media storage (no URL), gone with the event, the chat,
    # or after CONTENT_LIFETIME (`services.forget_expired_content`).
    content = models.FileField(storage=media_storage, upload_to=simulated_content_name, max_length=255, blank=True)
    content_type = models.CharField(max_length=64, blank=True, default="")

    class Meta:
        ordering = ["id"]


# Why a member's message was not stored (`ingest`): group memory "addressed" and a message not
# addressed to the bot, or a sender who opted out.
NOT_ADDRESSED, OPTED_OUT = "not addressed", "opted out"
UNSTORED_REASONS = {NOT_ADDRESSED: _("not addressed to the bot (group memory)"),
                    OPTED_OUT: _("the sender opted out")}


class EmulatorCall(models.Model):
    """One Messaging API call a simulated channel made, as the emulator answered it."""

    channel = models.ForeignKey(LineChannel, on_delete=models.CASCADE, related_name="+")
    simulated_chat = models.ForeignKey(SimulatedChat, on_delete=models.CASCADE, null=True, blank=True,
                                       related_name="calls")
    endpoint = models.CharField(max_length=24)
    method = models.CharField(max_length=8, default="POST")
    path = models.CharField(max_length=200)
    status = models.PositiveSmallIntegerField()
    error = models.CharField(max_length=300, blank=True, default="")
    # [{"message", "property"}] as LINE lists what is wrong with a request; names fields, never values.
    details = models.JSONField(default=list, blank=True)
    # [{"type", "units", "quote_token"}]; "text" only for a message no logged answer holds.
    messages = models.JSONField(default=list, blank=True)
    sent = models.JSONField(default=list, blank=True)
    retry_key = models.CharField(max_length=64, blank=True, default="")
    reply_token = models.CharField(max_length=64, blank=True, default="")
    loading_seconds = models.PositiveSmallIntegerField(null=True, blank=True)
    # The answer this call delivered and which of its calls it was. Not a constraint:
    # messages are deleted in bulk (retention, erasure) without Django's collector.
    answer = models.ForeignKey(Message, on_delete=models.DO_NOTHING, db_constraint=False, null=True, blank=True,
                               related_name="+")
    call_index = models.PositiveSmallIntegerField(null=True, blank=True)
    request_id = models.CharField(max_length=36)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            # LINE takes a retry key once: a second accepted push with it cannot be stored.
            models.UniqueConstraint(fields=["channel", "retry_key"], condition=Q(status=200) & ~Q(retry_key=""),
                                    name="emulator_retry_key_accepted_once"),
        ]


class ComparisonState(models.TextChoices):
    QUEUED = "queued", _("queued")
    RUNNING = "running", _("running")
    DONE = "done", _("done")
    CANCELLED = "cancelled", _("cancelled")
    FAILED = "failed", _("failed")


class PresetComparison(models.Model):
    """Several presets answering a chat's last user turns again, side by side; sends nothing.

    Holds message ids, not their text, and the replayed answers only for a day
    (COMPARISON_KEEP): they come from a conversation.
    """

    chat = models.ForeignKey(Chat, on_delete=models.CASCADE, related_name="+")
    presets = models.ManyToManyField(SamplingPreset, related_name="+")
    message_ids = models.JSONField(default=list)
    state = models.CharField(max_length=10, choices=ComparisonState.choices, default=ComparisonState.QUEUED)
    total = models.PositiveSmallIntegerField(default=0)
    done = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True, default="")
    requested_by = models.CharField(max_length=150, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("preset comparison")
        verbose_name_plural = _("preset comparisons")

    def __str__(self) -> str:
        return f"#{self.pk} · {self.chat}"


class ComparisonAnswer(models.Model):
    comparison = models.ForeignKey(PresetComparison, on_delete=models.CASCADE, related_name="answers")
    message_id = models.BigIntegerField()
    preset = models.ForeignKey(SamplingPreset, on_delete=models.SET_NULL, null=True, related_name="+")
    text = models.TextField(blank=True, default="")
    error = models.TextField(blank=True, default="")
    backend_name = models.CharField(max_length=100, blank=True, default="")
    backend_is_local = models.BooleanField(null=True)
    latency_ms = models.PositiveIntegerField(null=True)
    prompt_tokens = models.PositiveIntegerField(null=True)
    completion_tokens = models.PositiveIntegerField(null=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["comparison", "message_id", "preset"],
                                               name="one_replay_per_preset_and_turn")]

"""LINE channels, the chats the bot is in, and every message said there."""
from django.core.validators import MaxLengthValidator
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from core.audit import keyed_hash
from core.fields import EncryptedTextField
from models_registry.models import ModelBackend, SamplingPreset

from .templating import check_placeholders

# What an operator's privacy notice may name; `notices` fills them in.
NOTICE_PLACEHOLDERS = frozenset({"operator", "retention", "memory", "models", "commands"})
NOTICE_MAX_LENGTH = 2000
NON_TEXT_REPLY_MAX_LENGTH = 500


def validate_notice_template(value: str) -> None:
    check_placeholders(value, allowed=NOTICE_PLACEHOLDERS)


class BotLanguage(models.TextChoices):
    ZH_HANT = "zh-hant", "繁體中文"
    EN = "en", "English"


class LineChannel(models.Model):
    name = models.CharField(_("name"), max_length=100)
    slug = models.SlugField(_("slug"), unique=True, help_text=_("Part of the webhook URL, as in /line/webhook/shop/."))
    channel_secret = EncryptedTextField(_("channel secret"))
    access_token = EncryptedTextField(_("channel access token"))
    bot_user_id = models.CharField(_("bot user ID"), max_length=64, blank=True, default="")
    default_preset = models.ForeignKey(
        SamplingPreset, on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
        verbose_name=_("default preset"),
    )
    is_default = models.BooleanField(
        _("default channel"), default=False, help_text=_("Served at /line/webhook/ without a slug.")
    )
    mask_before_storing = models.BooleanField(
        _("mask PII before storing"), default=False,
        help_text=_("Store messages with e-mail addresses, phone, ID and card numbers masked."),
    )
    mask_before_cloud = models.BooleanField(
        _("mask PII before cloud backends"), default=True,
        help_text=_("Mask PII in what is sent to a backend that is not local."),
    )
    # What the people in the chats are told (conversations.notices).
    operator_name = models.CharField(
        _("operator"), max_length=100, blank=True, default="",
        help_text=_("Who runs this bot, as the privacy notice names it: a person or an organisation."),
    )
    operator_contact = models.CharField(
        _("operator contact"), max_length=200, blank=True, default="",
        help_text=_("Where people in the chats ask about their data: an e-mail address, a web page or a LINE ID."),
    )
    language = models.CharField(
        _("bot language"), max_length=8, choices=BotLanguage.choices, default=BotLanguage.ZH_HANT,
        help_text=_("The language of the bot's own texts (privacy notice, help, the answer to non-text messages) "
                    "in a chat whose messages do not suggest another."),
    )
    notice_enabled = models.BooleanField(
        _("send the privacy notice"), default=True,
        help_text=_("Send a short privacy notice when someone adds the bot as a friend or it joins a group or "
                    "room. /privacy shows it in any case."),
    )
    notice_template = models.TextField(
        _("privacy notice text"), blank=True, default="", max_length=NOTICE_MAX_LENGTH,
        # A TextField's max_length reaches forms only; the validator holds everywhere.
        validators=[MaxLengthValidator(NOTICE_MAX_LENGTH), validate_notice_template],
        help_text=_("Empty: the built-in notice, in the chat's language. Placeholders, each filled in from the "
                    "live settings: {operator} who runs the bot, {retention} how long messages are kept, "
                    "{memory} what is kept of the chat, {models} where answers are generated, {commands} how "
                    "to opt out or be forgotten."),
    )
    non_text_reply_enabled = models.BooleanField(
        _("answer non-text messages"), default=True,
        help_text=_("In 1:1 chats, answer an image, video, audio, file or location with a short text saying "
                    "what the bot can read. Stickers get no answer; groups and rooms never do."),
    )
    non_text_reply = models.TextField(
        _("answer to non-text messages"), blank=True, default="", max_length=NON_TEXT_REPLY_MAX_LENGTH,
        validators=[MaxLengthValidator(NON_TEXT_REPLY_MAX_LENGTH)],
        help_text=_("Empty: the built-in text, in the chat's language."),
    )
    is_simulated = models.BooleanField(
        _("simulated"), default=False,
        help_text=_("Played in the console's simulator: its calls go to the in-project LINE emulator, never "
                    "to LINE, and only the simulator delivers its webhooks. Cannot be changed later."),
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = _("LINE channel")
        verbose_name_plural = _("LINE channels")
        constraints = [
            models.UniqueConstraint(fields=["is_default"], condition=Q(is_default=True), name="one_default_channel"),
        ]

    def __str__(self) -> str:
        return self.name


class SourceType(models.TextChoices):
    USER = "user", _("1:1 chat")
    GROUP = "group", _("group")
    ROOM = "room", _("room")


class ReplyMode(models.TextChoices):
    MENTION = "mention", _("when mentioned")
    PREFIX = "prefix", _("keyword first")
    ALWAYS = "always", _("always")
    OFF = "off", _("never")


class Chat(models.Model):
    channel = models.ForeignKey(LineChannel, on_delete=models.CASCADE, related_name="chats", verbose_name=_("channel"))
    source_type = models.CharField(_("type"), max_length=8, choices=SourceType.choices)
    line_id = models.CharField(_("LINE ID"), max_length=64)
    display_name = models.CharField(_("name"), max_length=200, blank=True, default="")
    preset = models.ForeignKey(
        SamplingPreset, on_delete=models.SET_NULL, null=True, blank=True, related_name="chats",
        verbose_name=_("preset"), help_text=_("Empty: the channel's default preset, then the global default."),
    )
    reply_mode = models.CharField(
        _("reply mode"), max_length=8, choices=ReplyMode.choices, default=ReplyMode.MENTION,
        help_text=_("For groups and rooms: answer when the bot is mentioned, when a message starts with "
                    "the keyword, always, or never. 1:1 chats are always answered."),
    )
    reply_prefix = models.CharField(_("keyword"), max_length=32, default="/ai", blank=True)
    local_only = models.BooleanField(
        _("local only"), default=False, help_text=_("Never send this chat's messages to a cloud backend.")
    )
    is_active = models.BooleanField(_("active"), default=True)
    retention_days = models.PositiveIntegerField(
        _("retention (days)"), null=True, blank=True,
        help_text=_("Overrides the global retention for this chat. Empty: use the global setting."),
    )
    legal_hold = models.BooleanField(
        _("legal hold"), default=False, help_text=_("Suspends all deletion of this chat's messages.")
    )
    profile_fetched_at = models.DateTimeField(_("name looked up at"), null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("chat")
        verbose_name_plural = _("chats")
        constraints = [models.UniqueConstraint(fields=["channel", "line_id"], name="unique_chat_per_channel")]

    def __str__(self) -> str:
        return self.display_name or f"{self.get_source_type_display()} {self.line_id}"

    def audit_identity(self) -> dict:
        # str() falls back to the LINE id; the audit trail outlives an erasure, so it keeps
        # only the id's keyed hash.
        return {"name": self.display_name, "line_id_hmac": keyed_hash(self.line_id)}


class Direction(models.TextChoices):
    IN = "in", _("in")
    OUT = "out", _("out")


class Status(models.TextChoices):
    RECEIVED = "received", _("received")
    SKIPPED = "skipped", _("skipped")
    PENDING = "pending", _("pending")
    GENERATING = "generating", _("generating")
    REPLIED = "replied", _("replied")
    FAILED = "failed", _("failed")


class PushReason(models.TextChoices):
    """Why an answer went by push, which LINE counts against the month's quota, not by the free reply."""

    LATE = "late", _("reply token too old")
    NO_TOKEN = "no_token", _("no reply token")
    REFUSED = "refused", _("reply token refused by LINE")
    RETRY = "retry", _("sent on a retry")
    CONTINUED = "continued", _("rest of a long answer")


class Message(models.Model):
    # Lookups by chat use the composite indexes below; a lone chat_id index would only
    # slow every insert and delete.
    chat = models.ForeignKey(Chat, on_delete=models.CASCADE, related_name="messages", db_index=False,
                             verbose_name=_("chat"))
    direction = models.CharField(_("direction"), max_length=3, choices=Direction.choices)
    line_user_id = models.CharField(_("LINE user ID"), max_length=64, blank=True, default="")
    message_type = models.CharField(_("type"), max_length=16, default="text")
    text = models.TextField(_("text"), blank=True, default="")
    line_message_id = models.CharField(_("LINE message ID"), max_length=32, blank=True, default="")
    webhook_event_id = models.CharField(_("webhook event ID"), max_length=64, unique=True, null=True, blank=True)
    reply_token = models.CharField(max_length=64, blank=True, default="")
    # Of an inbound group or room message the bot answers: LINE's token for quoting it.
    quote_token = models.CharField(max_length=255, blank=True, default="")
    event_at = models.DateTimeField(_("sent at"))
    status = models.CharField(_("status"), max_length=12, choices=Status.choices, default=Status.RECEIVED)
    status_changed_at = models.DateTimeField(_("status changed at"))
    skip_reason = models.CharField(_("why not answered"), max_length=32, blank=True, default="")
    reply_to = models.ForeignKey(
        "self", on_delete=models.CASCADE, null=True, blank=True, related_name="replies", verbose_name=_("reply to")
    )
    preset = models.ForeignKey(SamplingPreset, on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
                               verbose_name=_("preset"))
    backend = models.ForeignKey(ModelBackend, on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
                                db_index=False, verbose_name=_("backend"))
    latency_ms = models.PositiveIntegerField(_("latency (ms)"), null=True, blank=True)
    prompt_tokens = models.PositiveIntegerField(_("prompt tokens"), null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(_("answer tokens"), null=True, blank=True)
    error = models.TextField(_("error"), blank=True, default="")
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)
    # Of an outbound answer: how many LINE calls (of up to 5 texts each) went through.
    delivered_calls = models.PositiveSmallIntegerField(_("LINE calls sent"), default=0)
    # Of those, how many went by push (they count against LINE's monthly quota) and why the first did.
    push_calls = models.PositiveSmallIntegerField(_("pushes"), default=0)
    push_reason = models.CharField(_("pushed because"), max_length=16, blank=True, default="",
                                   choices=PushReason.choices)
    edited = models.BooleanField(_("edited"), default=False)
    unsent = models.BooleanField(_("unsent"), default=False)
    redacted = models.BooleanField(_("redacted"), default=False)
    redacted_at = models.DateTimeField(_("redacted at"), null=True, blank=True)
    redacted_by = models.CharField(_("redacted by"), max_length=150, blank=True, default="")
    redaction_reason = models.CharField(_("reason for redaction"), max_length=500, blank=True, default="")
    # HMAC-SHA256 of the original text: confirms a disputed original, cannot restore it.
    original_hmac = models.CharField(max_length=64, blank=True, default="")
    erased = models.BooleanField(_("erased"), default=False)
    created_at = models.DateTimeField(_("stored at"), auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        verbose_name = _("message")
        verbose_name_plural = _("messages")
        indexes = [
            models.Index(fields=["chat", "-id"], name="message_chat_recent"),
            models.Index(fields=["status", "status_changed_at"], name="message_status_age"),
            models.Index(fields=["status", "-id"], name="message_status_recent"),
            models.Index(fields=["line_message_id"], name="message_line_id"),
            models.Index(fields=["chat", "event_at"], name="message_chat_age"),
            models.Index(fields=["line_user_id", "id"], name="message_sender"),
            # Covers the dashboard's per-day, per-direction counts (and time-range scans).
            models.Index(fields=["event_at", "direction"], name="message_time"),
            models.Index(fields=["backend", "event_at"], name="message_backend_time",
                         condition=Q(backend__isnull=False)),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["reply_to"], condition=Q(direction="out"), name="one_answer_per_message"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_direction_display()} #{self.pk}"


class PrivacyPolicy(models.Model):
    """The installation's one privacy policy (a single row): retention and what PII is."""

    retention_days = models.PositiveIntegerField(
        _("retention (days)"), null=True, blank=True,
        help_text=_("Delete messages older than this many days. Empty: keep them."),
    )
    mask_email = models.BooleanField(_("e-mail addresses"), default=True)
    mask_phone = models.BooleanField(_("phone numbers"), default=True)
    mask_national_id = models.BooleanField(_("national ID and resident certificate numbers"), default=True)
    mask_credit_card = models.BooleanField(_("credit card numbers"), default=True)
    mask_ip_address = models.BooleanField(_("IP addresses"), default=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("privacy policy")
        verbose_name_plural = _("privacy policy")

    def __str__(self) -> str:
        return str(_("Privacy policy"))


class ChannelHealth(models.Model):
    """What the console knows of one channel's link with LINE (conversations.channel_health).

    One row per channel, made on first use; counters change by single UPDATE statements.
    Kept apart from LineChannel so saving a channel never writes back stale counts.
    """

    channel = models.OneToOneField(LineChannel, on_delete=models.CASCADE, primary_key=True, related_name="health")
    last_event_at = models.DateTimeField(_("last event received"), null=True, blank=True)
    events_day = models.DateField(null=True, blank=True)
    events_today = models.PositiveIntegerField(default=0)
    # A signed webhook without events: LINE's Verify button.
    last_verify_at = models.DateTimeField(_("last verified by LINE"), null=True, blank=True)
    signatures_rejected = models.PositiveIntegerField(_("signatures rejected"), default=0)
    last_rejected_at = models.DateTimeField(_("last signature rejected"), null=True, blank=True)
    pushes_month = models.DateField(null=True, blank=True)
    pushes_this_month = models.PositiveIntegerField(default=0)
    # LINE's answers to the last check (conversations.line_check.LineReport), never a secret.
    line_checked_at = models.DateTimeField(null=True, blank=True)
    line_report = models.JSONField(default=dict, blank=True)

    class Meta:
        verbose_name = _("channel health")
        verbose_name_plural = _("channel health")

    def __str__(self) -> str:
        return str(self.channel_id)


# The simulator's models live beside it; imported here so Django finds them.
from .simulator.models import (  # noqa: E402, F401
    ComparisonAnswer, EmulatorCall, PresetComparison, SimulatedChat, SimulatedEvent, SimulatedMember,
)

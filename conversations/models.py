"""LINE channels, the chats the bot is in, and every message said there."""
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from core.audit import keyed_hash
from core.fields import EncryptedTextField
from models_registry.models import ModelBackend, SamplingPreset


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

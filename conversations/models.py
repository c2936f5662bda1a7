"""LINE channels, the chats the bot is in, and every message said there."""
from django.core.validators import MaxLengthValidator, MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from core.audit import keyed_hash
from core.fields import EncryptedTextField
from models_registry.models import BackendKind, ModelBackend, SamplingPreset

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
    fetch_external_images = models.BooleanField(
        _("fetch images from other servers"), default=False,
        help_text=_("Some LINE clients send an image as a link to another server instead of a file on LINE. "
                    "Fetch those (HTTPS only, size-limited, never from a private address)."),
    )
    transcriber = models.ForeignKey(
        ModelBackend, on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
        limit_choices_to={"kind": BackendKind.TRANSCRIPTION}, verbose_name=_("speech to text"),
        help_text=_("The speech-to-text backend that turns voice messages into text. Empty: voice messages get "
                    "a short answer saying the bot cannot listen to them. Local-only chats use it only if it "
                    "is local."),
    )
    keep_audio = models.BooleanField(
        _("keep voice messages"), default=False,
        help_text=_("Keep the audio file of a voice message after it was transcribed (retention and erasure "
                    "cover it). Off: only the transcript is kept."),
    )
    images_to_cloud = models.BooleanField(
        _("send images to cloud models"), default=False,
        help_text=_("Images cannot be masked like text: by default they go only to local models. On: cloud "
                    "backends that read images get them too (never in local-only chats). The privacy notice "
                    "says so."),
    )
    is_simulated = models.BooleanField(
        _("simulated"), default=False,
        help_text=_("Played in the console's simulator: its calls go to the in-project LINE emulator, never "
                    "to LINE, and only the simulator delivers its webhooks. Cannot be changed later."),
    )
    # Commands the bot answers itself (conversations.commands), each one can be turned off.
    command_help = models.BooleanField(_("/help"), default=True, help_text=_("Answer /help with what the bot "
                                       "does in the chat and its commands."))
    command_privacy = models.BooleanField(_("/privacy"), default=True,
                                          help_text=_("Answer /privacy with the privacy notice."))
    command_reset = models.BooleanField(
        _("/reset"), default=True,
        help_text=_("Let /reset start a fresh context in a chat: earlier messages no longer go into prompts."))
    command_optout = models.BooleanField(
        _("/optout and /optin"), default=True,
        help_text=_("Let people stop (and restart) the bot storing and answering their messages in this "
                    "channel. Someone who opted out can always opt in again."))
    command_forgetme = models.BooleanField(
        _("/forgetme"), default=True,
        help_text=_("Let people erase what is stored about them, after a confirmation (as erase_user does)."))
    user_limit_messages = models.PositiveIntegerField(
        _("messages per user"), default=20,
        help_text=_("At most this many messages of one LINE user are answered in this channel per period; "
                    "past it the user gets one notice, then silence until the period has passed. 0: no limit."))
    user_limit_minutes = models.PositiveIntegerField(
        _("period (minutes)"), default=10, validators=[MinValueValidator(1), MaxValueValidator(24 * 60)],
        help_text=_("The period of the per-user limit."))
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


class GroupMemory(models.TextChoices):
    ADDRESSED = "addressed", _("only messages addressed to the bot")
    EVERYTHING = "everything", _("every message")


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
    group_memory = models.CharField(
        _("group memory"), max_length=12, choices=GroupMemory.choices, default=GroupMemory.ADDRESSED,
        help_text=_("For groups and rooms: store (and use as context) only the messages addressed to the bot "
                    "— by mention or keyword, or every message in reply mode “always” — and its answers; or "
                    "every message. A message not addressed to the bot is then only counted: neither its text "
                    "nor its sender is stored. Messages stored earlier stay as they are."),
    )
    unstored_messages = models.PositiveIntegerField(
        _("messages not stored"), default=0,
        help_text=_("Messages acknowledged but not stored: not addressed to the bot (group memory "
                    "“addressed”) or from people who opted out."),
    )
    # Set by /reset: messages up to this id no longer go into prompts. An id, not a foreign
    # key, so that the reset outlives the purge of the message that asked for it.
    context_reset_after = models.PositiveBigIntegerField(_("context starts after message"), null=True, blank=True)
    context_reset_at = models.DateTimeField(_("context reset"), null=True, blank=True)
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
    # One answer at a time per chat (conversations.claims): the worker answering holds the chat
    # under a lease it renews; a dead worker's claim expires.
    answering_claim = models.CharField(max_length=32, blank=True, default="")
    answering_until = models.DateTimeField(null=True, blank=True)
    # Set while the chat's next answer waits for a slot on a backend that is at its limit.
    waiting_for = models.ForeignKey(ModelBackend, on_delete=models.SET_NULL, null=True, blank=True,
                                    related_name="+", db_index=False)
    waiting_since = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("chat")
        verbose_name_plural = _("chats")
        constraints = [models.UniqueConstraint(fields=["channel", "line_id"], name="unique_chat_per_channel")]
        indexes = [
            models.Index(fields=["waiting_for", "waiting_since"], name="chat_waiting",
                         condition=Q(waiting_for__isnull=False)),
            models.Index(fields=["answering_until"], name="chat_answering",
                         condition=~Q(answering_claim="")),
        ]

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


class Command(models.TextChoices):
    """What the bot answers itself, never a model (conversations.commands)."""

    HELP = "help", "/help"
    PRIVACY = "privacy", "/privacy"
    RESET = "reset", "/reset"
    OPTOUT = "optout", "/optout"
    OPTIN = "optin", "/optin"
    FORGETME = "forgetme", "/forgetme"
    FORGETME_CONFIRMED = "forgetme_yes", _("/forgetme confirmed")
    FORGETME_CANCELLED = "forgetme_no", _("/forgetme cancelled")
    FORGETME_EXPIRED = "forgetme_expired", _("/forgetme confirmation too late")
    LIMIT_NOTICE = "limit_notice", _("notice of the per-user limit")


# Skip reasons (Message.skip_reason) that decide what goes into a prompt.
SKIP_RATE_LIMITED = "rate limited"
SKIPS_NOT_ADDRESSED = ("not mentioned", "no keyword", "reply mode off")
# Follow, unfollow, join and leave are kept as inbound rows of their chat (message_type the
# event's type, skip_reason SKIP_EVENT), so the thread shows when the bot came and went. They
# are about the chat, not a person: no sender, no text, never answered, never a "message" in
# counts. Member joins and leaves are never kept: those are about bystanders.
BOT_EVENT_TYPES = ("follow", "unfollow", "join", "leave")
SKIP_EVENT = "event"


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
    command = models.CharField(_("command"), max_length=16, choices=Command.choices, blank=True, default="")
    # Parts of the text the model sees differently (conversations.addressing): the bot's
    # mention and the keyword are left out, another member's mention becomes their name.
    # [[start, end, kind, member id or null], ...] in Python string indexes of `text`.
    mentions = models.JSONField(default=list, blank=True)
    # A photo's or voice message's content until the worker has it (conversations.media.pipeline):
    # {"url": an external image's link, "set": [imageSet id, index, total]}; {} for LINE's own.
    media_source = models.JSONField(default=dict, blank=True)
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
    # Of an outbound answer: a reply call with the inbound's token was made (perhaps accepted by
    # LINE before its worker died). A later refusal of that token then means "already used".
    reply_attempted = models.BooleanField(default=False)
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
            # The dashboard's latency samples, read from the index alone: with only (backend,
            # event_at), PostgreSQL misjudged how many rows matched and read half the table.
            models.Index(fields=["backend", "event_at", "direction", "latency_ms"], name="message_backend_latency",
                         condition=Q(backend__isnull=False)),
            # A chat's waiting messages, found after each answer: without it SQLite walks every
            # pending message of every chat (by status), which a backlog makes thousands.
            models.Index(fields=["chat", "id"], name="message_pending_in_chat",
                         condition=Q(status="pending", direction="in")),
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


class ChatMember(models.Model):
    """Someone who spoke to the bot in a group or room, with the name LINE gives for them there.

    Created only for stored messages of signed webhooks, at most MAX_PER_CHAT per chat; the
    name is fetched in the background (profiles.refresh_member_profile). An empty name after
    a fetch means LINE would not give it (the user has not consented): a pseudonym stands in.
    """

    MAX_PER_CHAT = 500  # LINE's own limit on a group's members

    chat = models.ForeignKey(Chat, on_delete=models.CASCADE, related_name="members")
    line_user_id = models.CharField(_("LINE user ID"), max_length=64)
    display_name = models.CharField(_("name"), max_length=200, blank=True, default="")
    fetched_at = models.DateTimeField(_("name fetched"), null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("chat member")
        verbose_name_plural = _("chat members")
        constraints = [models.UniqueConstraint(fields=["chat", "line_user_id"], name="unique_member_per_chat")]
        indexes = [models.Index(fields=["line_user_id"], name="member_user")]

    def __str__(self) -> str:
        return self.display_name or pseudonym(self.line_user_id)


def pseudonym(line_user_id: str) -> str:
    """A stable short name for someone whose name is not known: never their LINE user id."""
    if not line_user_id:
        return str(_("Someone"))
    return f"Member {keyed_hash('member:' + line_user_id)[:4]}"


class OptOut(models.Model):
    """Someone asked the bot (/optout) to neither store nor answer their messages in a channel.

    Only a keyed hash of their LINE user id is kept: enough to recognise them, not to name them.
    """

    channel = models.ForeignKey(LineChannel, on_delete=models.CASCADE, related_name="opt_outs")
    user_hmac = models.CharField(_("user (keyed hash)"), max_length=64)
    created_at = models.DateTimeField(_("opted out at"), auto_now_add=True)

    class Meta:
        verbose_name = _("opt-out")
        verbose_name_plural = _("opt-outs")
        constraints = [models.UniqueConstraint(fields=["channel", "user_hmac"], name="one_opt_out_per_user")]

    def __str__(self) -> str:
        return self.user_hmac[:12]


# The media and simulator models live beside them; imported here so Django finds them.
from .media.models import MediaKind, MessageMedia  # noqa: E402, F401
from .simulator.models import (  # noqa: E402, F401
    ComparisonAnswer, EmulatorCall, PresetComparison, SimulatedChat, SimulatedEvent, SimulatedMember,
)

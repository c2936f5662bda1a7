"""REST API for channels, chats, messages, stats and health.

Views are thin: the admin's services do the work (save_with_audit, chats.update_chats,
redaction.redact_messages, audit.record_conversation_view, selectors.dashboard_stats).
"""
import django_filters
from django.conf import settings
from django.db.models import Q
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field, extend_schema_view, inline_serializer
from rest_framework import mixins, permissions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response
from rest_framework.views import APIView

from core import audit
from core.api.filters import MAX_ID, DateTimeFilter, IdFilter
from core.api.mixins import AuditedWritesMixin, ModelCleanMixin
from core.api.permissions import HasPermissions
from core.api.throttling import AnonThrottle
from core.models import AuditAction
from models_registry.selectors import backend_summary

from . import chats, health, redaction, selectors
from .models import Chat, Command, Direction, LineChannel, Message, Status, pseudonym

# --- Channels -------------------------------------------------------------------------


class ChannelSerializer(ModelCleanMixin, serializers.ModelSerializer):
    """A LINE channel. Its secret and access token are write-only: never returned."""

    write_only_secrets = ("channel_secret", "access_token")
    required_secrets = ("channel_secret", "access_token")

    channel_secret = serializers.CharField(write_only=True, required=False, allow_blank=True,
                                           help_text="Write-only. Left out or blank on an update: kept.")
    access_token = serializers.CharField(write_only=True, required=False, allow_blank=True,
                                         help_text="Write-only. Left out or blank on an update: kept.")
    has_channel_secret = serializers.SerializerMethodField()
    has_access_token = serializers.SerializerMethodField()
    webhook_url = serializers.SerializerMethodField(help_text="Paste into the LINE Developers console.")

    class Meta:
        model = LineChannel
        fields = ["id", "name", "slug", "channel_secret", "access_token", "has_channel_secret", "has_access_token",
                  "webhook_url", "default_preset", "is_default", "bot_user_id", "mask_before_storing",
                  "mask_before_cloud", "fetch_external_images", "images_to_cloud", "transcriber", "keep_audio",
                  "operator_name", "operator_contact", "language",
                  "notice_enabled", "notice_template", "non_text_reply_enabled", "non_text_reply",
                  # Commands and the per-user limit
                  "command_help", "command_privacy", "command_reset", "command_optout", "command_forgetme",
                  "user_limit_messages", "user_limit_minutes",
                  "is_simulated", "created_at", "updated_at"]
        read_only_fields = ["is_simulated", "created_at", "updated_at"]

    def get_has_channel_secret(self, channel: LineChannel) -> bool:
        return bool(channel.channel_secret)

    def get_has_access_token(self, channel: LineChannel) -> bool:
        return bool(channel.access_token)

    @extend_schema_field(OpenApiTypes.URI)
    def get_webhook_url(self, channel: LineChannel) -> str:
        # LINE calls only HTTPS webhooks, whatever scheme this request came in on.
        request = self.context.get("request")
        webhook = reverse("conversations:webhook", args=[channel.slug])
        if settings.PUBLIC_BASE_URL:
            return settings.PUBLIC_BASE_URL + webhook
        return f"https://{request.get_host()}{webhook}" if request else webhook


@extend_schema_view(
    list=extend_schema(summary="List LINE channels"),
    retrieve=extend_schema(summary="Get a LINE channel"),
    create=extend_schema(summary="Add a LINE channel (secret and access token required)"),
    update=extend_schema(summary="Replace a LINE channel's settings (secrets left out are kept)"),
    partial_update=extend_schema(summary="Change a LINE channel (secrets left out are kept)"),
)
class ChannelViewSet(AuditedWritesMixin, mixins.CreateModelMixin, mixins.ListModelMixin,
                     mixins.RetrieveModelMixin, mixins.UpdateModelMixin, viewsets.GenericViewSet):
    audit_action = AuditAction.CHANNEL_CHANGE
    queryset = LineChannel.objects.order_by("name", "id")
    serializer_class = ChannelSerializer
    filterset_fields = ["slug", "is_default"]


# --- Chats ----------------------------------------------------------------------------


class ChatSerializer(serializers.ModelSerializer):
    """A LINE chat (1:1, group or room) and how the bot behaves in it."""

    simulated = serializers.BooleanField(source="channel.is_simulated", read_only=True,
                                         help_text="Played in the console's simulator, not on LINE.")

    class Meta:
        model = Chat
        fields = ["id", "channel", "source_type", "line_id", "display_name", "preset", "reply_mode",
                  "reply_prefix", "group_memory", "unstored_messages", "context_reset_at", "local_only", "is_active",
                  "retention_days", "legal_hold", "profile_fetched_at", "simulated", "created_at", "updated_at"]
        read_only_fields = ["channel", "source_type", "line_id", "display_name", "is_active", "profile_fetched_at",
                            "unstored_messages", "context_reset_at", "created_at", "updated_at"]

    def validate(self, attrs):
        # The admin's form refuses this too; say which field is to blame.
        preset = attrs.get("preset", self.instance.preset if self.instance else None)
        local_only = attrs.get("local_only", self.instance.local_only if self.instance else False)
        problem = chats.local_only_problem(preset=preset, local_only=local_only)
        if problem:
            raise serializers.ValidationError({"preset" if "preset" in attrs else "local_only": [problem]})
        return attrs


class ChatFiguresSerializer(serializers.Serializer):
    """Counts over all the chat has kept; follow, join and leave rows are not messages."""

    messages_in = serializers.IntegerField(help_text="Messages received (not the bot being added, joining or "
                                                     "leaving).")
    messages_out = serializers.IntegerField(help_text="The bot's messages: answers, command answers, notices.")
    answered = serializers.IntegerField(help_text="Messages received that the bot answered.")
    skipped = serializers.IntegerField(help_text="Messages received that the bot left unanswered.")
    skipped_by_reason = serializers.DictField(
        child=serializers.IntegerField(), help_text="The skipped ones by why (skip_reason), commonest first.")
    failed = serializers.IntegerField(help_text="Messages received whose answer failed.")
    prompt_tokens = serializers.IntegerField(help_text="Prompt tokens of the bot's answers.")
    completion_tokens = serializers.IntegerField(help_text="Completion tokens of the bot's answers.")


class ChatDetailSerializer(ChatSerializer):
    """A chat with its figures: only for one chat, to keep lists cheap."""

    figures = serializers.SerializerMethodField()

    class Meta(ChatSerializer.Meta):
        fields = [*ChatSerializer.Meta.fields, "figures"]

    @extend_schema_field(ChatFiguresSerializer)
    def get_figures(self, chat: Chat) -> dict:
        return ChatFiguresSerializer(selectors.chat_figures(chat=chat)).data


class ChatFilter(django_filters.FilterSet):
    search = django_filters.CharFilter(method="filter_search", help_text="Words in the name, or the LINE id.")

    class Meta:
        model = Chat
        fields = ["channel", "line_id", "source_type", "reply_mode", "group_memory", "preset", "local_only",
                  "is_active", "legal_hold"]

    def filter_search(self, queryset, name, value):
        return queryset.filter(Q(display_name__icontains=value) | Q(line_id=value))


@extend_schema_view(
    list=extend_schema(summary="List chats"),
    retrieve=extend_schema(summary="Get a chat"),
    partial_update=extend_schema(summary="Change a chat: preset, reply mode, group memory, local-only, retention, "
                                         "legal hold"),
)
class ChatViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.UpdateModelMixin,
                  viewsets.GenericViewSet):
    """Chats come from LINE; here their settings change. Only PATCH: send what changes."""

    queryset = Chat.objects.select_related("channel").order_by("-created_at", "-id")
    serializer_class = ChatSerializer
    filterset_class = ChatFilter
    http_method_names = ["get", "patch", "head", "options"]

    def get_serializer_class(self):
        return ChatDetailSerializer if self.action == "retrieve" else ChatSerializer

    def perform_update(self, serializer):
        chats.update_chats(chats=[serializer.instance], actor=self.request.user, **serializer.validated_data)


# --- Messages -------------------------------------------------------------------------

class MessageSerializer(serializers.ModelSerializer):
    """As the admin shows a message: no reply token, no hash of a redacted original."""

    sender_name = serializers.SerializerMethodField(
        help_text="Of an inbound message: the sender's name in the group (as LINE gives it, else a pseudonym) "
                  "or of the 1:1 chat; empty for the bot's.")
    command = serializers.ChoiceField(
        choices=Command.choices, allow_blank=True, read_only=True,
        help_text="What the bot answered itself (a command, a /forgetme button, the per-user limit's notice); "
                  "empty for a message a model answered.")

    class Meta:
        model = Message
        fields = ["id", "chat", "direction", "line_user_id", "sender_name", "command", "message_type", "text",
                  "line_message_id",
                  "webhook_event_id", "event_at", "status", "status_changed_at", "skip_reason", "reply_to",
                  "preset", "backend", "latency_ms", "prompt_tokens", "completion_tokens", "error", "attempts",
                  "delivered_calls", "edited", "unsent", "redacted", "redacted_at", "redacted_by",
                  "redaction_reason", "erased", "created_at"]
        read_only_fields = fields


    def get_sender_name(self, message: Message) -> str:
        if message.direction == Direction.OUT or not message.line_user_id:
            return ""
        return getattr(message, "sender_name", "") or pseudonym(message.line_user_id)


class RedactSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=500, help_text="Why; kept with the message and in the audit log.")


class BulkRedactSerializer(RedactSerializer):
    ids = serializers.ListField(child=serializers.IntegerField(min_value=1, max_value=MAX_ID), min_length=1,
                                max_length=1000, help_text="Message ids.")


class MessageFilter(django_filters.FilterSet):
    chat = IdFilter(field_name="chat_id", help_text="Chat id.")
    user = django_filters.CharFilter(field_name="line_user_id", help_text="The sender's LINE user id.")
    sender = django_filters.CharFilter(method="filter_sender", max_length=200,
                                       help_text="Words in the sender's name (in the group, or of the 1:1 chat).")
    direction = django_filters.ChoiceFilter(choices=Direction.choices)
    status = django_filters.ChoiceFilter(choices=Status.choices)
    since = DateTimeFilter(field_name="event_at", lookup_expr="gte", help_text="ISO 8601; messages sent at or after.")
    until = DateTimeFilter(field_name="event_at", lookup_expr="lt", help_text="ISO 8601; messages sent before.")

    class Meta:
        model = Message
        fields = ["chat", "user", "sender", "direction", "status", "since", "until"]

    def filter_sender(self, queryset, name, value):
        return queryset.filter(selectors.sent_by_name(value))


class MessageCursorPagination(CursorPagination):
    """By id, newest first: each page is one index range scan, however deep."""

    ordering = "-id"
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000


@extend_schema_view(
    list=extend_schema(summary="List messages, newest first (cursor-paginated)"),
    retrieve=extend_schema(summary="Get a message"),
)
class MessageViewSet(viewsets.ReadOnlyModelViewSet):
    """Reading a conversation is audited once per request, as in the admin."""

    queryset = selectors.with_sender_names(Message.objects.all())
    serializer_class = MessageSerializer
    filterset_class = MessageFilter
    pagination_class = MessageCursorPagination
    action_permissions = {
        "redact": ["conversations.change_message"],
        "redact_many": ["conversations.change_message"],
    }

    def list(self, request, *args, **kwargs):
        response = super().list(request, *args, **kwargs)
        chat = request.query_params.get("chat")
        filters = {key: value for key, value in request.query_params.items() if key in MessageFilter.base_filters}
        if "user" in filters:
            # The trail outlives an erasure: a LINE user id goes in only as its keyed hash.
            filters["user_hmac"] = audit.keyed_hash(filters.pop("user"))
        if "sender" in filters:
            # A name, likewise.
            filters["sender_hmac"] = audit.keyed_hash(filters.pop("sender"))
        audit.record_conversation_view(actor=request.user, target_type="chat" if chat else "messages",
                                       target_id=chat or filters.get("user_hmac", ""), via="api", filters=filters,
                                       count=len(response.data["results"]))
        return response

    def retrieve(self, request, *args, **kwargs):
        message = self.get_object()
        audit.record_conversation_view(actor=request.user, target_type="message", target_id=message.pk,
                                       via="api", chat_id=message.chat_id)
        return Response(self.get_serializer(message).data)

    @extend_schema(summary="Redact a message: its text goes, who/when/why stay", request=RedactSerializer,
                   responses={200: MessageSerializer})
    @action(detail=True, methods=["post"], filter_backends=[])
    def redact(self, request, pk=None):
        message = self.get_object()
        serializer = RedactSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        redaction.redact_messages(message_ids=[message.pk], actor=request.user,
                                  reason=serializer.validated_data["reason"])
        message.refresh_from_db()
        return Response(MessageSerializer(message).data)

    @extend_schema(summary="Redact several messages", operation_id="messages_redact_many", request=BulkRedactSerializer,
                   responses={200: inline_serializer("RedactResult", {"redacted": serializers.IntegerField(
                       help_text="How many were redacted now (already redacted ones are left alone).")})})
    @action(detail=False, methods=["post"], url_path="redact", filter_backends=[], pagination_class=None)
    def redact_many(self, request):
        serializer = BulkRedactSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        count = redaction.redact_messages(message_ids=serializer.validated_data["ids"], actor=request.user,
                                          reason=serializer.validated_data["reason"])
        return Response({"redacted": count})


# --- Stats and health -----------------------------------------------------------------


# Built with type(): "in" is a Python keyword, so it cannot be written as a class attribute.
DayCountSerializer = type("DayCountSerializer", (serializers.Serializer,), {
    "day": serializers.DateField(),
    "in": serializers.IntegerField(help_text="Messages received."),
    "out": serializers.IntegerField(help_text="Answers sent."),
})


class BackendLatencySerializer(serializers.Serializer):
    backend = serializers.CharField()
    answers = serializers.IntegerField()
    p50_ms = serializers.IntegerField()
    p95_ms = serializers.IntegerField()


class BackendSummarySerializer(serializers.Serializer):
    total = serializers.IntegerField()
    enabled = serializers.IntegerField()
    local = serializers.IntegerField()
    healthy = serializers.IntegerField(allow_null=True, help_text="From the last health check; null if none ran lately.")
    unhealthy = serializers.IntegerField(allow_null=True)


class MediaCountSerializer(serializers.Serializer):
    photos = serializers.IntegerField()
    voice = serializers.IntegerField()
    transcribed = serializers.IntegerField(help_text="Voice messages whose transcript is their text.")


class StatsSerializer(serializers.Serializer):
    generated_at = serializers.DateTimeField()
    messages_per_day = DayCountSerializer(many=True, help_text="The last 14 days, oldest first.")
    latency_by_backend = BackendLatencySerializer(many=True, help_text="Answers of the last 7 days.")
    media_messages = MediaCountSerializer(help_text="Photos and voice messages received in the last 14 days.")
    failures_24h = serializers.IntegerField(help_text="Inbound messages that failed in the last 24 hours.")
    queue_depth = serializers.IntegerField(allow_null=True, help_text="Tasks waiting; null if the broker is down.")
    workers_alive = serializers.BooleanField()
    backends = BackendSummarySerializer()


class StatsView(APIView):
    """The admin dashboard's figures as JSON."""

    permission_classes = [HasPermissions]
    required_permissions = ("conversations.view_message",)

    @extend_schema(summary="Dashboard figures", responses={200: StatsSerializer})
    def get(self, request):
        stats = {**selectors.dashboard_stats(), "backends": backend_summary()}
        return Response(StatsSerializer(stats).data)


class HealthSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["ok", "degraded", "down"])
    database = inline_serializer("HealthDatabase", {"ok": serializers.BooleanField()})
    broker = inline_serializer("HealthBroker", {"ok": serializers.BooleanField()})
    workers = inline_serializer("HealthWorkers", {"alive": serializers.IntegerField(
        help_text="Worker processes seen alive (1 when only the scheduler's heartbeat is visible).")})
    backends = BackendSummarySerializer(help_text="Counts only; healthy/unhealthy from the last check the "
                                                  "console's dashboard ran (null if none ran lately).")


class HealthView(APIView):
    """For load balancers and monitors: no sign-in, nothing sensitive. 503 only when the database is down."""

    authentication_classes = []
    permission_classes = [permissions.AllowAny]
    throttle_classes = [AnonThrottle]

    @extend_schema(summary="Health of the database, broker, workers and backends", auth=[],
                   responses={200: HealthSerializer, 503: HealthSerializer})
    def get(self, request):
        report = health.system_health()
        code = status.HTTP_503_SERVICE_UNAVAILABLE if report["status"] == "down" else status.HTTP_200_OK
        return Response(HealthSerializer(report).data, status=code)


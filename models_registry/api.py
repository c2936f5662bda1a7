"""REST API for model backends and sampling presets, validated and audited as in the admin."""
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from core.api.mixins import AuditedWritesMixin, ModelCleanMixin
from core.models import AuditAction

from . import concurrency, selectors, services
from .models import ModelBackend, SamplingPreset


class BackendSerializer(ModelCleanMixin, serializers.ModelSerializer):
    """Where text is generated. The API key is write-only: never returned."""

    write_only_secrets = ("api_key",)

    api_key = serializers.CharField(write_only=True, required=False, allow_blank=True,
                                    help_text="Write-only. Left out or blank on an update: kept.")
    has_api_key = serializers.SerializerMethodField()
    concurrency_limit = serializers.IntegerField(read_only=True, help_text="max_concurrency, or the kind's default.")
    in_flight = serializers.SerializerMethodField(help_text="Answers it is generating now.")

    class Meta:
        model = ModelBackend
        fields = ["id", "name", "kind", "base_url", "model", "api_key", "has_api_key", "timeout", "is_local",
                  "enabled", "max_concurrency", "concurrency_limit", "in_flight", "reads_images", "image_input",
                  "created_at", "updated_at"]
        read_only_fields = ["created_at", "updated_at"]

    def get_has_api_key(self, backend: ModelBackend) -> bool:
        return bool(backend.api_key)

    def get_in_flight(self, backend: ModelBackend) -> int:
        # Annotated on the viewset's queryset; a just-created backend generates nothing yet.
        return getattr(backend, "in_flight", 0)


class ConnectionReportSerializer(serializers.Serializer):
    """The outcome of a connection test. Never contains the API key."""

    ok = serializers.BooleanField()
    latency_ms = serializers.IntegerField()
    detail = serializers.CharField()
    models = serializers.ListField(child=serializers.CharField(), help_text="Models the server offers.")
    reads_images = serializers.BooleanField(
        allow_null=True,
        help_text="Whether the model reads images: what an Ollama model says of itself, the backend's "
                  "setting for other kinds (false for speech to text); null when the Ollama server did not say.")


@extend_schema_view(
    list=extend_schema(summary="List model backends"),
    retrieve=extend_schema(summary="Get a model backend"),
    create=extend_schema(summary="Add a model backend"),
    update=extend_schema(summary="Replace a model backend's settings (an API key left out is kept)"),
    partial_update=extend_schema(summary="Change a model backend (an API key left out is kept)"),
    destroy=extend_schema(summary="Delete a model backend (refused with 409 while a preset uses it)"),
)
class BackendViewSet(AuditedWritesMixin, viewsets.ModelViewSet):
    audit_action = AuditAction.BACKEND_CHANGE
    queryset = ModelBackend.objects.order_by("name", "id")
    serializer_class = BackendSerializer
    filterset_fields = ["kind", "is_local", "enabled"]
    action_permissions = {"test": ["models_registry.change_modelbackend"]}

    def get_queryset(self):
        return concurrency.with_in_flight(super().get_queryset())

    @extend_schema(summary="Test the connection, as the admin's button does", request=None,
                   responses={200: ConnectionReportSerializer})
    @action(detail=True, methods=["post"], filter_backends=[], pagination_class=None)
    def test(self, request, pk=None):
        backend = self.get_object()
        report = selectors.remember_report(backend=backend, report=services.check_backend(backend=backend))
        return Response(ConnectionReportSerializer({
            "ok": report.ok, "latency_ms": report.latency_ms, "detail": report.detail, "models": report.models,
            "reads_images": selectors.reads_images(backend=backend, refresh=False),
        }).data)


class PresetSerializer(ModelCleanMixin, serializers.ModelSerializer):
    """How text is generated: backend, fallback, system prompt and sampling parameters."""

    class Meta:
        model = SamplingPreset
        fields = ["id", "name", "backend", "fallback_backend", "system_prompt", "temperature", "top_p", "top_k",
                  "max_new_tokens", "repetition_penalty", "think", "history_turns", "history_images", "is_default",
                  "created_at", "updated_at"]
        read_only_fields = ["created_at", "updated_at"]


@extend_schema_view(
    list=extend_schema(summary="List sampling presets"),
    retrieve=extend_schema(summary="Get a sampling preset"),
    create=extend_schema(summary="Add a sampling preset"),
    update=extend_schema(summary="Replace a sampling preset"),
    partial_update=extend_schema(summary="Change a sampling preset"),
    destroy=extend_schema(summary="Delete a sampling preset (its chats fall back to the channel's default)"),
)
class PresetViewSet(AuditedWritesMixin, viewsets.ModelViewSet):
    audit_action = AuditAction.PRESET_CHANGE
    queryset = SamplingPreset.objects.order_by("name", "id")
    serializer_class = PresetSerializer
    filterset_fields = ["backend", "is_default"]

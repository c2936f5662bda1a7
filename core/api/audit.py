"""/api/v1/audit-events/: the audit trail, read-only."""
import django_filters
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers, viewsets

from core.models import AuditAction, AuditEvent

from .filters import DateTimeFilter


class AuditEventSerializer(serializers.ModelSerializer):
    """One operator action on logs or settings."""

    class Meta:
        model = AuditEvent
        fields = ["id", "created_at", "actor_id", "actor_username", "action", "target_type", "target_id", "details"]
        read_only_fields = fields


class AuditEventFilter(django_filters.FilterSet):
    action = django_filters.ChoiceFilter(choices=AuditAction.choices)
    actor = django_filters.CharFilter(field_name="actor_username", help_text="User name.")
    since = DateTimeFilter(field_name="created_at", lookup_expr="gte", help_text="ISO 8601.")
    until = DateTimeFilter(field_name="created_at", lookup_expr="lt", help_text="ISO 8601.")

    class Meta:
        model = AuditEvent
        fields = ["action", "actor", "target_type", "target_id", "since", "until"]


@extend_schema_view(
    list=extend_schema(summary="List audit events, newest first"),
    retrieve=extend_schema(summary="Get an audit event"),
)
class AuditEventViewSet(viewsets.ReadOnlyModelViewSet):
    """Read-only, for everyone: the trail cannot be edited."""

    queryset = AuditEvent.objects.order_by("-created_at", "-id")
    serializer_class = AuditEventSerializer
    filterset_class = AuditEventFilter

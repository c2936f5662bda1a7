from django.apps import apps
from django.contrib import admin
from django.utils.translation import gettext_lazy as _

from .audit import delete_with_audit, save_with_audit, snapshot
from .models import AuditEvent


class AuditedModelAdmin(admin.ModelAdmin):
    """A ModelAdmin whose saves and deletions are audited as `audit_action`."""

    audit_action: str
    # {field: action}: a change to one of these fields is audited as that action instead.
    audit_field_actions: dict[str, str] = {}

    def save_model(self, request, obj, form, change):
        before = snapshot(type(obj).objects.get(pk=obj.pk)) if change else None
        save_with_audit(instance=obj, actor=request.user, before=before, action=self.audit_action,
                        field_actions=self.audit_field_actions)

    def delete_model(self, request, obj):
        delete_with_audit(instance=obj, actor=request.user, action=self.audit_action)


# What an event is about, when that is not one of the models (a model is named by its
# verbose name): the stored values stay English, the console shows these.
TARGET_TYPES = {
    "messages": _("messages (a selection)"),
    "line_user": _("LINE user"),
    "export": _("export file"),
    "username": _("user name"),
    "address": _("network address"),
}


def target_type_label(value: str) -> str:
    for model in apps.get_models():
        if model._meta.model_name == value:
            return model._meta.verbose_name
    return TARGET_TYPES.get(value, value)


class TargetTypeFilter(admin.SimpleListFilter):
    title = _("target type")
    parameter_name = "target_type"

    def lookups(self, request, model_admin):
        values = AuditEvent.objects.order_by("target_type").values_list("target_type", flat=True).distinct()
        return [(value, target_type_label(value)) for value in values if value]

    def queryset(self, request, queryset):
        return queryset.filter(target_type=self.value()) if self.value() else queryset


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only for everyone, superusers included: the trail cannot be edited here."""

    list_display = ["created_at", "actor_username", "action", "target", "target_id"]
    list_filter = ["action", TargetTypeFilter]
    search_fields = ["actor_username", "target_id"]
    date_hierarchy = "created_at"
    show_full_result_count = False
    fields = ["created_at", "actor_username", "actor_id", "action", "target", "target_id", "details"]
    readonly_fields = [*fields]

    @admin.display(description=_("target type"), ordering="target_type")
    def target(self, event: AuditEvent) -> str:
        return target_type_label(event.target_type)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

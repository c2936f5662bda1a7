from django.contrib import admin

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


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only for everyone, superusers included: the trail cannot be edited here."""

    list_display = ["created_at", "actor_username", "action", "target_type", "target_id"]
    list_filter = ["action", "target_type"]
    search_fields = ["actor_username", "target_id"]
    date_hierarchy = "created_at"
    show_full_result_count = False
    readonly_fields = [f.name for f in AuditEvent._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

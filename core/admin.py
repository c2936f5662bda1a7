from collections.abc import Callable, Sequence

from django.apps import apps
from django.contrib import admin
from django.db import models, transaction
from django.utils.translation import gettext_lazy as _

from .audit import delete_with_audit, save_with_audit, snapshot
from .fields import EncryptedTextField
from .models import AuditEvent


class SecretFieldsAdminMixin:
    """For the admin of a model with encrypted fields: no page ever draws a saved secret.

    Those who may change the object replace a secret through the form's SecretField, which
    never shows the saved value. Wherever the admin would draw a secret read-only instead (for
    those who may only view, in `readonly_fields`, in `list_display`), the model's value
    would be decrypted onto the page, so "set" / "not set" (`<name>_state`) takes its place.
    """

    def __init__(self, model, admin_site):
        super().__init__(model, admin_site)
        self.secret_fields = tuple(
            field.name for field in model._meta.fields if isinstance(field, EncryptedTextField))
        for name in self.secret_fields:
            setattr(self, _state_name(name), _secret_state(model._meta.get_field(name)))

    def get_readonly_fields(self, request, obj=None):
        return _replace(super().get_readonly_fields(request, obj), self.secret_fields)

    def get_fields(self, request, obj=None):
        return _replace(super().get_fields(request, obj), self._drawn_read_only(request, obj))

    def get_fieldsets(self, request, obj=None):
        hidden = self._drawn_read_only(request, obj)
        return [(title, {**options, "fields": _replace(options["fields"], hidden)})
                for title, options in super().get_fieldsets(request, obj)]

    def get_list_display(self, request):
        return _replace(super().get_list_display(request), self.secret_fields)

    def _drawn_read_only(self, request, obj) -> tuple[str, ...]:
        """The secrets this page would draw read-only: all of them for a view-only user."""
        if not self.has_change_permission(request, obj):
            return self.secret_fields
        return tuple(name for name in super().get_readonly_fields(request, obj) if name in self.secret_fields)


def _state_name(name: str) -> str:
    return f"{name}_state"


def _secret_state(field: models.Field) -> Callable[[models.Model], str]:
    @admin.display(description=field.verbose_name)
    def state(obj: models.Model) -> str:
        return _("set") if getattr(obj, field.name) else _("not set")

    return state


def _replace(names: Sequence, secrets: Sequence[str]) -> list:
    """`names` (of fields, or of a fieldset's lines) with each secret's state in its place, once."""
    replaced = []
    for name in names:
        if isinstance(name, (list, tuple)):
            name = tuple(_replace(name, secrets))
        elif name in secrets:
            name = _state_name(name)
        if name not in replaced:
            replaced.append(name)
    return replaced


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

    def delete_queryset(self, request, queryset):
        """The "delete selected" action: one object at a time, so each is audited as `delete_model` does."""
        with transaction.atomic():
            for obj in queryset:
                self.delete_model(request, obj)


class ReadOnlyAdminMixin:
    """No adding, changing or deleting in the admin, superusers included."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


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
class AuditEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
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

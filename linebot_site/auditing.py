"""Changes to settings, announced as a signal so `conversations` can audit them.

`models_registry` must not import `conversations`; both import this. The admin and the
REST API both go through `save_with_audit`, so each write is audited the same way.
"""
from django.contrib import admin
from django.db import models, transaction
from django.dispatch import Signal

# sender: the model class; kwargs: instance, actor (a user), created (bool), changes
# ({field: [old, new]}; secrets appear as "(changed)"; {"deleted": True} for a deletion).
settings_changed = Signal()

SECRET_FIELDS = frozenset({"channel_secret", "access_token", "api_key"})


def snapshot(instance: models.Model) -> dict:
    """Field values (foreign keys by id) to compare before and after a change."""
    return {field.attname: getattr(instance, field.attname) for field in instance._meta.concrete_fields}


def save_with_audit(*, instance: models.Model, actor, before: dict | None) -> models.Model:
    """Saves `instance` and announces what changed since `before` (None: it is new)."""
    with transaction.atomic():
        instance.save()
        after = snapshot(instance)
        changes = {}
        for name, new in after.items():
            old = (before or {}).get(name)
            if name in ("created_at", "updated_at") or old == new:
                continue
            label = name.removesuffix("_id") if name.endswith("_id") else name
            changes[label] = "(changed)" if label in SECRET_FIELDS else [_plain(old), _plain(new)]
        if changes or before is None:
            settings_changed.send(sender=type(instance), instance=instance, actor=actor,
                                  created=before is None, changes=changes)
    return instance


def delete_with_audit(*, instance: models.Model, actor) -> None:
    with transaction.atomic():
        settings_changed.send(sender=type(instance), instance=instance, actor=actor, created=False,
                              changes={"deleted": True})
        instance.delete()


class AuditedModelAdmin(admin.ModelAdmin):
    """A ModelAdmin whose saves and deletions are audited through `save_with_audit`."""

    def save_model(self, request, obj, form, change):
        before = snapshot(type(obj).objects.get(pk=obj.pk)) if change else None
        save_with_audit(instance=obj, actor=request.user, before=before)

    def delete_model(self, request, obj):
        delete_with_audit(instance=obj, actor=request.user)


def _plain(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)

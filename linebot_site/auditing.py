"""Admin changes to settings, announced as a signal so `conversations` can audit them.

`models_registry` must not import `conversations`; both import this.
"""
from django.contrib import admin
from django.dispatch import Signal

# sender: the model class; kwargs: instance, actor (a user), created (bool), changes
# ({field: [old, new]}; secrets appear as "(changed)").
settings_changed = Signal()


class AuditedModelAdmin(admin.ModelAdmin):
    """Sends `settings_changed` with the old and new value of every field a form changed."""

    secret_fields: tuple[str, ...] = ()

    def save_model(self, request, obj, form, change):
        changes = {}
        for name in form.changed_data:
            if name in self.secret_fields:
                if form.cleaned_data.get(name):
                    changes[name] = "(changed)"
                continue
            old = form.initial.get(name)
            new = form.cleaned_data.get(name)
            changes[name] = [_plain(old), _plain(new)]
        super().save_model(request, obj, form, change)
        if changes or not change:
            settings_changed.send(sender=type(obj), instance=obj, actor=request.user, created=not change,
                                  changes=changes)

    def delete_model(self, request, obj):
        settings_changed.send(sender=type(obj), instance=obj, actor=request.user, created=False,
                              changes={"deleted": True})
        super().delete_model(request, obj)


def _plain(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "pk"):
        return value.pk
    return str(value)

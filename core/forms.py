"""Form pieces shared by the admin of both apps."""
from django import forms
from django.utils.translation import gettext_lazy as _


class SecretField(forms.CharField):
    """Write-only: the stored value is never sent to the browser; blank keeps it."""

    widget = forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"})

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        kwargs.setdefault("strip", True)
        super().__init__(**kwargs)


class SecretFieldsMixin:
    """For ModelForms with SecretField fields: a blank entry leaves the saved secret alone."""

    secret_fields: tuple[str, ...] = ()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in self.secret_fields:
            field = self.fields[name]
            if self.instance.pk and getattr(self.instance, name):
                field.help_text = _("Saved (hidden). Leave blank to keep it; type a new value to replace it.")
            self.initial[name] = ""

    def _post_clean(self):
        kept = {name: getattr(self.instance, name) for name in self.secret_fields if self.instance.pk}
        super()._post_clean()
        for name, value in kept.items():
            if not self.cleaned_data.get(name):
                setattr(self.instance, name, value)

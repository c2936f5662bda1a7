from django import forms
from django.contrib import admin
from django.db import models

from linebot_site.auditing import AuditedModelAdmin
from linebot_site.forms import SecretField, SecretFieldsMixin

from .models import ModelBackend, SamplingPreset


class ModelBackendForm(SecretFieldsMixin, forms.ModelForm):
    secret_fields = ("api_key",)
    api_key = SecretField(label="API key")

    class Meta:
        model = ModelBackend
        fields = ["name", "kind", "base_url", "model", "api_key", "timeout", "is_local", "enabled"]


@admin.register(ModelBackend)
class ModelBackendAdmin(AuditedModelAdmin):
    form = ModelBackendForm
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    list_display = ["name", "kind", "model", "base_url", "is_local", "enabled"]
    list_filter = ["kind", "is_local", "enabled"]
    search_fields = ["name", "model"]


@admin.register(SamplingPreset)
class SamplingPresetAdmin(AuditedModelAdmin):
    list_display = ["name", "backend", "fallback_backend", "temperature", "top_p", "top_k", "max_new_tokens", "is_default"]
    list_select_related = ["backend", "fallback_backend"]
    search_fields = ["name"]

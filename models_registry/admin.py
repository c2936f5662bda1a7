from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import models
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from core.admin import AuditedModelAdmin, SecretFieldsAdminMixin
from core.forms import SecretField, SecretFieldsMixin
from core.models import AuditAction

from . import services
from .backends import Turn
from .models import BackendKind, ModelBackend, SamplingPreset
from .prompts import build_prompt, parse_transcript


class ModelBackendForm(SecretFieldsMixin, forms.ModelForm):
    secret_fields = ("api_key",)
    api_key = SecretField(label=_("API key"))

    class Meta:
        model = ModelBackend
        fields = ["name", "kind", "base_url", "model", "api_key", "timeout", "is_local", "enabled"]


def locality_badge(backend: ModelBackend) -> str:
    if backend.is_local:
        return format_html('<span class="badge badge-local">{}</span>', _("local"))
    return format_html('<span class="badge badge-cloud">{}</span>', _("cloud"))


@admin.register(ModelBackend)
class ModelBackendAdmin(SecretFieldsAdminMixin, AuditedModelAdmin):
    audit_action = AuditAction.BACKEND_CHANGE
    form = ModelBackendForm
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    list_display = ["name", "kind", "model", "where", "enabled", "test_link"]
    list_filter = ["kind", "is_local", "enabled"]
    search_fields = ["name", "model"]

    @admin.display(description=_("where it runs"), ordering="is_local")
    def where(self, backend: ModelBackend) -> str:
        return locality_badge(backend)

    @admin.display(description=_("connection"))
    def test_link(self, backend: ModelBackend) -> str:
        url = reverse("admin:models_registry_modelbackend_test", args=[backend.pk])
        return format_html('<a class="button" href="{}">{}</a>', url, _("Test connection"))

    def get_urls(self):
        return [
            path("<int:backend_id>/test/", self.admin_site.admin_view(self.test_view),
                 name="models_registry_modelbackend_test"),
            *super().get_urls(),
        ]

    def test_view(self, request, backend_id: int):
        """Calls the backend with its key, so only for those who may change it, and only on a POST."""
        backend = get_object_or_404(ModelBackend, pk=backend_id)
        if not self.has_change_permission(request, backend):
            raise PermissionDenied
        report = None
        if request.method == "POST" and request.POST.get("model"):
            try:
                services.use_model(backend=backend, model=request.POST["model"], actor=request.user)
            except ValidationError as exc:
                self.message_user(request, " ".join(exc.messages), messages.ERROR)
            else:
                self.message_user(request, _("The backend now uses %(model)s.") % {"model": backend.model},
                                  messages.SUCCESS)
            return redirect(reverse("admin:models_registry_modelbackend_test", args=[backend.pk]))
        if request.method == "POST":
            report = services.check_backend(backend=backend)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": _("Test connection: %(name)s") % {"name": backend.name},
            "backend": backend,
            "badge": locality_badge(backend),
            "report": report,
            "can_pick": backend.kind == BackendKind.OLLAMA,
        }
        return render(request, "admin/models_registry/modelbackend/test.html", context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        may_test = object_id and self.has_change_permission(request)
        extra_context = {**(extra_context or {}), "test_url": reverse(
            "admin:models_registry_modelbackend_test", args=[object_id]) if may_test else None}
        return super().change_view(request, object_id, form_url, extra_context)


class PlaygroundForm(forms.Form):
    preset = forms.ModelChoiceField(queryset=SamplingPreset.objects.select_related("backend"), label=_("Preset"))
    conversation = forms.CharField(
        label=_("Message"),
        widget=forms.Textarea(attrs={"rows": 6, "placeholder": _("Type a message. For an exchange, start lines with "
                                                                 "'User:' and 'Assistant:'.")}),
        help_text=_("One message, or a short exchange with lines starting 'User:' and 'Assistant:'."),
    )

    def turns(self) -> list[Turn]:
        return parse_transcript(self.cleaned_data["conversation"])


@admin.register(SamplingPreset)
class SamplingPresetAdmin(AuditedModelAdmin):
    audit_action = AuditAction.PRESET_CHANGE
    list_display = ["name", "backend", "fallback_backend", "temperature", "top_p", "top_k", "max_new_tokens",
                    "repetition_penalty", "history_turns", "is_default"]
    list_select_related = ["backend", "fallback_backend"]
    search_fields = ["name"]
    actions = ["duplicate"]
    fieldsets = [
        (None, {"fields": ["name", "backend", "fallback_backend", "is_default"]}),
        (_("Prompt"), {"fields": ["system_prompt", "history_turns"]}),
        (_("Sampling"), {"fields": ["temperature", "top_p", "top_k", "max_new_tokens", "repetition_penalty", "think"],
                         "description": _("How the model picks each next word. Lower temperature and top_p give "
                                          "steadier answers; higher give more varied ones.")}),
    ]

    def get_urls(self):
        return [
            path("playground/", self.admin_site.admin_view(self.playground_view),
                 name="models_registry_samplingpreset_playground"),
            *super().get_urls(),
        ]

    @admin.action(description=_("Duplicate selected presets"), permissions=["add"])
    def duplicate(self, request, queryset):
        copies = services.duplicate_presets(presets=queryset, actor=request.user)
        self.message_user(request, _("Duplicated %(count)d presets.") % {"count": len(copies)}, messages.SUCCESS)

    def playground_view(self, request):
        """Try a preset without LINE: the same prompt, generation, retries and fallback as the bot.

        It calls backends with their keys, so it is for those who may change presets."""
        if not self.has_change_permission(request):
            raise PermissionDenied
        form = PlaygroundForm(request.POST or None, initial={"preset": request.GET.get("preset")})
        result = error = None
        if request.method == "POST" and form.is_valid():
            preset = form.cleaned_data["preset"]
            try:
                result = services.generate(preset=preset, turns=build_prompt(preset=preset, conversation=form.turns()))
            except services.GenerationFailed as exc:
                error = str(exc)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": _("Playground"),
            "form": form,
            "result": result,
            "error": error,
        }
        return render(request, "admin/models_registry/samplingpreset/playground.html", context)

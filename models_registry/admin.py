from dataclasses import replace

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import models
from django.http import HttpResponseNotAllowed, JsonResponse
from django.template.defaultfilters import filesizeformat
from django.utils.translation import gettext
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from core.admin import AuditedModelAdmin, SecretFieldsAdminMixin
from core.forms import SecretField, SecretFieldsMixin
from core.images import ImageRejected, sanitize_image
from core.models import AuditAction

from . import concurrency, pulls, selectors, services
from .backends import ImagePart, Turn
from .models import BackendKind, ModelBackend, SamplingPreset
from .prompts import build_prompt, parse_transcript, without_images


class ModelBackendForm(SecretFieldsMixin, forms.ModelForm):
    secret_fields = ("api_key",)
    api_key = SecretField(label=_("API key"))

    class Meta:
        model = ModelBackend
        fields = ["name", "kind", "base_url", "model", "api_key", "timeout", "is_local", "enabled", "max_concurrency",
                  "reads_images", "image_input"]


class BackendSettingsForm(forms.ModelForm):
    """What "Test these settings" reads of the add or change form, which is not saved."""

    base_url = forms.URLField(max_length=500, assume_scheme="https")
    api_key = forms.CharField(label=_("API key"), required=False)

    class Meta:
        model = ModelBackend
        fields = ["kind", "base_url", "model", "timeout"]


def model_rows(report) -> list[dict]:
    """The models a server offers, with what it says of each (size, parameters, quantisation)."""
    rows = []
    for name in report.models if report else []:
        details = report.details.get(name)
        rows.append({"name": name, "size": details.size_bytes if details else None,
                     "parameters": details.parameter_size if details else "",
                     "quantization": details.quantization_level if details else ""})
    return rows


# Ollama's progress lines, as the console words them ("pulling <digest>" is any layer).
PULL_STEPS = {
    "pulling manifest": _("reading the manifest"),
    "verifying sha256 digest": _("verifying the download"),
    "writing manifest": _("writing the manifest"),
    "removing any unused layers": _("removing unused layers"),
    "removing unused layers": _("removing unused layers"),
    "success": _("done"),
}


def pull_progress(pull) -> dict:
    """What the page shows of a download, in the operator's language."""
    step = "" if pull.finished else (
        PULL_STEPS.get(pull.step) or (_("downloading") if pull.step.startswith("pulling ") else pull.step))
    return {
        "id": pull.pk, "model": pull.model, "status": pull.status, "status_label": str(pull.get_status_display()),
        "step": str(step), "percent": pull.percent, "completed": pull.completed, "total": pull.total,
        "size": f"{filesizeformat(pull.completed)} / {filesizeformat(pull.total)}" if pull.total else "",
        # Our own messages are stored in English and translated here; Ollama's stay as they are.
        "error": gettext(pull.error) if pull.error else "", "finished": pull.finished,
        "url": reverse("admin:models_registry_modelbackend_pull_progress", args=[pull.backend_id, pull.pk]),
    }


def image_reading(backend: ModelBackend) -> str:
    """Whether the backend reads images, and who says so, in the operator's words."""
    if backend.kind == BackendKind.TRANSCRIPTION:
        return _("no (speech to text)")
    if backend.kind != BackendKind.OLLAMA:
        return _("yes (its setting)") if backend.reads_images else _("no (its setting)")
    reads = selectors.reads_images(backend=backend, refresh=False)
    if reads is None:
        return _("not known yet (its model says when tested)")
    return _("yes (its model says so)") if reads else _("no (its model says so)")


def locality_badge(backend: ModelBackend) -> str:
    if backend.is_local:
        return format_html('<span class="badge badge-local">{}</span>', _("local"))
    return format_html('<span class="badge badge-cloud">{}</span>', _("cloud"))


@admin.register(ModelBackend)
class ModelBackendAdmin(SecretFieldsAdminMixin, AuditedModelAdmin):
    audit_action = AuditAction.BACKEND_CHANGE
    form = ModelBackendForm
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    list_display = ["name", "kind", "model", "where", "images", "enabled", "answers_in_flight", "test_link"]
    list_filter = ["kind", "is_local", "enabled"]
    search_fields = ["name", "model"]

    def get_queryset(self, request):
        return concurrency.with_in_flight(super().get_queryset(request))

    @admin.display(description=_("answering now"))
    def answers_in_flight(self, backend: ModelBackend) -> str:
        return f"{backend.in_flight} / {backend.concurrency_limit}"

    @admin.display(description=_("where it runs"), ordering="is_local")
    def where(self, backend: ModelBackend) -> str:
        return locality_badge(backend)

    @admin.display(description=_("reads images"), boolean=True)
    def images(self, backend: ModelBackend) -> bool | None:
        """Only what is known: the list never calls a server (an Ollama model is asked when
        tested, or by the dashboard's health check)."""
        return selectors.reads_images(backend=backend, refresh=False)

    @admin.display(description=_("connection"))
    def test_link(self, backend: ModelBackend) -> str:
        url = reverse("admin:models_registry_modelbackend_test", args=[backend.pk])
        return format_html('<a class="button" href="{}">{}</a>', url, _("Test connection"))

    def get_urls(self):
        return [
            path("<int:backend_id>/test/", self.admin_site.admin_view(self.test_view),
                 name="models_registry_modelbackend_test"),
            path("<int:backend_id>/pull/", self.admin_site.admin_view(self.pull_view),
                 name="models_registry_modelbackend_pull"),
            path("<int:backend_id>/pulls/<int:pull_id>/", self.admin_site.admin_view(self.pull_progress_view),
                 name="models_registry_modelbackend_pull_progress"),
            path("test-settings/", self.admin_site.admin_view(self.test_settings_view),
                 name="models_registry_modelbackend_test_settings"),
            path("<int:backend_id>/test-settings/", self.admin_site.admin_view(self.test_settings_view),
                 name="models_registry_modelbackend_test_settings"),
            *super().get_urls(),
        ]

    def pull_view(self, request, backend_id: int):
        """Starts downloading a model onto the backend's Ollama server (a task), then shows its progress."""
        backend = get_object_or_404(ModelBackend, pk=backend_id)
        if not self.has_change_permission(request, backend):
            raise PermissionDenied
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        try:
            pull = pulls.start_pull(backend=backend, model=request.POST.get("model", ""), actor=request.user)
        except ValidationError as exc:
            self.message_user(request, " ".join(exc.messages), messages.ERROR)
        else:
            self.message_user(request, _("Downloading %(model)s onto the server.") % {"model": pull.model},
                              messages.INFO)
        return redirect(reverse("admin:models_registry_modelbackend_test", args=[backend.pk]) + "#pull")

    def pull_progress_view(self, request, backend_id: int, pull_id: int):
        """A download's progress as JSON, for the page's progress bar (reads the database only)."""
        backend = get_object_or_404(ModelBackend, pk=backend_id)
        if not self.has_change_permission(request, backend):
            raise PermissionDenied
        return JsonResponse(pull_progress(get_object_or_404(backend.pulls, pk=pull_id)))

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        """Adds "Test these settings" for those who may save what they test."""
        if obj is None and self.has_add_permission(request):
            context["test_settings_url"] = reverse("admin:models_registry_modelbackend_test_settings")
        elif obj is not None and self.has_change_permission(request, obj):
            context["test_settings_url"] = reverse("admin:models_registry_modelbackend_test_settings", args=[obj.pk])
        return super().render_change_form(request, context, add, change, form_url, obj)

    def test_settings_view(self, request, backend_id: int | None = None):
        """Checks the settings the add or change form holds, before they are saved.

        It calls the backend, so only on a POST and for those who may add (or change) it. An
        API key left blank is the saved one; the key is never shown back.
        """
        backend = get_object_or_404(ModelBackend, pk=backend_id) if backend_id is not None else None
        allowed = self.has_change_permission(request, backend) if backend else self.has_add_permission(request)
        if not allowed:
            raise PermissionDenied
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        form = BackendSettingsForm(request.POST)
        report = None
        if form.is_valid():
            typed = form.cleaned_data
            report = services.check_settings(
                kind=typed["kind"], base_url=typed["base_url"], model=typed["model"],
                api_key=typed["api_key"] or (backend.api_key if backend else ""), timeout=typed["timeout"])
        fragment = request.POST.get("_fragment") == "1"
        context = {
            **({} if fragment else self.admin_site.each_context(request)),
            "opts": self.opts,
            "title": _("Test these settings"),
            "base_template": "admin/models_registry/modelbackend/fragment.html" if fragment else "admin/base_site.html",
            "form": form,
            "report": report,
            "tested": form.cleaned_data if report else None,
            "kind_display": dict(BackendKind.choices).get(form.cleaned_data.get("kind")) if report else "",
            "rows": model_rows(report),
            "backend": backend,
        }
        return render(request, "admin/models_registry/modelbackend/test_settings.html", context)

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
            report = selectors.remember_report(backend=backend, report=services.check_backend(backend=backend))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": _("Test connection: %(name)s") % {"name": backend.name},
            "backend": backend,
            "badge": locality_badge(backend),
            "images": image_reading(backend),
            "report": report,
            "rows": model_rows(report),
            "can_pick": backend.kind == BackendKind.OLLAMA,
            "can_pull": backend.kind == BackendKind.OLLAMA,
            "pull": pull_progress(pull) if (pull := pulls.latest_pull(backend=backend)) else None,
            # Offered for download: the backend's model when the server lacks it.
            "model_to_pull": backend.model if report and backend.model not in report.models else "",
        }
        return render(request, "admin/models_registry/modelbackend/test.html", context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        may_test = object_id and self.has_change_permission(request)
        extra_context = {**(extra_context or {}), "test_url": reverse(
            "admin:models_registry_modelbackend_test", args=[object_id]) if may_test else None}
        return super().change_view(request, object_id, form_url, extra_context)


def _images_where_read(backend: ModelBackend, turns: list[Turn]) -> list[Turn]:
    return turns if selectors.reads_images(backend=backend) else without_images(turns)


class PlaygroundForm(forms.Form):
    preset = forms.ModelChoiceField(queryset=SamplingPreset.objects.select_related("backend"), label=_("Preset"))
    conversation = forms.CharField(
        label=_("Message"),
        widget=forms.Textarea(attrs={"rows": 6, "placeholder": _("Type a message. For an exchange, start lines with "
                                                                 "'User:' and 'Assistant:'.")}),
        help_text=_("One message, or a short exchange with lines starting 'User:' and 'Assistant:'."),
    )
    image = forms.FileField(
        label=_("Image"), required=False, widget=forms.ClearableFileInput(attrs={"accept": "image/*"}),
        help_text=_("Sent with the last message, cleaned as a LINE user's photo is (EXIF and GPS removed), to "
                    "backends that read images only."),
    )

    def clean_image(self) -> ImagePart | None:
        upload = self.cleaned_data.get("image")
        if not upload:
            return None
        limit = settings.LINEBOT_MEDIA["MAX_IMAGE_BYTES"]
        if upload.size > limit:
            raise ValidationError(_("The image is larger than %(limit)s.") % {"limit": filesizeformat(limit)})
        try:
            clean = sanitize_image(upload.read())
        except ImageRejected as exc:
            raise ValidationError(exc.reason) from None
        return ImagePart(clean.content_type, clean.data)

    def turns(self) -> list[Turn]:
        turns = parse_transcript(self.cleaned_data["conversation"])
        image = self.cleaned_data.get("image")
        if image and turns:
            turns[-1] = replace(turns[-1], images=(image,))
        return turns


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
        (_("Prompt"), {"fields": ["system_prompt", "history_turns", "history_images"]}),
        (_("Sampling"), {"fields": ["temperature", "top_p", "top_k", "max_new_tokens", "repetition_penalty", "think"],
                         "description": _("How the model picks each next word. Lower temperature and top_p give "
                                          "steadier answers; higher give more varied ones.")}),
    ]

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name in ("backend", "fallback_backend"):
            kwargs["queryset"] = selectors.text_backends()
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

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
        form = PlaygroundForm(request.POST or None, request.FILES or None, initial={"preset": request.GET.get("preset")})
        result = error = None
        if request.method == "POST" and form.is_valid():
            preset = form.cleaned_data["preset"]
            turns = form.turns()
            try:
                if any(turn.images for turn in turns) and not any(
                        selectors.reads_images(backend=backend) for backend in services.allowed_backends(preset=preset, local_only=False)):
                    raise services.GenerationFailed(gettext("None of this preset's backends reads images."))
                result = services.generate(preset=preset, turns=build_prompt(preset=preset, conversation=turns),
                                           prepare=_images_where_read)
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

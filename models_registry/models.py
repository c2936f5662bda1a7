"""Model backends (where text is generated, or speech heard) and sampling presets (how)."""
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.utils.translation import gettext_lazy as _

from core.fields import EncryptedTextField


class BackendKind(models.TextChoices):
    OLLAMA = "ollama", "Ollama"
    REPLICATE = "replicate", "Replicate"
    OPENAI_COMPATIBLE = "openai_compatible", _("OpenAI-compatible (vLLM, llama.cpp, LM Studio)")
    TRANSCRIPTION = "transcription", _("Speech to text (OpenAI-compatible /v1/audio/transcriptions)")


# Kinds that write answers; the others (speech to text) serve a channel, never a preset.
TEXT_KINDS = (BackendKind.OLLAMA, BackendKind.REPLICATE, BackendKind.OPENAI_COMPATIBLE)


class ModelBackend(models.Model):
    name = models.CharField(_("name"), max_length=100, unique=True)
    kind = models.CharField(_("kind"), max_length=32, choices=BackendKind.choices, default=BackendKind.OLLAMA)
    base_url = models.URLField(
        _("base URL"),
        max_length=500,
        help_text=_("Ollama: http://localhost:11434 · Replicate: https://api.replicate.com · "
                    "OpenAI-compatible and speech to text: the URL ending in /v1"),
    )
    model = models.CharField(
        _("model identifier"),
        max_length=200,
        help_text=_("Ollama tag (gemma3:4b), Replicate owner/name[:version], or the OpenAI model name "
                    "(whisper-1, Systran/faster-whisper-small …)."),
    )
    api_key = EncryptedTextField(_("API key"), blank=True, default="")
    timeout = models.FloatField(
        _("timeout (seconds)"),
        default=60.0,
        validators=[MinValueValidator(1.0), MaxValueValidator(600.0)],
        help_text=_("Longest wait for one answer before the call counts as failed."),
    )
    is_local = models.BooleanField(
        _("local"),
        default=True,
        help_text=_("Runs on hardware you control. Chats marked local-only use only local backends."),
    )
    enabled = models.BooleanField(_("enabled"), default=True)
    max_concurrency = models.PositiveSmallIntegerField(
        _("answers at once"), null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(512)],
        help_text=_("How many answers this backend generates at the same time, across all workers; more wait "
                    "their turn in the queue. Set it to what the server serves in parallel (Ollama's "
                    "OLLAMA_NUM_PARALLEL, vLLM's batch). Empty: the kind's default (Ollama 4, OpenAI-compatible "
                    "8, Replicate 8)."),
    )
    reads_images = models.BooleanField(
        _("reads images"),
        default=False,
        help_text=_("OpenAI-compatible and Replicate: the model reads images sent with a question. "
                    "Ollama's models say so themselves, so this is not used for Ollama."),
    )
    image_input = models.CharField(
        _("image input"),
        max_length=64,
        blank=True,
        default="image",
        validators=[RegexValidator(r"\A[A-Za-z_][A-Za-z0-9_]*\Z",
                                   _("A Replicate input name: letters, digits and underscores."))],
        help_text=_("Replicate: the name of the model's image input, as the model's API page lists it."),
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = _("model backend")
        verbose_name_plural = _("model backends")

    def __str__(self) -> str:
        return f"{self.name} ({self.get_kind_display()}: {self.model})"

    def clean(self) -> None:
        if self.kind == BackendKind.REPLICATE and self.reads_images and not self.image_input:
            raise ValidationError({"image_input": _("Name the model's image input, or untick “reads images”.")})
        if self.pk and self.kind not in TEXT_KINDS and (
                self.presets.exists() or self.fallback_for_presets.exists()):
            raise ValidationError({"kind": _("Presets use this backend to write answers; a speech-to-text "
                                             "backend cannot. Give them another backend first.")})

    @property
    def writes_text(self) -> bool:
        return self.kind in TEXT_KINDS

    @property
    def concurrency_limit(self) -> int:
        return self.max_concurrency or DEFAULT_CONCURRENCY.get(self.kind, 4)


# Ollama serves OLLAMA_NUM_PARALLEL requests at once (4 by default with enough memory); servers
# behind the OpenAI protocol (vLLM, llama.cpp --parallel) and Replicate batch more.
DEFAULT_CONCURRENCY = {BackendKind.OLLAMA: 4, BackendKind.OPENAI_COMPATIBLE: 8, BackendKind.REPLICATE: 8}


class GenerationSlot(models.Model):
    """One answer a backend is generating now: at most `concurrency_limit` live ones per backend.

    Held under a lease its worker renews while it works (models_registry.concurrency), so the
    slot of a worker that died frees itself.
    """

    backend = models.ForeignKey(ModelBackend, on_delete=models.CASCADE, related_name="slots")
    holder = models.CharField(max_length=64, unique=True)
    expires_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["backend", "expires_at"], name="slot_backend_live")]

    def __str__(self) -> str:
        return self.holder


class ThinkMode(models.TextChoices):
    DEFAULT = "default", _("model's default")
    ON = "on", _("on")
    OFF = "off", _("off")


class SamplingPreset(models.Model):
    name = models.CharField(_("name"), max_length=100, unique=True)
    backend = models.ForeignKey(
        ModelBackend, on_delete=models.PROTECT, related_name="presets", verbose_name=_("backend")
    )
    fallback_backend = models.ForeignKey(
        ModelBackend,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="fallback_for_presets",
        verbose_name=_("fallback backend"),
        help_text=_("Tried when the main backend fails after its retries."),
    )
    system_prompt = models.TextField(_("system prompt"), blank=True, default="")
    temperature = models.FloatField(
        _("temperature"),
        default=0.7,
        validators=[MinValueValidator(0.0), MaxValueValidator(2.0)],
        help_text=_("Randomness: 0 always picks the likeliest word; higher is more varied (0–2)."),
    )
    top_p = models.FloatField(
        _("top_p"),
        default=0.9,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text=_("Nucleus sampling: choose only among the words making up this share of probability (0–1)."),
    )
    top_k = models.PositiveIntegerField(
        _("top_k"),
        default=40,
        validators=[MinValueValidator(0), MaxValueValidator(1000)],
        help_text=_("Choose only among the k likeliest words; 0 turns the limit off."),
    )
    max_new_tokens = models.PositiveIntegerField(
        _("max new tokens"),
        default=512,
        validators=[MinValueValidator(1), MaxValueValidator(8192)],
        help_text=_("Longest answer, in tokens."),
    )
    repetition_penalty = models.FloatField(
        _("repetition penalty"),
        default=1.1,
        validators=[MinValueValidator(0.5), MaxValueValidator(2.0)],
        help_text=_("Above 1 discourages repeating words already said; 1 is off."),
    )
    think = models.CharField(
        _("thinking"), max_length=8, choices=ThinkMode.choices, default=ThinkMode.DEFAULT,
        help_text=_("Whether a reasoning model thinks before it answers (Ollama; other backends ignore it). "
                    "Off answers sooner. Reasoning is never stored or sent, whatever this says."),
    )
    is_default = models.BooleanField(
        _("global default"),
        default=False,
        help_text=_("Used by chats and channels that name no preset of their own."),
    )
    history_turns = models.PositiveIntegerField(
        _("history turns"),
        default=10,
        validators=[MaxValueValidator(100)],
        help_text=_("How many earlier messages of the chat are sent with each question."),
    )
    history_images = models.PositiveIntegerField(
        _("images sent"),
        default=1,
        validators=[MaxValueValidator(10)],
        help_text=_("How many images of earlier messages among those are sent again with each question "
                    "(1: the latest; 0: none). The photos being answered always go. Only to backends that "
                    "read images."),
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = _("sampling preset")
        verbose_name_plural = _("sampling presets")
        constraints = [
            models.UniqueConstraint(fields=["is_default"], condition=models.Q(is_default=True), name="one_default_preset"),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        errors = {
            field: _("A speech-to-text backend cannot write answers; choose a chat model's backend.")
            for field in ("backend", "fallback_backend")
            if getattr(self, f"{field}_id") is not None and not getattr(self, field).writes_text
        }
        if errors:
            raise ValidationError(errors)


class PullStatus(models.TextChoices):
    QUEUED = "queued", _("queued")
    PULLING = "pulling", _("downloading")
    DONE = "done", _("done")
    FAILED = "failed", _("failed")


class ModelPull(models.Model):
    """A model being downloaded onto an Ollama backend's server, followed from the console."""

    backend = models.ForeignKey(ModelBackend, on_delete=models.CASCADE, related_name="pulls",
                                verbose_name=_("backend"))
    model = models.CharField(_("model"), max_length=200)
    status = models.CharField(_("status"), max_length=8, choices=PullStatus.choices, default=PullStatus.QUEUED)
    # Ollama's last progress line ("pulling manifest", "verifying sha256 digest" ...).
    step = models.CharField(_("step"), max_length=200, blank=True, default="")
    completed = models.PositiveBigIntegerField(_("downloaded (bytes)"), default=0)
    total = models.PositiveBigIntegerField(_("size (bytes)"), default=0)
    error = models.TextField(_("error"), blank=True, default="")
    requested_by = models.CharField(_("requested by"), max_length=150, blank=True, default="")
    created_at = models.DateTimeField(_("started at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"))

    class Meta:
        ordering = ["-id"]
        verbose_name = _("model download")
        verbose_name_plural = _("model downloads")
        indexes = [models.Index(fields=["backend", "-id"], name="pull_backend_recent")]

    def __str__(self) -> str:
        return f"{self.model} → {self.backend.name}"

    @property
    def finished(self) -> bool:
        return self.status in (PullStatus.DONE, PullStatus.FAILED)

    @property
    def percent(self) -> int:
        if self.status == PullStatus.DONE:
            return 100
        return min(99, self.completed * 100 // self.total) if self.total else 0

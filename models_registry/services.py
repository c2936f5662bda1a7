"""Turning registered backends and presets into adapter calls."""
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from django.conf import settings

from django.db import transaction

from core import audit
from core.models import AuditAction
from core.retry import retrying

from django.utils.module_loading import import_string

from . import concurrency
from .backends import (
    ADAPTERS,
    Backend,
    BackendConfig,
    BackendError,
    Completion,
    ConnectionReport,
    SamplingParams,
    Transcript,
    Turn,
    backend_for,
)
from .models import BackendKind, ModelBackend, SamplingPreset, ThinkMode
from .reasoning import without_reasoning


class GenerationFailed(Exception):
    """No allowed backend of a preset produced an answer; the message says why, per backend."""


class TranscriptionRefused(Exception):
    """This backend may not transcribe for this chat (not speech to text, disabled, or cloud
    for a local-only chat); nothing was sent."""


@dataclass(frozen=True)
class Generation:
    completion: Completion
    backend: ModelBackend
    latency_ms: int


def backend_config(*, backend: ModelBackend) -> BackendConfig:
    return BackendConfig(
        kind=backend.kind,
        base_url=backend.base_url,
        model=backend.model,
        api_key=backend.api_key,
        timeout=backend.timeout,
        image_input=backend.image_input if backend.kind == BackendKind.REPLICATE and backend.reads_images else "",
    )


def adapter_for(*, backend: ModelBackend) -> Backend:
    return backend_for(backend_config(backend=backend))


def sampling_params(*, preset: SamplingPreset) -> SamplingParams:
    return SamplingParams(
        temperature=preset.temperature,
        top_p=preset.top_p,
        top_k=preset.top_k,
        max_new_tokens=preset.max_new_tokens,
        repetition_penalty=preset.repetition_penalty,
        think={ThinkMode.ON: True, ThinkMode.OFF: False}.get(preset.think),
    )


def check_backend(*, backend: ModelBackend) -> ConnectionReport:
    """The "Test connection" check: reachability, latency and the models it serves."""
    return adapter_for(backend=backend).check()


def check_settings(*, kind: str, base_url: str, model: str, api_key: str, timeout: float) -> ConnectionReport:
    """The same check on settings not saved yet ("Test these settings" on the backend form).

    A fresh adapter, not the per-process cached one: typed settings are often tried once.
    """
    config = BackendConfig(kind=kind, base_url=base_url, model=model, api_key=api_key, timeout=timeout)
    return import_string(ADAPTERS[kind])(config).check()


def model_reads_images(*, backend: ModelBackend) -> bool:
    """Asks an Ollama server whether the backend's model reads images (its capabilities)."""
    return adapter_for(backend=backend).reads_images()


def allowed_backends(*, preset: SamplingPreset, local_only: bool) -> list[ModelBackend]:
    """The preset's backend then its fallback, minus disabled ones and, when `local_only`,
    any backend not marked local — whatever the preset says."""
    chosen: list[ModelBackend] = []
    for backend in (preset.backend, preset.fallback_backend):
        if backend is None or not backend.enabled or backend in chosen:
            continue
        if local_only and not backend.is_local:
            continue
        chosen.append(backend)
    return chosen


def generate(
    *,
    preset: SamplingPreset,
    turns: list[Turn],
    local_only: bool = False,
    prepare: Callable[[ModelBackend, list[Turn]], list[Turn]] | None = None,
    slot: str = "",
) -> Generation:
    """Asks the preset's backends in turn, retrying transient errors, for a non-empty answer.

    Reasoning blocks (<think>…</think>) are taken out of every completion first: an answer
    that was nothing but reasoning counts as empty.

    `prepare(backend, turns)` may rewrite what one backend is sent (e.g. mask PII for a
    cloud backend).

    `slot` names the generation slot taken on the first backend (`concurrency.take_slot`); it
    follows the answer to a fallback backend, so that one's in-flight count includes it.
    """
    backends = allowed_backends(preset=preset, local_only=local_only)
    if not backends:
        raise GenerationFailed(
            f"Preset {preset.name!r} has no enabled backend this chat may use"
            + (" (the chat is local-only)." if local_only else ".")
        )
    params = sampling_params(preset=preset)
    failures = []
    for index, backend in enumerate(backends):
        if slot and index:
            concurrency.move_slot(holder=slot, backend=backend)
        adapter = adapter_for(backend=backend)
        sent = prepare(backend, turns) if prepare else turns
        started = time.perf_counter()
        try:
            completion = retrying(
                lambda: adapter.generate(sent, params),
                delays=settings.LINEBOT["BACKEND_RETRY_DELAYS"],
                transient=lambda exc: isinstance(exc, BackendError) and exc.transient,
            )
        except BackendError as exc:
            failures.append(f"{backend.name}: {exc}")
            continue
        completion = replace(completion, text=without_reasoning(completion.text))
        if completion.text:
            return Generation(completion, backend, round((time.perf_counter() - started) * 1000))
        failures.append(f"{backend.name}: empty answer")
    raise GenerationFailed("; ".join(failures))


def transcribe(
    *, backend: ModelBackend, audio: bytes, content_type: str, language: str | None = None, local_only: bool,
) -> Transcript:
    """The text of a voice message, from a speech-to-text backend, retrying transient errors.

    A local-only chat's audio never goes to a backend not marked local: TranscriptionRefused,
    before anything is sent. Bad audio (type, size) is a ValueError; the server's failures
    are BackendErrors.
    """
    if backend.kind != BackendKind.TRANSCRIPTION:
        raise TranscriptionRefused(f"Backend {backend.name!r} is not a speech-to-text backend")
    if not backend.enabled:
        raise TranscriptionRefused(f"Backend {backend.name!r} is disabled")
    if local_only and not backend.is_local:
        raise TranscriptionRefused(f"Backend {backend.name!r} runs in the cloud and the chat is local-only")
    adapter = adapter_for(backend=backend)
    return retrying(
        lambda: adapter.transcribe(audio, content_type, language),
        delays=settings.LINEBOT["BACKEND_RETRY_DELAYS"],
        transient=lambda exc: isinstance(exc, BackendError) and exc.transient,
    )


def use_model(*, backend: ModelBackend, model: str, actor) -> ModelBackend:
    """Switches a backend to another of the models its server offers, audited."""
    before = audit.snapshot(backend)
    backend.model = model
    backend.full_clean()
    return audit.save_with_audit(instance=backend, actor=actor, before=before, action=AuditAction.BACKEND_CHANGE)


def duplicate_presets(*, presets, actor) -> list[SamplingPreset]:
    """Copies each preset under a free name ("… (copy)"); a copy is never the default."""
    copies = []
    with transaction.atomic():
        for preset in presets:
            copy = SamplingPreset.objects.get(pk=preset.pk)
            copy.pk, copy.is_default = None, False
            copy.name = _free_preset_name(f"{preset.name} (copy)")
            copies.append(audit.save_with_audit(instance=copy, actor=actor, before=None,
                                                action=AuditAction.PRESET_CHANGE))
    return copies


def _free_preset_name(wanted: str) -> str:
    """`wanted`, or `wanted 2`, `wanted 3` … whichever no preset has yet."""
    candidate, number = wanted, 2
    while SamplingPreset.objects.filter(name=candidate).exists():
        candidate, number = f"{wanted} {number}", number + 1
    return candidate

"""Read-side queries about backends: their health and what they read, as the console, the API,
monitors and the reply pipeline see it."""
import copy
import logging
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass

from django.db.models import QuerySet
from django.utils.text import format_lazy
from django.utils.translation import gettext_lazy as _

from core.caching import TTLCache

from .backends import BackendError, ConnectionReport
from .models import TEXT_KINDS, BackendKind, ModelBackend
from .services import check_backend, model_reads_images

logger = logging.getLogger(__name__)

# Each check gets this long, whatever the backend's own timeout for answers (up to 600 s).
CHECK_DEADLINE = 3.0
HEALTH_MAX_AGE = 30.0

_health: TTLCache[list["BackendHealth"]] = TTLCache(seconds=HEALTH_MAX_AGE, max_entries=1)
# A model's capabilities change only when it is pulled again under the same name.
IMAGE_READING_MAX_AGE = 300.0
_image_reading: TTLCache[bool] = TTLCache(seconds=IMAGE_READING_MAX_AGE, max_entries=256)


@dataclass(frozen=True)
class BackendHealth:
    backend: ModelBackend
    ok: bool
    latency_ms: int | None
    detail: str


def backend_health(*, refresh: bool = True) -> list[BackendHealth] | None:
    """Each enabled backend's connection check, at most HEALTH_MAX_AGE old.

    Stale results are re-checked in parallel, each within CHECK_DEADLINE, so a page that
    shows them never waits longer than that. `refresh=False` only reads the last results
    (None when there are none), calling no backend.
    """
    cached = _health.get("all")
    if cached is not None or not refresh:
        return cached
    return _health.set("all", _check_all(list(ModelBackend.objects.filter(enabled=True).order_by("name"))))


def forget_backend_health() -> None:
    _health.clear()
    _image_reading.clear()


def reads_images(*, backend: ModelBackend, refresh: bool = True) -> bool | None:
    """Whether the backend's model reads images sent with a question.

    Ollama's model says so (its capabilities, asked within CHECK_DEADLINE and remembered
    IMAGE_READING_MAX_AGE per process); other kinds have the backend's setting; speech to
    text reads none. None when an Ollama server was not asked yet (`refresh=False`) or did
    not answer: treat it as no.
    """
    if backend.kind != BackendKind.OLLAMA:
        return backend.kind in TEXT_KINDS and backend.reads_images
    known = _image_reading.get(_image_key(backend))
    if known is not None or not refresh:
        return known
    try:
        return _remember_image_reading(backend, model_reads_images(backend=_quick(backend)))
    except BackendError as exc:
        logger.info("Cannot tell whether backend %s reads images: %s", backend.pk, exc)
        return None


def text_backends() -> QuerySet[ModelBackend]:
    """Backends a preset may write answers with."""
    return ModelBackend.objects.filter(kind__in=TEXT_KINDS)


def transcription_backends(*, local_only: bool = False) -> QuerySet[ModelBackend]:
    """Enabled speech-to-text backends a channel may choose; only local ones when `local_only`."""
    backends = ModelBackend.objects.filter(kind=BackendKind.TRANSCRIPTION, enabled=True)
    return backends.filter(is_local=True) if local_only else backends


def remember_report(*, backend: ModelBackend, report: ConnectionReport) -> ConnectionReport:
    """Keeps what a connection check learnt of the model's image reading (Ollama's says)."""
    if backend.kind == BackendKind.OLLAMA and report.reads_images is not None:
        _remember_image_reading(backend, report.reads_images)
    return report


def _image_key(backend: ModelBackend) -> tuple:
    return backend.pk, backend.base_url, backend.model


def _remember_image_reading(backend: ModelBackend, reads: bool) -> bool:
    return _image_reading.set(_image_key(backend), reads)


def _quick(backend: ModelBackend) -> ModelBackend:
    quick = copy.copy(backend)
    quick.timeout = min(backend.timeout, CHECK_DEADLINE)
    return quick


def backend_summary() -> dict:
    """Counts of backends, and of healthy ones when a check ran lately (else None)."""
    counts = {"total": 0, "enabled": 0, "local": 0}
    for enabled, is_local in ModelBackend.objects.values_list("enabled", "is_local"):
        counts["total"] += 1
        counts["enabled"] += enabled
        counts["local"] += is_local
    checked = backend_health(refresh=False)
    counts["healthy"] = None if checked is None else sum(1 for result in checked if result.ok)
    counts["unhealthy"] = None if checked is None else sum(1 for result in checked if not result.ok)
    return counts


def _check_all(backends: list[ModelBackend]) -> list[BackendHealth]:
    if not backends:
        return []
    pool = ThreadPoolExecutor(max_workers=min(8, len(backends)), thread_name_prefix="health")
    futures = [pool.submit(_check_quickly, backend) for backend in backends]
    # A check past the deadline counts as failed; its thread ends with its own timeout.
    wait(futures, timeout=CHECK_DEADLINE + 1)
    pool.shutdown(wait=False, cancel_futures=True)
    results = []
    for backend, future in zip(backends, futures):
        if future.done() and not future.cancelled() and future.exception() is None:
            results.append(future.result())
        else:
            results.append(BackendHealth(backend, False, None, format_lazy(
                _("No answer within {seconds} s."), seconds=f"{CHECK_DEADLINE:g}")))
    return results


def _check_quickly(backend: ModelBackend) -> BackendHealth:
    try:
        report = remember_report(backend=backend, report=check_backend(backend=_quick(backend)))
    except Exception:  # a broken adapter must not take the dashboard or the monitor with it
        logger.warning("Checking backend %s failed", backend.pk, exc_info=True)
        return BackendHealth(backend, False, None, _("The check failed; see the server log."))
    return BackendHealth(backend, report.ok, report.latency_ms, report.detail)

"""Read-side queries about backends: their health, as the console, the API and monitors see it."""
import copy
import logging
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass

from django.utils.text import format_lazy
from django.utils.translation import gettext_lazy as _

from core.caching import TTLCache

from .models import ModelBackend
from .services import check_backend

logger = logging.getLogger(__name__)

# Each check gets this long, whatever the backend's own timeout for answers (up to 600 s).
CHECK_DEADLINE = 3.0
HEALTH_MAX_AGE = 30.0

_health: TTLCache[list["BackendHealth"]] = TTLCache(seconds=HEALTH_MAX_AGE, max_entries=1)


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
    quick = copy.copy(backend)
    quick.timeout = min(backend.timeout, CHECK_DEADLINE)
    try:
        report = check_backend(backend=quick)
    except Exception:  # a broken adapter must not take the dashboard or the monitor with it
        logger.warning("Checking backend %s failed", backend.pk, exc_info=True)
        return BackendHealth(backend, False, None, _("The check failed; see the server log."))
    return BackendHealth(backend, report.ok, report.latency_ms, report.detail)

"""Health for load balancers and monitors: what works, never why not.

Nothing here carries a URL, a key or an error text: the answer is public.
"""
import copy
import logging
from concurrent.futures import ThreadPoolExecutor, wait
from datetime import datetime

from django.core.cache import cache
from django.db import connection
from django.utils import timezone
from django_q.status import Stat

from models_registry.models import ModelBackend
from models_registry.services import check_backend

from . import queue, selectors

logger = logging.getLogger(__name__)

BACKENDS_CACHE_KEY = "conversations.health:backends"
BACKENDS_CACHE_SECONDS = 30
# Each backend check gets this long, whatever its own timeout for answers is.
CHECK_TIMEOUT = 3.0


def system_health(*, now: datetime | None = None) -> dict:
    """`status` is "down" without a database, "degraded" when anything else fails."""
    now = now or timezone.now()
    database = database_ok()
    broker = _within(CHECK_TIMEOUT, broker_ok, default=False)
    workers = workers_alive(now=now) if database else 0
    backends = backend_health() if database else []
    if not database:
        status = "down"
    elif broker and workers and all(backend["ok"] for backend in backends):
        status = "ok"
    else:
        status = "degraded"
    return {
        "status": status,
        "database": {"ok": database},
        "broker": {"ok": broker},
        "workers": {"alive": workers},
        "backends": backends,
    }


def database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:  # any failure means "down"; the reason goes to the log, not the answer
        logger.warning("Health: the database does not answer", exc_info=True)
        return False


def broker_ok() -> bool:
    try:
        return queue.broker().ping() is not False
    except Exception:
        logger.warning("Health: the task broker does not answer", exc_info=True)
        return False


def workers_alive(*, now: datetime) -> int:
    """Worker processes of running qclusters.

    Clusters publish their status through the broker (Redis) or the cache; where the web
    process cannot see it (the ORM broker with a per-process cache), a scheduler that
    keeps the sweep on time counts as one.
    """
    try:
        stats = Stat.get_all(broker=queue.broker())
    except Exception:
        stats = []
    processes = sum(len(stat.workers) for stat in stats)
    if processes:
        return processes
    return 1 if selectors.workers_alive(now=now) else 0


def backend_health(*, refresh: bool = True) -> list[dict] | None:
    """[{"name", "ok"}] per enabled backend, checked at most every BACKENDS_CACHE_SECONDS.

    `refresh=False` only reads the last results (None when there are none).
    """
    cached = cache.get(BACKENDS_CACHE_KEY)
    if cached is not None or not refresh:
        return cached
    backends = list(ModelBackend.objects.filter(enabled=True).order_by("name"))
    results = []
    if backends:
        pool = ThreadPoolExecutor(max_workers=min(8, len(backends)), thread_name_prefix="health")
        futures = [pool.submit(_reachable, backend) for backend in backends]
        # A check past its own timeout is counted as failed, not waited for.
        wait(futures, timeout=CHECK_TIMEOUT + 1)
        pool.shutdown(wait=False, cancel_futures=True)
        for backend, future in zip(backends, futures):
            ok = future.done() and not future.cancelled() and future.exception() is None and future.result()
            results.append({"name": backend.name, "ok": bool(ok)})
    cache.set(BACKENDS_CACHE_KEY, results, BACKENDS_CACHE_SECONDS)
    return results


def forget_backend_health() -> None:
    cache.delete(BACKENDS_CACHE_KEY)


def backend_summary() -> dict:
    """Counts of backends, and of healthy ones when a health check ran lately (else None)."""
    counts = {"total": 0, "enabled": 0, "local": 0}
    for enabled, is_local in ModelBackend.objects.values_list("enabled", "is_local"):
        counts["total"] += 1
        counts["enabled"] += enabled
        counts["local"] += is_local
    checked = backend_health(refresh=False)
    counts["healthy"] = None if checked is None else sum(1 for backend in checked if backend["ok"])
    counts["unhealthy"] = None if checked is None else sum(1 for backend in checked if not backend["ok"])
    return counts


def _reachable(backend: ModelBackend) -> bool:
    quick = copy.copy(backend)
    quick.timeout = min(backend.timeout, CHECK_TIMEOUT)
    try:
        return check_backend(backend=quick).ok
    except Exception:
        logger.warning("Health: checking backend %s failed", backend.pk, exc_info=True)
        return False


def _within(seconds: float, call, *, default):
    """`call()`, or `default` if it takes longer than `seconds` (a broker that hangs)."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="health")
    future = pool.submit(call)
    pool.shutdown(wait=False)
    done, _ = wait([future], timeout=seconds)
    return future.result() if done else default

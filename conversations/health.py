"""Health for load balancers and monitors: what works, never why not.

Nothing here carries a name, a URL, a key or an error text, and nothing here calls a
model backend: the answer is public, so it only counts the results of the last checks
that the console's dashboard ran.
"""
import logging
from concurrent.futures import ThreadPoolExecutor, wait
from datetime import datetime

from django.db import connection
from django.utils import timezone

from models_registry.selectors import backend_summary

from . import queue, selectors

logger = logging.getLogger(__name__)

# A broker that hangs counts as down after this long.
BROKER_DEADLINE = 3.0


def system_health(*, now: datetime | None = None) -> dict:
    """`status` is "down" without a database, "degraded" when anything else fails."""
    now = now or timezone.now()
    database = database_ok()
    broker = _within(BROKER_DEADLINE, broker_ok, default=False)
    workers = selectors.workers_alive(now=now) if database else 0
    backends = backend_summary() if database else {"total": 0, "enabled": 0, "local": 0, "healthy": None,
                                                     "unhealthy": None}
    if not database:
        status = "down"
    elif broker and workers and not backends["unhealthy"]:
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


def _within(seconds: float, call, *, default):
    """`call()`, or `default` if it takes longer than `seconds` (a broker that hangs)."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="health")
    future = pool.submit(call)
    pool.shutdown(wait=False)
    done, _ = wait([future], timeout=seconds)
    return future.result() if done else default

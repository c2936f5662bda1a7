"""Read-side queries about backends."""
import time
from concurrent.futures import ThreadPoolExecutor

from .backends import ConnectionReport
from .models import ModelBackend
from .services import check_backend

_health_cache: dict[tuple, tuple[float, ConnectionReport]] = {}


def backend_health(*, max_age: float = 30.0) -> list[tuple[ModelBackend, ConnectionReport]]:
    """Each enabled backend with its last connection check, re-checked (in parallel) when
    older than `max_age` seconds, so dashboards and monitors never wait on a slow server long."""
    backends = list(ModelBackend.objects.filter(enabled=True).order_by("name"))
    now = time.monotonic()
    stale = [b for b in backends if _key(b) not in _health_cache or _health_cache[_key(b)][0] < now - max_age]
    if stale:
        with ThreadPoolExecutor(max_workers=min(8, len(stale))) as pool:
            for backend, report in zip(stale, pool.map(lambda b: check_backend(backend=b), stale)):
                _health_cache[_key(backend)] = (time.monotonic(), report)
    return [(backend, _health_cache[_key(backend)][1]) for backend in backends]


def _key(backend: ModelBackend) -> tuple:
    return backend.pk, backend.updated_at

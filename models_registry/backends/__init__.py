"""One adapter per protocol behind the `Backend` interface; `backend_for` picks it."""
from django.utils.module_loading import import_string

from .base import (  # noqa: F401
    Backend,
    BackendConfig,
    BackendError,
    BackendFailed,
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
    Completion,
    ConnectionReport,
    SamplingParams,
    Turn,
)
# Each adapter's client library is imported when a backend of its kind is first used.
ADAPTERS: dict[str, str] = {
    "ollama": "models_registry.backends.ollama.OllamaBackend",
    "replicate": "models_registry.backends.replicate.ReplicateBackend",
    "openai_compatible": "models_registry.backends.openai_compat.OpenAICompatBackend",
}

# Adapters hold connection pools; keep one per backend configuration per process.
_cache: dict[BackendConfig, Backend] = {}


def backend_for(config: BackendConfig) -> Backend:
    adapter = _cache.get(config)
    if adapter is None:
        if len(_cache) > 64:
            _cache.clear()
        adapter = _cache[config] = import_string(ADAPTERS[config.kind])(config)
    return adapter

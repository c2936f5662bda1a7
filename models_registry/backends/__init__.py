"""One adapter per protocol behind the `Backend` interface; `backend_for` picks it."""
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
from .ollama import OllamaBackend
from .openai_compat import OpenAICompatBackend
from .replicate import ReplicateBackend

ADAPTERS: dict[str, type] = {
    "ollama": OllamaBackend,
    "replicate": ReplicateBackend,
    "openai_compatible": OpenAICompatBackend,
}

# Adapters hold connection pools; keep one per backend configuration per process.
_cache: dict[BackendConfig, Backend] = {}


def backend_for(config: BackendConfig) -> Backend:
    adapter = _cache.get(config)
    if adapter is None:
        if len(_cache) > 64:
            _cache.clear()
        adapter = _cache[config] = ADAPTERS[config.kind](config)
    return adapter

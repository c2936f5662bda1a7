"""One adapter per protocol behind the `Backend` interface; `backend_for` picks it."""
import threading
from functools import lru_cache

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
    ModelDetails,
    PullProgress,
    ImagePart,
    SamplingParams,
    Transcriber,
    Transcript,
    Turn,
)
# Each adapter's client library is imported when a backend of its kind is first used.
ADAPTERS: dict[str, str] = {
    "ollama": "models_registry.backends.ollama.OllamaBackend",
    "replicate": "models_registry.backends.replicate.ReplicateBackend",
    "openai_compatible": "models_registry.backends.openai_compat.OpenAICompatBackend",
    "transcription": "models_registry.backends.transcription.TranscriptionBackend",
}


_building = threading.Lock()


def backend_for(config: BackendConfig) -> Backend | Transcriber:
    """One adapter per backend configuration per process: adapters hold connection pools."""
    # Answering threads starting together would each build one (an httpx client loads its
    # certificates: milliseconds of CPU) and keep only the last.
    with _building:
        return _adapter(config)


@lru_cache(maxsize=64)
def _adapter(config: BackendConfig) -> Backend | Transcriber:
    return import_string(ADAPTERS[config.kind])(config)

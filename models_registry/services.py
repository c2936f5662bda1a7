"""Turning registered backends and presets into adapter calls."""
from .backends import Backend, BackendConfig, ConnectionReport, SamplingParams, backend_for
from .models import ModelBackend, SamplingPreset


def backend_config(*, backend: ModelBackend) -> BackendConfig:
    return BackendConfig(
        kind=backend.kind,
        base_url=backend.base_url,
        model=backend.model,
        api_key=backend.api_key,
        timeout=backend.timeout,
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
    )


def check_backend(*, backend: ModelBackend) -> ConnectionReport:
    """The "Test connection" check: reachability, latency and the models it serves."""
    return adapter_for(backend=backend).check()

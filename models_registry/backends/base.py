"""What every backend adapter speaks: the turns in, a completion out, and its errors."""
from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol
from urllib.parse import quote

from django.utils.text import format_lazy
from django.utils.translation import gettext_lazy as _

if TYPE_CHECKING:
    # httpx is imported by the adapters that use it: every process that loads the models
    # (each management command, a web process) would otherwise carry it, ~15 MiB.
    import httpx

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image a turn carries: already checked, stripped of EXIF and sized by whoever made it."""

    content_type: str
    data: bytes = field(repr=False)

    def base64(self) -> str:
        return base64.b64encode(self.data).decode("ascii")

    def data_url(self) -> str:
        return f"data:{self.content_type};base64,{self.base64()}"


@dataclass(frozen=True, slots=True)
class Turn:
    role: Role
    content: str
    images: tuple[ImagePart, ...] = ()


@dataclass(frozen=True, slots=True)
class SamplingParams:
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 40
    max_new_tokens: int = 512
    repetition_penalty: float = 1.1
    # Whether a reasoning model thinks first; None leaves it to the model.
    think: bool | None = None


@dataclass(frozen=True, slots=True)
class BackendConfig:
    """The connection settings of one registered backend, free of the ORM."""

    kind: str
    base_url: str
    model: str
    api_key: str = field(default="", repr=False)
    timeout: float = 60.0
    # Replicate only: the model's input that takes an image ("" when it takes none).
    image_input: str = ""


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Transcript:
    """What a speech-to-text server heard; language and duration when it says them."""

    text: str
    language: str = ""
    duration: float | None = None


@dataclass(frozen=True, slots=True)
class ModelDetails:
    """What a server says of one of its models (Ollama's /api/tags `details`), when it says."""

    size_bytes: int | None = None
    parameter_size: str = ""
    quantization_level: str = ""
    family: str = ""


@dataclass(frozen=True, slots=True)
class ConnectionReport:
    """The outcome of "Test connection": reachable or not, how fast, what it serves.

    `detail` is translated when shown (a lazy string), so a cached report reads right in
    each operator's language.
    """

    ok: bool
    latency_ms: int
    detail: str
    models: list[str] = field(default_factory=list)
    # By model name, for servers that describe their models (Ollama).
    details: dict[str, ModelDetails] = field(default_factory=dict)
    # Whether the model reads images, when the server says so (Ollama); None: not told.
    reads_images: bool | None = None


@dataclass(frozen=True, slots=True)
class PullProgress:
    """One line of a model download's progress (Ollama's /api/pull stream)."""

    status: str
    digest: str = ""
    completed: int | None = None
    total: int | None = None


class BackendError(Exception):
    """A backend did not produce an answer. `transient` errors are worth retrying."""

    transient = False


class BackendTimeout(BackendError):
    transient = True


class BackendUnavailable(BackendError):
    """Refused connection, DNS failure or a 5xx: the server may be back soon."""

    transient = True


class BackendFailed(BackendError):
    """The server took the request but generation failed (a failed prediction)."""

    transient = True


class BackendRejected(BackendError):
    """The server answered but will not serve this request (bad key, missing model)."""


class Backend(Protocol):
    config: BackendConfig

    def generate(self, turns: list[Turn], params: SamplingParams) -> Completion: ...

    def check(self) -> ConnectionReport: ...


class Transcriber(Protocol):
    config: BackendConfig

    def transcribe(self, audio: bytes, content_type: str, language: str | None = None) -> Transcript: ...

    def check(self) -> ConnectionReport: ...


def http_timeout(seconds: float) -> httpx.Timeout:
    """One deadline for reading, a short one for connecting: a dead host fails fast."""
    import httpx

    return httpx.Timeout(seconds, connect=min(seconds, 5.0))


def ms_since(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)


def refuse_redirects(response: httpx.Response) -> None:
    """An httpx response hook: a 3xx is an error, so a backend URL cannot send the
    server to another host (the clients also get follow_redirects=False)."""
    if 300 <= response.status_code < 400:
        location = response.headers.get("location")
        raise BackendRejected(
            f"HTTP {response.status_code}: the server answered with a redirect to another address"
            + (f" ({location})" if location else "")
            + "; use the final URL"
        )


HIDDEN = "[hidden]"
# Error text can be a whole proxy error page; it ends up in a message's error field.
ERROR_TEXT_LIMIT = 500
# Whatever follows "Bearer" is a credential: ours, or one a client library took from the
# environment (OLLAMA_API_KEY, REPLICATE_API_TOKEN) when the backend has no key.
_BEARER_TOKEN = re.compile(r"\b(bearer)\s+[^\s\"',;)\]}]+", re.IGNORECASE)


def without_secrets(text: str, *, secret: str) -> str:
    """`text` with the key (also URL- or JSON-escaped) and any bearer token shown as [hidden]."""
    key = secret.strip()
    if key:
        # Longest first, so that no form is cut up by a shorter one inside it.
        for form in sorted({key, quote(key, safe=""), json.dumps(key)[1:-1]}, key=len, reverse=True):
            text = text.replace(form, HIDDEN)
    return _BEARER_TOKEN.sub(rf"\1 {HIDDEN}", text)


@contextmanager
def backend_errors(*, service: str, config: BackendConfig) -> Iterator[None]:
    """What leaves an adapter: network failures as BackendError kinds, and no error
    text, nor exception chain, that reveals the API key."""
    import httpx

    try:
        yield
    except httpx.TimeoutException:
        raise BackendTimeout(f"{service} at {config.base_url} did not answer within {config.timeout:g} s") from None
    except (httpx.TransportError, ConnectionError):
        raise BackendUnavailable(
            f"Cannot connect to {service} at {config.base_url}: connection refused or host unknown"
        ) from None
    except BackendError as exc:
        # Servers quote what they were sent; hide it before cutting, so no part of a key survives.
        text = without_secrets(str(exc), secret=config.api_key)
        if len(text) > ERROR_TEXT_LIMIT:
            text = text[:ERROR_TEXT_LIMIT] + "…"
        # Rebuilt, and from None: the original and its cause may still hold the key.
        raise type(exc)(text) from None


def checked(backend: "Backend", list_models, *, details: dict[str, ModelDetails] | None = None) -> ConnectionReport:
    """Runs `list_models()` and reports reachability, latency and whether our model is there.

    `details` is filled by `list_models` when the server describes its models.
    """
    started = time.perf_counter()
    try:
        names = list_models()
    except BackendError as exc:
        return ConnectionReport(ok=False, latency_ms=ms_since(started), detail=str(exc))
    latency = ms_since(started)
    wanted = backend.config.model
    if names is not None and wanted not in names:
        return ConnectionReport(
            ok=False, latency_ms=latency, models=names, details=details or {},
            detail=format_lazy(_("Reachable, but the server has no model “{model}”."), model=wanted),
        )
    return ConnectionReport(ok=True, latency_ms=latency, models=names or [], details=details or {},
                            detail=_("Reachable; model available."))


def error_from_http_status(status: int, message: str) -> BackendError:
    if status == 429 or status >= 500:
        return BackendUnavailable(f"HTTP {status}: {message}")
    return BackendRejected(f"HTTP {status}: {message}")

"""Ollama's /api/chat, through the official `ollama` client."""
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import httpx

import ollama
from django.utils.text import format_lazy
from django.utils.translation import gettext_lazy as _

from .base import (
    BackendConfig,
    BackendError,
    BackendRejected,
    Completion,
    ConnectionReport,
    ModelDetails,
    PullProgress,
    SamplingParams,
    Turn,
    backend_errors,
    checked,
    error_from_http_status,
    http_timeout,
    refuse_redirects,
)


# Longest silence between two lines of a pull's progress before it counts as stalled.
PULL_READ_TIMEOUT = 300.0


class OllamaBackend:
    def __init__(self, config: BackendConfig) -> None:
        self.config = config
        # The ollama client waits forever and follows redirects by default; neither here.
        self.client = ollama.Client(
            host=config.base_url, timeout=http_timeout(config.timeout), headers=_headers(config),
            follow_redirects=False, event_hooks={"response": [refuse_redirects]},
        )

    def generate(self, turns: list[Turn], params: SamplingParams) -> Completion:
        options = {
            "temperature": params.temperature,
            "top_p": params.top_p,
            "top_k": params.top_k,
            "num_predict": params.max_new_tokens,
            "repeat_penalty": params.repetition_penalty,
        }
        # The client sends bytes as the base64 strings Ollama's `images` takes.
        messages = [{"role": turn.role, "content": turn.content,
                     **({"images": [image.data for image in turn.images]} if turn.images else {})}
                    for turn in turns]
        # Sent only when the preset says; the model's thinking, if any, arrives apart from
        # the answer (message.thinking) and is dropped here.
        think = {} if params.think is None else {"think": params.think}
        with self._errors():
            response = self.client.chat(model=self.config.model, messages=messages, options=options, stream=False,
                                        **think)
        return Completion(
            text=response.message.content or "",
            prompt_tokens=response.prompt_eval_count,
            completion_tokens=response.eval_count,
        )

    def check(self) -> ConnectionReport:
        details: dict[str, ModelDetails] = {}

        def installed_models() -> list[str]:
            with self._errors():
                entries = [entry for entry in self.client.list().models if entry.model]
            for entry in entries:
                about = entry.details
                details[entry.model] = ModelDetails(
                    size_bytes=int(entry.size) if entry.size is not None else None,
                    parameter_size=(about.parameter_size or "") if about else "",
                    quantization_level=(about.quantization_level or "") if about else "",
                    family=(about.family or "") if about else "",
                )
            return [entry.model for entry in entries]

        report = checked(self, installed_models, details=details)
        if report.ok:
            try:
                reads = self.reads_images()
            except BackendError:
                reads = None  # the model is there; whether it reads images is told when it answers
            return replace(report, reads_images=reads)
        if report.models:
            return ConnectionReport(
                ok=False, latency_ms=report.latency_ms, models=report.models, details=report.details,
                detail=format_lazy("{} {}", report.detail, format_lazy(
                    _("Pull it from the console, or run `ollama pull {model}` on the server."),
                    model=self.config.model)),
            )
        return report

    def reads_images(self) -> bool:
        """Whether the model says it reads images: "vision" among its capabilities (/api/show).

        An older Ollama that names no capabilities has its models count as text-only.
        """
        with self._errors():
            capabilities = self.client.show(self.config.model).capabilities or []
        return "vision" in capabilities

    def pull(self, model: str) -> Iterator[PullProgress]:
        """Downloads `model` onto the server, yielding its progress lines until "success".

        Closing the iterator hangs up, which stops the download; Ollama keeps what it has,
        and the next pull of the model goes on from there.
        """
        # Its own client: a pull is long, and Ollama may say nothing for a while between
        # lines (verifying a large layer); the key and the redirect rule are the same.
        client = ollama.Client(
            host=self.config.base_url, timeout=httpx.Timeout(PULL_READ_TIMEOUT, connect=5.0),
            headers=_headers(self.config), follow_redirects=False,
            event_hooks={"response": [refuse_redirects]},
        )
        with backend_errors(service="Ollama", config=self.config):
            try:
                for part in client.pull(model, stream=True):
                    yield PullProgress(status=part.status or "", digest=part.digest or "",
                                       completed=part.completed, total=part.total)
            except ollama.ResponseError as exc:
                raise BackendRejected(f"Ollama could not pull {model!r}: {exc.error}") from None

    @contextmanager
    def _errors(self) -> Iterator[None]:
        with backend_errors(service="Ollama", config=self.config):
            try:
                yield
            except ollama.ResponseError as exc:
                if exc.status_code == 404:
                    raise BackendRejected(f"Ollama has no model {self.config.model!r}: {exc.error}") from None
                raise error_from_http_status(exc.status_code, exc.error) from None


def _headers(config: BackendConfig) -> dict[str, str] | None:
    return {"Authorization": f"Bearer {config.api_key}"} if config.api_key else None

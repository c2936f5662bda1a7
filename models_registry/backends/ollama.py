"""Ollama's /api/chat, through the official `ollama` client."""
from collections.abc import Iterator
from contextlib import contextmanager

import ollama

from .base import (
    BackendConfig,
    BackendRejected,
    Completion,
    ConnectionReport,
    SamplingParams,
    Turn,
    backend_errors,
    checked,
    error_from_http_status,
    http_timeout,
    refuse_redirects,
)


class OllamaBackend:
    def __init__(self, config: BackendConfig) -> None:
        self.config = config
        headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else None
        # The ollama client waits forever and follows redirects by default; neither here.
        self.client = ollama.Client(
            host=config.base_url, timeout=http_timeout(config.timeout), headers=headers,
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
        messages = [{"role": turn.role, "content": turn.content} for turn in turns]
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
        def installed_models() -> list[str]:
            with self._errors():
                return [entry.model for entry in self.client.list().models if entry.model]

        report = checked(self, installed_models)
        if not report.ok and report.models:
            return ConnectionReport(
                ok=False, latency_ms=report.latency_ms, models=report.models,
                detail=f"{report.detail} Run `ollama pull {self.config.model}` on the server.",
            )
        return report

    @contextmanager
    def _errors(self) -> Iterator[None]:
        with backend_errors(service="Ollama", config=self.config):
            try:
                yield
            except ollama.ResponseError as exc:
                if exc.status_code == 404:
                    raise BackendRejected(f"Ollama has no model {self.config.model!r}: {exc.error}") from None
                raise error_from_http_status(exc.status_code, exc.error) from None

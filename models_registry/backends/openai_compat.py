"""Any server speaking OpenAI's /v1/chat/completions (vLLM, llama.cpp, LM Studio), over httpx."""
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

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


class OpenAICompatBackend:
    def __init__(self, config: BackendConfig) -> None:
        self.config = config
        headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        self.client = httpx.Client(
            base_url=config.base_url.rstrip("/") + "/", headers=headers, timeout=http_timeout(config.timeout),
            follow_redirects=False, event_hooks={"response": [refuse_redirects]},
        )

    def generate(self, turns: list[Turn], params: SamplingParams) -> Completion:
        body = {
            "model": self.config.model,
            "messages": [{"role": turn.role, "content": turn.content} for turn in turns],
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_new_tokens,
            # Not in OpenAI's API, but vLLM, llama.cpp and LM Studio read them.
            "top_k": params.top_k,
            "repetition_penalty": params.repetition_penalty,
            "stream": False,
        }
        with self._errors():
            data = self._post_json("chat/completions", body)
        try:
            text = data["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise BackendRejected("The server's answer has no choices[0].message.content") from None
        usage = data.get("usage") or {}
        return Completion(
            text=text,
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
        )

    def check(self) -> ConnectionReport:
        def served_models() -> list[str]:
            with self._errors():
                response = self.client.get("models")
                _raise_for_status(response)
                return [entry.get("id", "") for entry in response.json().get("data", [])]

        return checked(self, served_models)

    def _post_json(self, path: str, body: dict) -> dict:
        response = self.client.post(path, json=body)
        _raise_for_status(response)
        return response.json()

    @contextmanager
    def _errors(self) -> Iterator[None]:
        with backend_errors(service="the OpenAI-compatible server", config=self.config):
            try:
                yield
            except ValueError:
                raise BackendRejected("The server's answer is not JSON") from None


def _raise_for_status(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        error = response.json().get("error")
        message = error.get("message") if isinstance(error, dict) else str(error)
    except ValueError:
        # Not cut here: backend_errors hides the key first, then cuts.
        message = response.text
    raise error_from_http_status(response.status_code, message or response.reason_phrase)

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
        self.client = openai_client(config)

    def generate(self, turns: list[Turn], params: SamplingParams) -> Completion:
        body = {
            "model": self.config.model,
            "messages": [{"role": turn.role, "content": message_content(turn)} for turn in turns],
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
                raise_for_status(response)
                return [entry.get("id", "") for entry in response.json().get("data", [])]

        return checked(self, served_models)

    def _post_json(self, path: str, body: dict) -> dict:
        response = self.client.post(path, json=body)
        raise_for_status(response)
        return response.json()

    @contextmanager
    def _errors(self) -> Iterator[None]:
        with backend_errors(service="the OpenAI-compatible server", config=self.config):
            try:
                yield
            except ValueError:
                raise BackendRejected("The server's answer is not JSON") from None


def openai_client(config: BackendConfig) -> httpx.Client:
    """An httpx client on the server's /v1 URL, with its key, our deadline and no redirects."""
    headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
    return httpx.Client(
        base_url=config.base_url.rstrip("/") + "/", headers=headers, timeout=http_timeout(config.timeout),
        follow_redirects=False, event_hooks={"response": [refuse_redirects]},
    )


def message_content(turn: Turn) -> str | list[dict]:
    """Plain text, or with images OpenAI's content parts: the text, then each image as a data URL."""
    if not turn.images:
        return turn.content
    parts: list[dict] = [{"type": "text", "text": turn.content}] if turn.content else []
    parts += [{"type": "image_url", "image_url": {"url": image.data_url()}} for image in turn.images]
    return parts


def raise_for_status(response: httpx.Response) -> None:
    """An OpenAI-style error answer as a BackendError of its status's kind."""
    if response.is_success:
        return
    try:
        error = response.json().get("error")
        message = error.get("message") if isinstance(error, dict) else str(error)
    except ValueError:
        # Not cut here: backend_errors hides the key first, then cuts.
        message = response.text
    raise error_from_http_status(response.status_code, message or response.reason_phrase)

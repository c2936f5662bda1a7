"""A fake OpenAI-compatible chat server (the subset vLLM and friends serve).

Answers come from ``fake.responder(messages, params) -> str`` where
``params`` is the request body without ``messages``; ``stream: true`` is
answered as server-sent events ending with ``data: [DONE]``.  Content parts
``{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}``
are decoded as images: models in ``vision_models`` begin their answer with
what they saw ("I see an image 4x3 PNG. "); others refuse images, as vLLM
does for a text-only model.
"""

from __future__ import annotations

import argparse
import json
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

from .base import FakeServer, RecordedRequest, Response, json_response, route
from .llm import (
    BadImage,
    count_tokens,
    decode_data_url,
    echo_chat,
    image_label,
    prompt_text,
    seen_images,
    split_tokens,
    truncate,
)

SSE_TYPE = "text/event-stream; charset=utf-8"
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
ChatResponder = Callable[[list[dict], dict], str]

# Sampling fields checked like vLLM does: name -> (types, minimum, maximum).
_NUMBER = (int, float)
_PARAMS: dict[str, tuple[tuple[type, ...], float | None, float | None]] = {
    "temperature": (_NUMBER, 0, 2),
    "top_p": (_NUMBER, 0, 1),
    "top_k": ((int,), -1, None),
    "min_p": (_NUMBER, 0, 1),
    "max_tokens": ((int,), 1, None),
    "max_completion_tokens": ((int,), 1, None),
    "repetition_penalty": (_NUMBER, 0, None),
    "presence_penalty": (_NUMBER, -2, 2),
    "frequency_penalty": (_NUMBER, -2, 2),
    "seed": ((int,), None, None),
    "n": ((int,), 1, 1),
}


def openai_error(
    status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> Response:
    return json_response(status, {"error": {"message": message, "type": type, "param": param, "code": code}})


class FakeOpenAICompat(FakeServer):
    """``/v1/chat/completions`` and ``/v1/models`` of an OpenAI-compatible server.

    Endpoints for ``fail_next``/``set_delay``: chat, models, health.
    """

    def __init__(
        self,
        models: tuple[str, ...] | list[str] = ("llama-3.1-8b",),
        api_key: str | None = None,
        *,
        responder: ChatResponder | None = None,
        chunk_interval: float = 0.0,
        vision_models: tuple[str, ...] | list[str] = (),
    ):
        super().__init__()
        self.models = list(models)
        self.vision_models = list(vision_models)
        self.api_key = api_key
        # Replaceable: fake.responder = lambda messages, params: "..."
        self.responder: ChatResponder = responder or echo_chat
        # Pause between streamed chunks, to exercise streaming timeouts.
        self.chunk_interval = chunk_interval

    @property
    def chat_requests(self) -> list[dict]:
        """JSON bodies of every chat completion request."""
        return [r.json for r in self.requests_for("chat")]

    def error_body(self, status: int, message: str | None = None) -> dict:
        kinds = {401: "invalid_request_error", 404: "invalid_request_error", 429: "rate_limit_error"}
        return {
            "error": {
                "message": message or {429: "Rate limit reached", 500: "The server had an error"}.get(status, "Error"),
                "type": kinds.get(status, "server_error" if status >= 500 else "invalid_request_error"),
                "param": None,
                "code": None,
            }
        }

    def before_request(self, request: RecordedRequest) -> Response | None:
        if request.endpoint == "health" or self.api_key is None:
            return None
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return openai_error(401, "Invalid API key", code="invalid_api_key")
        return None

    @route("GET", r"/health", "health")
    def health(self, request: RecordedRequest) -> Response:
        return Response(200, b"")

    @route("GET", r"/v1/models", "models")
    def list_models(self, request: RecordedRequest) -> Response:
        data = [{"id": name, "object": "model", "created": 1_700_000_000, "owned_by": "fake"} for name in self.models]
        return json_response(200, {"object": "list", "data": data})

    @route("POST", r"/v1/chat/completions", "chat")
    def chat(self, request: RecordedRequest) -> Response:
        body = request.json
        if not isinstance(body, dict):
            return openai_error(400, "We could not parse the JSON body of your request.")
        model = body.get("model")
        if not model:
            return openai_error(400, "you must provide a model parameter", param="model")
        if model not in self.models:
            return openai_error(404, f"The model `{model}` does not exist.", param="model", code="model_not_found")
        problem = _check_messages(body.get("messages")) or _check_params(body)
        if problem:
            return problem
        try:
            labels = _image_labels(body["messages"])
        except BadImage as exc:
            return openai_error(400, str(exc), param="messages")
        if labels and model not in self.vision_models:
            return openai_error(400, f"{model} is not a multimodal model: it does not accept images", param="messages")
        messages = body["messages"]
        params = {key: value for key, value in body.items() if key != "messages"}
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        answer, truncated = truncate(seen_images(labels) + self.responder(messages, params), limit)
        reason = "length" if truncated else "stop"
        completion_id = f"chatcmpl-{secrets.token_hex(12)}"
        usage = _usage(messages, answer)
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            events = self._stream(completion_id, model, answer, reason, usage if include_usage else None)
            return Response(200, events, SSE_TYPE, {"Cache-Control": "no-cache"})
        return json_response(
            200,
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": answer},
                        "logprobs": None,
                        "finish_reason": reason,
                    }
                ],
                "usage": usage,
            },
        )

    def _stream(self, completion_id: str, model: str, answer: str, reason: str, usage: dict | None) -> Iterator[bytes]:
        created = int(time.time())

        def event(delta: dict, finish: str | None = None) -> bytes:
            chunk = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
            return b"data: " + json.dumps(chunk, ensure_ascii=False).encode() + b"\n\n"

        yield event({"role": "assistant", "content": ""})
        for token in split_tokens(answer):
            yield event({"content": token})
            if self.chunk_interval:
                time.sleep(self.chunk_interval)
        yield event({}, reason)
        if usage is not None:
            chunk = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [],
                "usage": usage,
            }
            yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
        yield b"data: [DONE]\n\n"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--model", action="append", dest="models", help="model id to offer (repeatable)")
        parser.add_argument("--api-key", default=None)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> FakeOpenAICompat:
        return cls(tuple(args.models or ("llama-3.1-8b",)), args.api_key)


def _usage(messages: list[dict], answer: str) -> dict[str, int]:
    prompt_tokens, completion_tokens = count_tokens(prompt_text(messages)), count_tokens(answer)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _check_messages(messages: Any) -> Response | None:
    if not isinstance(messages, list) or not messages:
        return openai_error(400, "'messages' must be a non-empty array", param="messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            return openai_error(400, f"Invalid role in messages[{index}]", param=f"messages.[{index}].role")
        if not isinstance(message.get("content"), (str, list)):
            return openai_error(400, f"Invalid content in messages[{index}]", param=f"messages.[{index}].content")
    return None


def _image_labels(messages: list[dict]) -> list[str]:
    """Every content part's image decoded, in order, or BadImage for a malformed part."""
    labels = []
    for index, message in enumerate(messages):
        content = message["content"]
        for part in content if isinstance(content, list) else ():
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                continue
            if kind != "image_url":
                raise BadImage(f"messages[{index}]: a content part must be text or image_url, not {part!r:.80}")
            image_url = part.get("image_url")
            url = image_url.get("url") if isinstance(image_url, dict) else None
            content_type, data = decode_data_url(url)
            labels.append(image_label(data, content_type=content_type))
    return labels


def _check_params(body: dict) -> Response | None:
    for name, (types, low, high) in _PARAMS.items():
        if name not in body or body[name] is None:
            continue
        value = body[name]
        if isinstance(value, bool) or not isinstance(value, types):
            return openai_error(400, f"Invalid type for '{name}': {value!r}", param=name)
        if (low is not None and value < low) or (high is not None and value > high):
            return openai_error(400, f"'{name}' must be between {low} and {high}, got {value!r}", param=name)
    if "stream" in body and not isinstance(body["stream"], bool):
        return openai_error(400, "Invalid type for 'stream'", param="stream")
    return None


if __name__ == "__main__":
    FakeOpenAICompat.main()

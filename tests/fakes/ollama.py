"""A fake Ollama server (``/api/chat``, ``/api/tags``, ``/api/show``, ``/api/pull`` ...).

Messages' ``images`` (base64) are decoded as images; models named in
``vision_models`` have the ``vision`` capability and begin their answer with
what they saw ("I see an image 4x3 PNG. "); others ignore images, as Ollama
does for a text-only model.

Use it with the real client: ``ollama.Client(host=fake.url)``.  Answers come
from ``fake.responder(messages, options) -> str``; streamed answers are sent
as NDJSON chunks exactly like Ollama does.  ``/api/pull`` streams Ollama's
download progress (``pulling manifest``, per-layer ``digest``/``total``/
``completed``, ``verifying sha256 digest``, ``writing manifest``, ``success``),
keeps partial layers like Ollama does (a pull started again goes on where the
last one stopped), and ends with ``{"error": ...}`` for a name the library
lacks.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

from .base import FakeServer, RecordedRequest, Response, json_response, route, text_response
from .llm import (
    BadImage,
    count_tokens,
    decode_base64,
    echo_chat,
    image_label,
    prompt_text,
    seen_images,
    split_tokens,
    truncate,
)

NDJSON_TYPE = "application/x-ndjson"
VERSION = "0.9.0"
ROLES = frozenset({"system", "user", "assistant", "tool"})
INT_OPTIONS = frozenset(
    {"num_keep", "seed", "num_predict", "top_k", "repeat_last_n"}
    | {"num_ctx", "num_batch", "num_gpu", "main_gpu", "num_thread"}
)
FLOAT_OPTIONS = frozenset(
    {"min_p", "typical_p", "top_p", "temperature", "repeat_penalty", "presence_penalty", "frequency_penalty"}
)
OTHER_OPTIONS = frozenset({"stop", "penalize_newline", "numa", "use_mmap"})
# `think` as Ollama (0.9+) takes it: a boolean, or a level for the models that have levels.
THINK_LEVELS = frozenset({"low", "medium", "high"})
_THINK_BLOCK = re.compile(r"\A\s*<think>(.*?)</think>\s*", re.DOTALL)

ChatResponder = Callable[[list[dict], dict], str]


def normalize_model(name: str) -> str:
    """Ollama's name resolution: a model without a tag means ``:latest``."""
    return name if ":" in name else f"{name}:latest"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _ollama_error(status: int, message: str) -> Response:
    return json_response(status, {"error": message})


class FakeOllama(FakeServer):
    """Ollama's HTTP API.

    Endpoints for ``fail_next``/``set_delay``: chat, tags, show, version, root.
    """

    def __init__(
        self,
        models: tuple[str, ...] | list[str] = ("gemma3:4b",),
        *,
        responder: ChatResponder | None = None,
        chunk_interval: float = 0.0,
        thinking_models: tuple[str, ...] | list[str] = (),
        vision_models: tuple[str, ...] | list[str] = (),
    ):
        super().__init__()
        self.models = [normalize_model(name) for name in models]
        # Replaceable: fake.responder = lambda messages, options: "..."
        self.responder: ChatResponder = responder or echo_chat
        # Pause between streamed chunks, to exercise streaming timeouts.
        self.chunk_interval = chunk_interval
        # Models with the "thinking" capability: a responder's leading <think>…</think> is
        # their reasoning, returned apart (think on), left out (think off), or left in the
        # content (think not sent, as older Ollama did). Others refuse `think: true`.
        self.thinking_models = [normalize_model(name) for name in thinking_models]
        # Models with the "vision" capability: they read the messages' images.
        self.vision_models = [normalize_model(name) for name in vision_models]
        # What /api/pull can fetch: None is any name (the real library has most); else these.
        self.library: set[str] | None = None
        # Progress lines per layer of a pull.
        self.pull_steps = 4
        # Bytes of each layer already downloaded, kept across pulls as Ollama keeps them.
        self._downloaded: dict[str, int] = {}

    # -- convenience for tests ------------------------------------------------

    @property
    def chat_requests(self) -> list[dict]:
        """JSON bodies of every ``/api/chat`` request."""
        return [r.json for r in self.requests_for("chat")]

    @property
    def last_options(self) -> dict:
        """The ``options`` of the most recent chat request ({} if none sent)."""
        return dict(self.last("chat").json.get("options") or {})

    def error_body(self, status: int, message: str | None = None) -> dict:
        defaults = {429: "too many requests", 500: "llama runner process has terminated"}
        return {"error": message or defaults.get(status, "error")}

    def capabilities(self, model: str) -> list[str]:
        return (["completion"] + (["vision"] if model in self.vision_models else [])
                + (["thinking"] if model in self.thinking_models else []))

    # -- endpoints -------------------------------------------------------------

    @route("GET", r"/", "root")
    def root(self, request: RecordedRequest) -> Response:
        return text_response(200, "Ollama is running")

    @route("GET", r"/api/version", "version")
    def version(self, request: RecordedRequest) -> Response:
        return json_response(200, {"version": VERSION})

    @route("GET", r"/api/tags", "tags")
    def tags(self, request: RecordedRequest) -> Response:
        return json_response(200, {"models": [_model_entry(name) for name in self.models]})

    @route("POST", r"/api/show", "show")
    def show(self, request: RecordedRequest) -> Response:
        body = request.json if isinstance(request.json, dict) else {}
        name = body.get("model") or body.get("name")
        if not name:
            return _ollama_error(400, "model is required")
        if normalize_model(name) not in self.models:
            return _ollama_error(404, f"model '{name}' not found")
        entry = _model_entry(normalize_model(name))
        details = entry["details"]
        return json_response(
            200,
            {
                "license": "Fake license",
                "modelfile": f"# Modelfile generated by the fake\nFROM {entry['model']}\n",
                "parameters": "stop \"<end_of_turn>\"\ntemperature 1\ntop_k 64\ntop_p 0.95",
                "template": "{{ .Prompt }}",
                "details": details,
                "model_info": {
                    "general.architecture": details["family"],
                    "general.parameter_count": _parameter_count(details["parameter_size"]),
                    f"{details['family']}.context_length": 131072,
                },
                "capabilities": self.capabilities(normalize_model(name)),
                "modified_at": entry["modified_at"],
            },
        )

    @route("POST", r"/api/chat", "chat")
    def chat(self, request: RecordedRequest) -> Response:
        body = request.json
        if not isinstance(body, dict):
            return _ollama_error(400, "invalid JSON body")
        name = body.get("model")
        if not name:
            return _ollama_error(400, "model is required")
        if normalize_model(name) not in self.models:
            return _ollama_error(404, f'model "{name}" not found, try pulling it first')
        problem = _check_messages(body.get("messages")) or _check_options(body.get("options"))
        if problem:
            return _ollama_error(400, problem)
        try:
            labels = _image_labels(body.get("messages") or [])
        except BadImage as exc:
            return _ollama_error(400, str(exc))
        seen = seen_images(labels) if normalize_model(name) in self.vision_models else ""
        think = body.get("think")
        if think is not None and not isinstance(think, bool) and think not in THINK_LEVELS:
            return _ollama_error(400, f"invalid think value: {think!r}")
        thinks = normalize_model(name) in self.thinking_models
        if think not in (None, False) and not thinks:
            return _ollama_error(400, f'"{name}" does not support thinking')
        messages = body.get("messages") or []
        options = dict(body.get("options") or {})
        started = time.perf_counter_ns()
        answer, thinking = self.responder(messages, options), ""
        reasoning = _THINK_BLOCK.match(answer) if thinks and think is not None else None
        if reasoning:
            answer, thinking = answer[reasoning.end():], reasoning.group(1).strip() if think else ""
        answer = seen + answer
        answer, truncated = truncate(answer, options.get("num_predict"))
        final = _final_stats(name, messages, answer, "length" if truncated else "stop", started)
        if body.get("stream", True) is False:
            final["message"] = {"role": "assistant", "content": answer}
            if thinking:
                final["message"]["thinking"] = thinking
            return json_response(200, final)
        return Response(200, self._stream(name, answer, final), NDJSON_TYPE)

    def _stream(self, model: str, answer: str, final: dict) -> Iterator[bytes]:
        for token in split_tokens(answer):
            chunk = {
                "model": model,
                "created_at": _now(),
                "message": {"role": "assistant", "content": token},
                "done": False,
            }
            yield json.dumps(chunk, ensure_ascii=False).encode() + b"\n"
            if self.chunk_interval:
                time.sleep(self.chunk_interval)
        final["message"] = {"role": "assistant", "content": ""}
        final["created_at"] = _now()
        yield json.dumps(final, ensure_ascii=False).encode() + b"\n"

    @route("POST", r"/api/pull", "pull")
    def pull(self, request: RecordedRequest) -> Response:
        body = request.json if isinstance(request.json, dict) else {}
        name = body.get("model") or body.get("name")
        if not name:
            return _ollama_error(400, "model is required")
        model = normalize_model(name)
        known = self.library is None or model in {normalize_model(n) for n in self.library}
        if body.get("stream", True) is False:
            if not known:
                return _ollama_error(500, "pull model manifest: file does not exist")
            for _ in self._pull_lines(model):
                pass
            return json_response(200, {"status": "success"})
        return Response(200, self._pull_stream(model, known), NDJSON_TYPE)

    def _pull_stream(self, model: str, known: bool) -> Iterator[bytes]:
        yield _line({"status": "pulling manifest"})
        if not known:
            yield _line({"error": "pull model manifest: file does not exist"})
            return
        for progress in self._pull_lines(model):
            yield _line(progress)
            if self.chunk_interval:
                time.sleep(self.chunk_interval)

    def _pull_lines(self, model: str) -> Iterator[dict]:
        for digest, total in _layers(model):
            status = f"pulling {digest.removeprefix('sha256:')[:12]}"
            with self._lock:
                done = self._downloaded.get(digest, 0)
            # "Until any of the download is completed, the completed key may not be included."
            yield {"status": status, "digest": digest, "total": total} if not done else \
                {"status": status, "digest": digest, "total": total, "completed": done}
            step = max(1, -(-total // self.pull_steps))
            while done < total:
                done = min(total, done + step)
                with self._lock:
                    self._downloaded[digest] = done
                yield {"status": status, "digest": digest, "total": total, "completed": done}
        yield {"status": "verifying sha256 digest"}
        yield {"status": "writing manifest"}
        with self._lock:
            if model not in self.models:
                self.models.append(model)
        yield {"status": "success"}

    # -- process mode ------------------------------------------------------------

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--model", action="append", dest="models", help="model to offer (repeatable)")
        parser.add_argument("--vision-model", action="append", dest="vision_models", default=[],
                            help="offered model that reads images (repeatable)")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> FakeOllama:
        return cls(tuple(args.models or ("gemma3:4b",)), vision_models=tuple(args.vision_models))


def _check_messages(messages: Any) -> str | None:
    if messages is None:
        return None
    if not isinstance(messages, list):
        return "messages must be an array"
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            return f"invalid role in message {index}: {message!r}"
        if not isinstance(message.get("content", ""), str):
            return f"message {index} content must be a string"
    return None


def _image_labels(messages: list[dict]) -> list[str]:
    """Each message's ``images`` decoded, in order, or BadImage."""
    labels = []
    for index, message in enumerate(messages):
        images = message.get("images")
        if images is None:
            continue
        if not isinstance(images, list):
            raise BadImage(f"message {index} images must be an array of base64 strings")
        labels += [image_label(decode_base64(image)) for image in images]
    return labels


def _check_options(options: Any) -> str | None:
    """Ollama rejects wrongly typed options (unknown ones it only warns about)."""
    if options is None:
        return None
    if not isinstance(options, dict):
        return "options must be an object"
    for key, value in options.items():
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if key in INT_OPTIONS and not is_number:
            return f'option "{key}" must be of type integer'
        if key in FLOAT_OPTIONS and not is_number:
            return f'option "{key}" must be of type float'
    return None


def _final_stats(model: str, messages: list[dict], answer: str, reason: str, started_ns: int) -> dict[str, Any]:
    prompt_count = count_tokens(prompt_text(messages))
    eval_count = count_tokens(answer)
    prompt_ns, eval_ns, load_ns = prompt_count * 1_000_000, eval_count * 20_000_000, 50_000_000
    return {
        "model": model,
        "created_at": _now(),
        "done": True,
        "done_reason": reason,
        "total_duration": load_ns + prompt_ns + eval_ns + (time.perf_counter_ns() - started_ns),
        "load_duration": load_ns,
        "prompt_eval_count": prompt_count,
        "prompt_eval_duration": prompt_ns,
        "eval_count": eval_count,
        "eval_duration": eval_ns,
    }


def _model_entry(name: str) -> dict[str, Any]:
    family, _, tag = name.partition(":")
    size = re.fullmatch(r"(\d+(?:\.\d+)?)b", tag.split("-")[0].lower())
    parameter_size = f"{size.group(1)}B" if size else "7B"
    billions = float(parameter_size[:-1])
    return {
        "name": name,
        "model": name,
        "modified_at": "2025-03-12T10:04:11.253735+09:00",
        "size": int(billions * 0.6e9) + 12_345,
        "digest": hashlib.sha256(name.encode()).hexdigest(),
        "details": {
            "parent_model": "",
            "format": "gguf",
            "family": family,
            "families": [family],
            "parameter_size": parameter_size,
            "quantization_level": "Q4_K_M",
        },
    }


def _line(data: dict) -> bytes:
    return json.dumps(data).encode() + b"\n"


def _layers(model: str) -> list[tuple[str, int]]:
    """A model's blobs as a pull fetches them: the weights first, then template and parameters."""
    weights = _model_entry(model)["size"]
    return [(f"sha256:{hashlib.sha256(f'{model}/{part}'.encode()).hexdigest()}", size)
            for part, size in (("weights", weights), ("template", 358), ("params", 96))]


def _parameter_count(parameter_size: str) -> int:
    return int(float(parameter_size[:-1]) * 1e9)


if __name__ == "__main__":
    FakeOllama.main()

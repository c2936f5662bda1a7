"""A fake Replicate HTTP API for language models.

Use it with the real client: ``replicate.Client(api_token=..., base_url=fake.url)``.
Predictions move starting -> processing -> succeeded as they are polled, or
finish at once when the request says ``Prefer: wait``.  Output is a list of
string tokens, as Replicate's language models return it.  A model named in
``image_inputs`` has that image input in its schema (a URI); a data URL sent
there is decoded as an image and the answer begins with what the model saw.
"""

from __future__ import annotations

import argparse
import hashlib
import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from http import HTTPStatus
from typing import Any

from jsonschema import Draft7Validator

from .base import FakeServer, RecordedRequest, Response, json_response, route
from .llm import BadImage, count_tokens, decode_data_url, echo_prompt, image_label, seen_images, split_tokens, truncate

PromptResponder = Callable[[dict], str]
TERMINAL = frozenset({"succeeded", "failed", "canceled"})
_ID_ALPHABET = string.ascii_lowercase + string.digits
_OWNER_NAME = r"(?P<owner>[^/]+)/(?P<name>[^/]+)"

# The input schema of a typical Replicate language model (e.g. google/gemma-3-4b-it).
INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Input",
    "required": ["prompt"],
    "properties": {
        "prompt": {"type": "string", "title": "Prompt"},
        "system_prompt": {"type": "string", "title": "System Prompt"},
        "max_new_tokens": {"type": "integer", "minimum": 1, "title": "Max New Tokens"},
        "max_tokens": {"type": "integer", "minimum": 1, "title": "Max Tokens"},
        "min_new_tokens": {"type": "integer", "minimum": -1, "title": "Min New Tokens"},
        "temperature": {"type": "number", "minimum": 0, "maximum": 5, "title": "Temperature"},
        "top_p": {"type": "number", "minimum": 0, "maximum": 1, "title": "Top P"},
        "top_k": {"type": "integer", "minimum": 0, "title": "Top K"},
        "repetition_penalty": {"type": "number", "minimum": 0, "title": "Repetition Penalty"},
        "presence_penalty": {"type": "number", "title": "Presence Penalty"},
        "frequency_penalty": {"type": "number", "title": "Frequency Penalty"},
        "stop_sequences": {"type": "string", "title": "Stop Sequences"},
        "seed": {"type": "integer", "title": "Seed"},
    },
}
OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "array",
    "items": {"type": "string"},
    "title": "Output",
    "x-cog-array-type": "iterator",
    "x-cog-array-display": "concatenate",
}


def version_id_for(model: str) -> str:
    """A stable 64-hex version id for ``owner/name``."""
    return hashlib.sha256(model.encode()).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _problem(status: int, detail: str, title: str | None = None) -> Response:
    body: dict[str, Any] = {"detail": detail, "status": status}
    if title:
        body["title"] = title
    return json_response(status, body)


def input_schema(image_input: str | None = None) -> dict[str, Any]:
    """A language model's input schema, with an image input for a vision model."""
    if image_input is None:
        return INPUT_SCHEMA
    image = {"type": "string", "format": "uri", "title": image_input.title()}
    return {**INPUT_SCHEMA, "properties": {**INPUT_SCHEMA["properties"], image_input: image}}


@lru_cache(maxsize=16)
def _input_validator(image_input: str | None = None) -> Draft7Validator:
    return Draft7Validator(input_schema(image_input))


@dataclass
class _Prediction:
    data: dict[str, Any]
    tokens: list[str]
    error: str | None
    polls: int = 0


class FakeReplicate(FakeServer):
    """Replicate's predictions and models API.

    Endpoints for ``fail_next``/``set_delay``: create (both POST forms), get,
    cancel, model, version.
    """

    def __init__(
        self,
        api_token: str = "r8_test",
        models: dict[str, str | None] | None = None,
        *,
        responder: PromptResponder | None = None,
        polls_until_done: int = 1,
        image_inputs: dict[str, str] | None = None,
    ):
        super().__init__()
        self.api_token = api_token
        # Vision models: owner/name -> the name of their image input.
        self.image_inputs = dict(image_inputs or {})
        chosen = models if models is not None else {"google/gemma-3-4b-it": None}
        self.models: dict[str, str] = {name: version or version_id_for(name) for name, version in chosen.items()}
        # Replaceable: fake.responder = lambda input: "..."
        self.responder: PromptResponder = responder or echo_prompt
        # How many GETs of a prediction it takes to finish (1: the first poll).
        self.polls_until_done = polls_until_done
        self._predictions: dict[str, _Prediction] = {}
        self._fail_with: str | None = None

    # -- convenience for tests ------------------------------------------------

    def fail_predictions_with(self, error_message: str | None) -> None:
        """New predictions end as ``failed`` with ``error_message`` (None: stop)."""
        with self._lock:
            self._fail_with = error_message

    @property
    def inputs(self) -> list[dict]:
        """The ``input`` of every accepted prediction, oldest first."""
        with self._lock:
            return [p.data["input"] for p in self._predictions.values()]

    def prediction(self, prediction_id: str) -> dict:
        with self._lock:
            return dict(self._predictions[prediction_id].data)

    def _reset_state(self) -> None:
        self._predictions.clear()
        self._fail_with = None

    def error_body(self, status: int, message: str | None = None) -> dict:
        phrase = HTTPStatus(status).phrase
        return {"title": phrase, "detail": message or phrase, "status": status}

    def before_request(self, request: RecordedRequest) -> Response | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme not in ("Bearer", "Token") or token != self.api_token:
            return _problem(401, "You did not pass a valid authentication token", "Unauthenticated")
        return None

    # -- predictions -------------------------------------------------------------

    @route("POST", r"/v1/predictions", "create")
    def create(self, request: RecordedRequest) -> Response:
        body = request.json if isinstance(request.json, dict) else {}
        reference = body.get("version")
        if not isinstance(reference, str) or not reference:
            return _problem(422, "- version: version is required", "Input validation failed")
        version = reference.rpartition(":")[2]
        model = next((name for name, vid in self.models.items() if vid == version), None)
        if model is None:
            return _problem(
                422,
                "The specified version does not exist (or perhaps you don't have permission to use it?)",
                "Invalid version or not permitted",
            )
        return self._start(request, model, body)

    @route("POST", r"/v1/models/" + _OWNER_NAME + r"/predictions", "create")
    def create_for_model(self, request: RecordedRequest, owner: str, name: str) -> Response:
        model = f"{owner}/{name}"
        if model not in self.models:
            return _problem(404, "The requested resource could not be found.", "Not found")
        body = request.json if isinstance(request.json, dict) else {}
        return self._start(request, model, body)

    @route("GET", r"/v1/predictions/(?P<prediction_id>[^/]+)", "get")
    def get(self, request: RecordedRequest, prediction_id: str) -> Response:
        with self._lock:
            prediction = self._predictions.get(prediction_id)
            if prediction is None:
                return _problem(404, "Not found.")
            if prediction.data["status"] not in TERMINAL:
                prediction.polls += 1
                self._advance(prediction)
            return json_response(200, prediction.data)

    @route("POST", r"/v1/predictions/(?P<prediction_id>[^/]+)/cancel", "cancel")
    def cancel(self, request: RecordedRequest, prediction_id: str) -> Response:
        with self._lock:
            prediction = self._predictions.get(prediction_id)
            if prediction is None:
                return _problem(404, "Not found.")
            if prediction.data["status"] not in TERMINAL:
                prediction.data.update(status="canceled", completed_at=_now())
            return json_response(200, prediction.data)

    def _start(self, request: RecordedRequest, model: str, body: dict) -> Response:
        inputs = body.get("input")
        if not isinstance(inputs, dict):
            return _problem(422, "- input: Invalid type. Expected: object", "Input validation failed")
        image_input = self.image_inputs.get(model)
        problems = sorted(_input_validator(image_input).iter_errors(inputs), key=lambda e: list(map(str, e.path)))
        if problems:
            detail = "\n".join(f"- {'.'.join(['input', *map(str, e.path)])}: {e.message}" for e in problems)
            return _problem(422, detail, "Input validation failed")
        seen = ""
        if image_input is not None and image_input in inputs:
            try:
                content_type, data = decode_data_url(inputs[image_input])
                seen = seen_images([image_label(data, content_type=content_type)])
            except BadImage as exc:
                return _problem(422, f"- input.{image_input}: {exc}", "Input validation failed")
        answer, _ = truncate(seen + self.responder(dict(inputs)),
                             inputs.get("max_new_tokens", inputs.get("max_tokens")))
        prediction_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(26))
        urls = {
            "get": f"{self.url}/v1/predictions/{prediction_id}",
            "cancel": f"{self.url}/v1/predictions/{prediction_id}/cancel",
            "web": f"https://replicate.com/p/{prediction_id}",
        }
        data = {
            "id": prediction_id,
            "model": model,
            "version": self.models[model],
            "input": inputs,
            "logs": "",
            "output": None,
            "data_removed": False,
            "error": None,
            "source": "api",
            "status": "starting",
            "created_at": _now(),
            "started_at": None,
            "completed_at": None,
            "urls": urls,
            "metrics": {},
        }
        with self._lock:
            prediction = _Prediction(data, split_tokens(answer), self._fail_with)
            self._predictions[prediction_id] = prediction
            if "wait" in request.headers.get("prefer", ""):
                prediction.polls = self.polls_until_done
                self._advance(prediction)
            return json_response(201, prediction.data)

    def _advance(self, prediction: _Prediction) -> None:
        """Move a prediction along according to how often it was polled."""
        data = prediction.data
        data["started_at"] = data["started_at"] or _now()
        if prediction.polls < self.polls_until_done:
            shown = len(prediction.tokens) * prediction.polls // self.polls_until_done
            data.update(status="processing", output=prediction.tokens[:shown], logs="Generating...\n")
            return
        data["completed_at"] = _now()
        if prediction.error is not None:
            data.update(status="failed", error=prediction.error, output=None, logs=f"Error: {prediction.error}\n")
            return
        prompt = str(data["input"].get("prompt", ""))
        output_tokens = count_tokens("".join(prediction.tokens))
        data.update(
            status="succeeded",
            output=list(prediction.tokens),
            logs=f"Generated {output_tokens} tokens\n",
            metrics={
                "input_token_count": count_tokens(prompt),
                "output_token_count": output_tokens,
                "predict_time": round(0.05 + 0.02 * output_tokens, 6),
                "total_time": round(0.1 + 0.02 * output_tokens, 6),
                "time_to_first_token": 0.05,
                "tokens_per_second": 50.0,
            },
        )

    # -- models ------------------------------------------------------------------

    @route("GET", r"/v1/models/" + _OWNER_NAME, "model")
    def model(self, request: RecordedRequest, owner: str, name: str) -> Response:
        model = f"{owner}/{name}"
        if model not in self.models:
            return _problem(404, "Not found.")
        return json_response(
            200,
            {
                "url": f"https://replicate.com/{model}",
                "owner": owner,
                "name": name,
                "description": f"Fake {name} language model",
                "visibility": "public",
                "github_url": None,
                "paper_url": None,
                "license_url": None,
                "run_count": 12345,
                "cover_image_url": None,
                "default_example": None,
                "latest_version": self._version(model),
            },
        )

    @route("GET", r"/v1/models/" + _OWNER_NAME + r"/versions/(?P<version_id>[^/]+)", "version")
    def version(self, request: RecordedRequest, owner: str, name: str, version_id: str) -> Response:
        model = f"{owner}/{name}"
        if self.models.get(model) != version_id:
            return _problem(404, "Not found.")
        return json_response(200, self._version(model))

    @route("GET", r"/v1/models/" + _OWNER_NAME + r"/versions", "version")
    def versions(self, request: RecordedRequest, owner: str, name: str) -> Response:
        model = f"{owner}/{name}"
        if model not in self.models:
            return _problem(404, "Not found.")
        return json_response(200, {"next": None, "previous": None, "results": [self._version(model)]})

    def _version(self, model: str) -> dict[str, Any]:
        return {
            "id": self.models[model],
            "created_at": "2025-03-12T10:04:11.253735Z",
            "cog_version": "0.14.1",
            "openapi_schema": {
                "openapi": "3.0.2",
                "info": {"title": "Cog", "version": "0.1.0"},
                "paths": {},
                "components": {"schemas": {"Input": input_schema(self.image_inputs.get(model)),
                                           "Output": OUTPUT_SCHEMA}},
            },
        }

    # -- process mode ------------------------------------------------------------

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--api-token", default="r8_test")
        parser.add_argument("--model", action="append", dest="models", help="owner/name to offer (repeatable)")
        parser.add_argument("--polls-until-done", type=int, default=1)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> FakeReplicate:
        models = {name: None for name in args.models} if args.models else None
        return cls(args.api_token, models, polls_until_done=args.polls_until_done)


if __name__ == "__main__":
    FakeReplicate.main()

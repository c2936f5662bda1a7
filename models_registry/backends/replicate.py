"""Replicate's predictions API, through the official `replicate` client."""
import time
from collections.abc import Iterator
from contextlib import contextmanager

import replicate
from replicate.exceptions import ReplicateError

from .base import (
    BackendConfig,
    BackendFailed,
    BackendTimeout,
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

POLL_INTERVALS = (0.05, 0.1, 0.2, 0.5, 1.0)


class ReplicateBackend:
    def __init__(self, config: BackendConfig) -> None:
        self.config = config
        self.client = replicate.Client(
            api_token=config.api_key or None,
            base_url=config.base_url.rstrip("/"),
            timeout=http_timeout(config.timeout),
            # Passed on to its httpx client, which would otherwise take a 3xx for an answer.
            follow_redirects=False, event_hooks={"response": [refuse_redirects]},
        )
        self.model_ref, _, self.version = config.model.partition(":")

    def generate(self, turns: list[Turn], params: SamplingParams) -> Completion:
        system = "\n".join(turn.content for turn in turns if turn.role == "system")
        payload = {
            "prompt": render_transcript(turns),
            "temperature": params.temperature,
            "top_p": params.top_p,
            "top_k": params.top_k,
            "max_new_tokens": params.max_new_tokens,
            "repetition_penalty": params.repetition_penalty,
        }
        if system:
            payload["system_prompt"] = system
        images = [image for turn in turns for image in turn.images]
        if images and self.config.image_input:
            # One image input per model: the newest image. A data URL, not a file object: the
            # client would upload a file to Replicate's file storage, where it outlives the
            # prediction (and with `model=` it ignores file_encoding_strategy="base64").
            payload[self.config.image_input] = images[-1].data_url()
        # Replicate's own wait has no deadline, so we poll against ours and cancel past it.
        deadline = time.monotonic() + self.config.timeout
        with self._errors():
            if self.version:
                prediction = self.client.predictions.create(version=self.version, input=payload)
            else:
                prediction = self.client.predictions.create(model=self.model_ref, input=payload)
            for interval in _poll_intervals():
                if prediction.status in ("succeeded", "failed", "canceled"):
                    break
                if time.monotonic() + interval > deadline:
                    prediction.cancel()
                    raise BackendTimeout(
                        f"Replicate prediction {prediction.id} did not finish within {self.config.timeout:g} s"
                    )
                time.sleep(interval)
                prediction.reload()
            if prediction.status != "succeeded":
                # Inside the block: the model's error text may quote the key too.
                raise BackendFailed(f"Replicate prediction {prediction.id} {prediction.status}: {prediction.error}")
        output = prediction.output
        text = "".join(output) if isinstance(output, list) else str(output or "")
        metrics = prediction.metrics or {}
        return Completion(
            text=text.strip(),
            prompt_tokens=metrics.get("input_token_count"),
            completion_tokens=metrics.get("output_token_count"),
        )

    def check(self) -> ConnectionReport:
        def model_exists() -> list[str]:
            with self._errors():
                model = self.client.models.get(self.model_ref)
                if self.version:
                    model.versions.get(self.version)
            return [self.config.model]

        return checked(self, model_exists)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        with backend_errors(service="Replicate", config=self.config):
            try:
                yield
            except ReplicateError as exc:
                raise error_from_http_status(exc.status or 500, exc.detail or exc.title or "error") from None


def render_transcript(turns: list[Turn]) -> str:
    """A multi-turn chat as one prompt, for models that take a single `prompt` string."""
    lines = []
    for turn in turns:
        if turn.role == "user":
            lines.append(f"User: {turn.content}")
        elif turn.role == "assistant":
            lines.append(f"Assistant: {turn.content}")
    if len(lines) == 1:
        return turns[-1].content
    return "\n".join(lines) + "\nAssistant:"


def _poll_intervals() -> Iterator[float]:
    yield from POLL_INTERVALS
    while True:
        yield POLL_INTERVALS[-1]

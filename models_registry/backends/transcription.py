"""Speech to text on OpenAI's /v1/audio/transcriptions (whisper.cpp's server, faster-whisper
servers, vLLM), over httpx: the audio goes up as a multipart form, the text comes back as JSON."""
import json
import math
import re
from dataclasses import replace

import httpx
from django.utils.translation import gettext_lazy as _

from .base import (
    BackendConfig,
    BackendRejected,
    ConnectionReport,
    Transcript,
    backend_errors,
    checked,
)
from .openai_compat import openai_client, raise_for_status

# OpenAI's own limit for one file; a LINE voice message is far smaller.
MAX_AUDIO_BYTES = 25 * 1024 * 1024
# verbose_json carries segments and timings besides the text; a few minutes of speech is
# tens of kilobytes.
MAX_ANSWER_BYTES = 1024 * 1024
# Several times what a few minutes of speech makes; more is a server gone wrong.
MAX_TEXT_CHARS = 20_000
# Servers guess the format from the file name, so the name says what the audio is.
EXTENSIONS = {
    "audio/mp4": "m4a", "audio/x-m4a": "m4a", "audio/m4a": "m4a", "audio/aac": "aac",
    "audio/mpeg": "mp3", "audio/mp3": "mp3", "audio/wav": "wav", "audio/x-wav": "wav",
    "audio/webm": "webm", "audio/ogg": "ogg", "audio/flac": "flac",
}
# ISO 639-1 (or -3) as the endpoint's `language` takes it: "zh", "en", "yue".
_LANGUAGE = re.compile(r"[a-z]{2,3}")


class TranscriptionBackend:
    def __init__(self, config: BackendConfig) -> None:
        self.config = config
        self.client = openai_client(config)

    def transcribe(self, audio: bytes, content_type: str, language: str | None = None) -> Transcript:
        """The text of `audio` (`content_type` one of EXTENSIONS'), optionally told its language.

        Bad input is a ValueError before anything is sent; what the server does wrong is a
        BackendError, as for the other adapters.
        """
        extension = EXTENSIONS.get(content_type.split(";")[0].strip().lower())
        if extension is None:
            raise ValueError(f"Cannot transcribe {content_type!r}: not one of the audio types "
                             f"{', '.join(sorted(EXTENSIONS))}")
        if not audio:
            raise ValueError("No audio to transcribe")
        if len(audio) > MAX_AUDIO_BYTES:
            raise ValueError(f"The audio is {len(audio)} bytes; at most {MAX_AUDIO_BYTES} are sent")
        if language is not None and not _LANGUAGE.fullmatch(language):
            raise ValueError(f"Language {language!r} is not an ISO 639-1 code such as 'zh' or 'en'")
        fields = {"model": self.config.model, "response_format": "verbose_json"}
        if language:
            fields["language"] = language
        with backend_errors(service="the transcription server", config=self.config):
            body = self._post("audio/transcriptions", data=fields,
                              files={"file": (f"audio.{extension}", audio, content_type)})
            return _transcript(body)

    def check(self) -> ConnectionReport:
        """What can be checked without audio: the server answers, lists our model if it lists
        models (/v1/models), and has the transcription endpoint (a form without a file must
        be refused as incomplete, not as unknown)."""
        def served_models() -> list[str] | None:
            with backend_errors(service="the transcription server", config=self.config):
                response = self.client.get("models")
                names = None
                if response.status_code != 404:
                    raise_for_status(response)
                    names = _model_names(response)
                self._probe_endpoint()
            return names

        report = checked(self, served_models)
        # Ok with no models: the server lists none (a list without ours is not ok).
        if report.ok and not report.models:
            return replace(report, detail=_("Reachable; the transcription endpoint answers. The server lists no "
                                            "models, so the model name is checked when audio is sent."))
        return report

    def _probe_endpoint(self) -> None:
        response = self.client.post("audio/transcriptions", files={"model": (None, self.config.model)})
        if response.status_code in (404, 405):
            raise BackendRejected(
                f"HTTP {response.status_code}: no audio/transcriptions endpoint under {self.config.base_url} "
                "(the URL should end in /v1; whisper.cpp's server needs --inference-path "
                "/v1/audio/transcriptions)")
        if response.status_code in (400, 422):
            return  # refused for lack of a file: the endpoint is there
        raise_for_status(response)

    def _post(self, path: str, **request) -> bytes:
        """The answer's body, read no further than MAX_ANSWER_BYTES."""
        with self.client.stream("POST", path, **request) as response:
            chunks, size = [], 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > MAX_ANSWER_BYTES:
                    raise BackendRejected(f"The transcription server's answer is over {MAX_ANSWER_BYTES} bytes")
                chunks.append(chunk)
            body = b"".join(chunks)
        raise_for_status(httpx.Response(response.status_code, headers=response.headers, content=body))
        return body


def _transcript(body: bytes) -> Transcript:
    try:
        answer = json.loads(body)
    except ValueError:
        raise BackendRejected("The transcription server's answer is not JSON") from None
    text = answer.get("text") if isinstance(answer, dict) else None
    if not isinstance(text, str):
        raise BackendRejected("The transcription server's answer has no text")
    if len(text) > MAX_TEXT_CHARS:
        raise BackendRejected(f"The transcription server's text is over {MAX_TEXT_CHARS} characters")
    language, duration = answer.get("language"), answer.get("duration")
    return Transcript(
        text=text.strip(),
        # "en" from most servers, "english" from OpenAI's own.
        language=language if isinstance(language, str) and len(language) <= 32 else "",
        duration=float(duration) if isinstance(duration, (int, float)) and not isinstance(duration, bool)
        and math.isfinite(duration) and duration >= 0 else None,
    )


def _model_names(response: httpx.Response) -> list[str]:
    try:
        entries = response.json().get("data", [])
    except (ValueError, AttributeError):
        raise BackendRejected("The server's model list is not OpenAI's JSON") from None
    return [entry.get("id", "") for entry in entries if isinstance(entry, dict)]

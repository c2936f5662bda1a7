"""A fake speech-to-text server: OpenAI's ``/v1/audio/transcriptions`` as whisper.cpp's
server, faster-whisper servers and vLLM serve it.

The request is a ``multipart/form-data`` form: ``file`` (the audio, with a file name
whose extension says its format), ``model``, and optionally ``language`` (ISO 639-1),
``response_format`` (json, text, srt, verbose_json, vtt) and ``temperature``. The fake
checks each as the real servers do, sniffs the audio's format from its first bytes, and
answers ``fake.responder(audio, fields) -> str`` in the asked format. With
``lists_models=False`` it has no ``/v1/models``, as whisper.cpp's server has none.
"""

from __future__ import annotations

import argparse
import email.parser
import email.policy
import re
from collections.abc import Callable
from typing import Any

from .base import RecordedRequest, Response, json_response, route, text_response
from .openai_compat import FakeOpenAICompat, openai_error

TranscriptResponder = Callable[[bytes, dict[str, str]], str]
FORMATS = frozenset({"json", "text", "srt", "verbose_json", "vtt"})
# OpenAI's list of file extensions it takes.
EXTENSIONS = frozenset({"flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm", "aac"})
_LANGUAGE = re.compile(r"[a-z]{2,3}")


def sniff_audio(data: bytes) -> str | None:
    """The container an audio file's first bytes name, or None."""
    if data[4:8] == b"ftyp":
        return "mp4"
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "wav"
    if data[:3] == b"ID3" or data[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "mp3"
    if data[:2] in (b"\xff\xf1", b"\xff\xf9"):
        return "aac"
    if data[:4] == b"OggS":
        return "ogg"
    if data[:4] == b"fLaC":
        return "flac"
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return "webm"
    return None


def default_transcript(audio: bytes, fields: dict[str, str]) -> str:
    return f"heard {len(audio)} bytes of {sniff_audio(audio)} audio"


def parse_form(content_type: str, body: bytes) -> tuple[dict[str, str], dict[str, tuple[str, str, bytes]]]:
    """A multipart/form-data body as (fields, files by name: (filename, content type, data)).

    ValueError when it is not a well-formed form.
    """
    if not content_type.lower().startswith("multipart/form-data") or "boundary=" not in content_type:
        raise ValueError("Content-Type must be multipart/form-data with a boundary")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart() or message.defects:
        raise ValueError("The multipart body is malformed")
    fields: dict[str, str] = {}
    files: dict[str, tuple[str, str, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if part.get_content_disposition() != "form-data" or not name:
            raise ValueError("Each part needs Content-Disposition: form-data with a name")
        data = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        if filename is not None:
            files[name] = (filename, part.get_content_type(), data)
        else:
            fields[name] = data.decode("utf-8")
    return fields, files


class FakeTranscription(FakeOpenAICompat):
    """``/v1/audio/transcriptions`` (and ``/v1/models`` unless ``lists_models`` is False).

    Endpoints for ``fail_next``/``set_delay``: transcriptions, models, health.
    """

    def __init__(
        self,
        models: tuple[str, ...] | list[str] = ("whisper-1",),
        api_key: str | None = None,
        *,
        responder: TranscriptResponder | None = None,
        lists_models: bool = True,
    ):
        super().__init__(models, api_key)
        # Replaceable: fake.transcriber = lambda audio, fields: "..."
        self.transcriber: TranscriptResponder = responder or default_transcript
        self.lists_models = lists_models

    @property
    def forms(self) -> list[dict[str, Any]]:
        """Each accepted transcription request's fields, with ``file`` as (name, type, bytes)."""
        return [r.notes["form"] for r in self.requests_for("transcriptions") if "form" in r.notes]

    def list_models(self, request: RecordedRequest) -> Response:
        if not self.lists_models:
            return openai_error(404, "Not Found")
        return super().list_models(request)

    @route("POST", r"/v1/audio/transcriptions", "transcriptions")
    def transcriptions(self, request: RecordedRequest) -> Response:
        try:
            fields, files = parse_form(request.headers.get("content-type", ""), request.body)
        except ValueError as exc:
            return openai_error(400, str(exc))
        if "file" not in files:
            return openai_error(400, "you must provide a file", param="file")
        model = fields.get("model")
        if not model:
            return openai_error(400, "you must provide a model parameter", param="model")
        if model not in self.models:
            return openai_error(404, f"The model `{model}` does not exist.", param="model", code="model_not_found")
        filename, content_type, audio = files["file"]
        extension = filename.rpartition(".")[2].lower() if "." in filename else ""
        if extension not in EXTENSIONS:
            return openai_error(400, f"Invalid file format. Supported formats: {sorted(EXTENSIONS)}", param="file")
        if not content_type.startswith("audio/") and content_type != "application/octet-stream":
            return openai_error(400, f"Invalid file content type {content_type!r}", param="file")
        if not audio or sniff_audio(audio) is None:
            return openai_error(400, "Audio file could not be decoded or its format is not supported.",
                                param="file")
        language = fields.get("language")
        if language is not None and not _LANGUAGE.fullmatch(language):
            return openai_error(400, f"Invalid language {language!r}: use ISO-639-1", param="language")
        response_format = fields.get("response_format", "json")
        if response_format not in FORMATS:
            return openai_error(400, f"Invalid response_format {response_format!r}", param="response_format")
        if "temperature" in fields:
            try:
                if not 0 <= float(fields["temperature"]) <= 1:
                    raise ValueError
            except ValueError:
                return openai_error(400, "temperature must be a number between 0 and 1", param="temperature")
        request.notes["form"] = {**fields, "file": files["file"]}
        text = self.transcriber(audio, fields)
        return _answer(text, response_format, language=language or "en", duration=round(len(audio) / 4000, 2))

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--model", action="append", dest="models", help="model id to offer (repeatable)")
        parser.add_argument("--api-key", default=None)
        parser.add_argument("--no-models-list", action="store_true", help="no /v1/models, as whisper.cpp")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> FakeTranscription:
        return cls(tuple(args.models or ("whisper-1",)), args.api_key, lists_models=not args.no_models_list)


def _answer(text: str, response_format: str, *, language: str, duration: float) -> Response:
    if response_format == "json":
        return json_response(200, {"text": text})
    if response_format == "verbose_json":
        segment = {"id": 0, "seek": 0, "start": 0.0, "end": duration, "text": text, "temperature": 0.0,
                   "avg_logprob": -0.25, "compression_ratio": 1.1, "no_speech_prob": 0.01}
        return json_response(200, {"task": "transcribe", "language": language, "duration": duration,
                                    "text": text, "segments": [segment]})
    if response_format == "text":
        return text_response(200, text + "\n")
    stamp = f"00:00:00{',' if response_format == 'srt' else '.'}000 --> 00:00:{duration:06.3f}"
    if response_format == "srt":
        return text_response(200, f"1\n{stamp.replace('.', ',')}\n{text}\n\n")
    return text_response(200, f"WEBVTT\n\n{stamp}\n{text}\n\n", "text/vtt; charset=utf-8")


if __name__ == "__main__":
    FakeTranscription.main()

"""Images in prompts, each protocol's own form, and speech to text on /v1/audio/transcriptions:
through the real client libraries against the loopback fakes."""
import base64
import io

import pytest
from django.core.exceptions import ValidationError
from PIL import Image

from models_registry import selectors, services
from models_registry.backends import (
    BackendConfig,
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
    ImagePart,
    SamplingParams,
    Turn,
    backend_for,
)
from models_registry.backends import transcription
from models_registry.models import BackendKind, ModelBackend, SamplingPreset
from models_registry.prompts import build_prompt, without_images
from tests.fakes.base import RecordedRequest, Response, json_response, route, text_response
from tests.fakes.ollama import FakeOllama
from tests.fakes.openai_compat import FakeOpenAICompat
from tests.fakes.replicate import FakeReplicate
from tests.fakes.transcription import FakeTranscription
from tests.test_api import api, api_test_settings, superuser  # noqa: F401 (fixtures)

PARAMS = SamplingParams(max_new_tokens=64)
GEMMA = "google/gemma-3-4b-it"
# The first bytes of an .m4a file (an MP4 container), as LINE's voice messages are.
M4A = b"\x00\x00\x00\x1cftypM4A \x00\x00\x00\x00M4A mp42isom" + bytes(200)
KEY = "sk-whisper-secret-0123"


def image(width: int = 4, height: int = 3, kind: str = "PNG") -> ImagePart:
    data = io.BytesIO()
    Image.new("RGB", (width, height), "teal").save(data, kind)
    return ImagePart({"PNG": "image/png", "JPEG": "image/jpeg"}[kind], data.getvalue())


def photo_turns(*images: ImagePart) -> list[Turn]:
    return [Turn("system", "Be brief."), Turn("user", "What is this?", images)]


# --- Each protocol's image form --------------------------------------------------------


def test_ollama_sends_images_as_base64_on_the_message_and_a_vision_model_sees_them():
    picture = image(4, 3)
    with FakeOllama(models=("gemma3:4b",), vision_models=("gemma3:4b",)) as fake:
        adapter = backend_for(BackendConfig(kind="ollama", base_url=fake.url, model="gemma3:4b", timeout=5))
        completion = adapter.generate(photo_turns(picture), PARAMS)
        sent = fake.last("chat").json["messages"]
    assert completion.text == "I see an image 4x3 PNG. echo: What is this?"
    assert base64.b64decode(sent[1]["images"][0], validate=True) == picture.data
    assert "images" not in sent[0], "a turn without images sends none"


def test_ollama_refuses_what_is_not_an_image_and_a_text_model_ignores_images():
    with FakeOllama(models=("gemma3:4b", "llama3.2:3b"), vision_models=("gemma3:4b",)) as fake:
        vision = backend_for(BackendConfig(kind="ollama", base_url=fake.url, model="gemma3:4b", timeout=5))
        with pytest.raises(BackendRejected, match="unknown format"):
            vision.generate(photo_turns(ImagePart("image/png", b"not a picture")), PARAMS)
        text_only = backend_for(BackendConfig(kind="ollama", base_url=fake.url, model="llama3.2:3b", timeout=5))
        assert text_only.generate(photo_turns(image()), PARAMS).text == "echo: What is this?"


def test_openai_compatible_sends_content_parts_with_a_data_url():
    picture = image(8, 6, "JPEG")
    with FakeOpenAICompat(models=("qwen2.5-vl",), vision_models=("qwen2.5-vl",)) as fake:
        adapter = backend_for(BackendConfig(kind="openai_compatible", base_url=fake.url + "/v1", model="qwen2.5-vl",
                                            timeout=5))
        completion = adapter.generate(photo_turns(picture, image(2, 2)), PARAMS)
        system, user = fake.last("chat").json["messages"]
    assert completion.text == "I see 2 images: 8x6 JPEG, 2x2 PNG. echo: What is this?"
    assert system["content"] == "Be brief.", "text alone stays a plain string"
    assert user["content"][0] == {"type": "text", "text": "What is this?"}
    assert user["content"][1]["image_url"]["url"] == "data:image/jpeg;base64," + base64.b64encode(
        picture.data).decode()


def test_openai_compatible_images_a_text_model_refuses_or_a_wrong_type_are_rejected():
    with FakeOpenAICompat(models=("llama-3.1-8b", "qwen2.5-vl"), vision_models=("qwen2.5-vl",)) as fake:
        def config(model):
            return BackendConfig(kind="openai_compatible", base_url=fake.url + "/v1", model=model, timeout=5)

        with pytest.raises(BackendRejected, match="not a multimodal model"):
            backend_for(config("llama-3.1-8b")).generate(photo_turns(image()), PARAMS)
        mislabelled = ImagePart("image/jpeg", image(kind="PNG").data)
        with pytest.raises(BackendRejected, match="is PNG, not the image/jpeg"):
            backend_for(config("qwen2.5-vl")).generate(photo_turns(mislabelled), PARAMS)


def replicate_backend(fake, **fields) -> ModelBackend:
    return ModelBackend.objects.create(**{
        "name": "Replicate", "kind": BackendKind.REPLICATE, "base_url": fake.url, "model": GEMMA,
        "api_key": "r8_test", "timeout": 5, "is_local": False, **fields})


@pytest.mark.django_db
def test_replicate_sends_the_newest_image_to_the_backends_named_input():
    newest = image(6, 5)
    with FakeReplicate(models={GEMMA: None}, image_inputs={GEMMA: "input_image"}) as fake:
        backend = replicate_backend(fake, reads_images=True, image_input="input_image")
        turns = [Turn("user", "and this?", (image(2, 2),)), Turn("assistant", "a square"),
                 Turn("user", "now?", (newest,))]
        completion = services.adapter_for(backend=backend).generate(turns, PARAMS)
        sent = fake.inputs[-1]
    assert completion.text.startswith("I see an image 6x5 PNG.")
    assert sent["input_image"] == newest.data_url()


@pytest.mark.django_db
def test_replicate_sends_no_image_when_the_backend_is_not_set_to_read_them():
    with FakeReplicate(models={GEMMA: None}, image_inputs={GEMMA: "image"}) as fake:
        backend = replicate_backend(fake, reads_images=False, image_input="image")
        completion = services.adapter_for(backend=backend).generate(photo_turns(image()), PARAMS)
        assert "image" not in fake.inputs[-1] and not completion.text.startswith("I see")


# --- Which backends read images ---------------------------------------------------------


@pytest.fixture
def vision_ollama():
    with FakeOllama(models=("gemma3:4b", "llama3.2:3b"), vision_models=("gemma3:4b",)) as fake:
        yield fake


def ollama_backend(fake, model="gemma3:4b", **fields) -> ModelBackend:
    return ModelBackend.objects.create(name=f"Ollama {model}", kind=BackendKind.OLLAMA, base_url=fake.url,
                                       model=model, timeout=5, **fields)


@pytest.mark.django_db
def test_ollama_image_reading_is_detected_from_api_show_and_remembered(vision_ollama):
    gemma, llama = ollama_backend(vision_ollama), ollama_backend(vision_ollama, "llama3.2:3b", reads_images=True)
    assert selectors.reads_images(backend=gemma, refresh=False) is None, "not asked yet"
    assert selectors.reads_images(backend=gemma) is True
    assert selectors.reads_images(backend=llama) is False, "the model's capabilities, not the setting"
    assert [r.json["model"] for r in vision_ollama.requests_for("show")] == ["gemma3:4b", "llama3.2:3b"]
    assert selectors.reads_images(backend=gemma) is True
    assert vision_ollama.count("show") == 2, "asked once per process while remembered"
    gemma.model = "llama3.2:3b"
    gemma.save()
    assert selectors.reads_images(backend=gemma) is False, "a changed backend is asked afresh"


@pytest.mark.django_db
def test_an_ollama_server_that_does_not_answer_reads_no_images_and_is_asked_again(vision_ollama):
    gemma = ollama_backend(vision_ollama)
    vision_ollama.fail_next("show", 500)
    assert selectors.reads_images(backend=gemma) is None
    assert selectors.reads_images(backend=gemma) is True


@pytest.mark.django_db
def test_other_kinds_read_images_by_their_setting():
    def make(kind, **fields):
        return ModelBackend.objects.create(name=f"{kind} {fields}", kind=kind, base_url="http://127.0.0.1:9/v1",
                                           model="m", **fields)

    assert selectors.reads_images(backend=make(BackendKind.OPENAI_COMPATIBLE, reads_images=True)) is True
    assert selectors.reads_images(backend=make(BackendKind.OPENAI_COMPATIBLE)) is False
    assert selectors.reads_images(backend=make(BackendKind.REPLICATE, reads_images=True)) is True
    assert selectors.reads_images(backend=make(BackendKind.TRANSCRIPTION, reads_images=True)) is False


@pytest.mark.django_db
def test_test_connection_says_whether_the_model_reads_images(admin_client, vision_ollama):
    gemma = ollama_backend(vision_ollama)
    url = f"/admin/models_registry/modelbackend/{gemma.pk}/test/"
    assert "not known yet" in admin_client.get(url).content.decode()
    page = admin_client.post(url).content.decode()
    assert "Connected" in page and "yes (its model says so)" in page
    listing = admin_client.get("/admin/models_registry/modelbackend/").content.decode()
    assert 'alt="True"' in listing, "the list shows what the test learnt, calling no server"


@pytest.mark.django_db
def test_the_api_test_reports_image_reading(api, vision_ollama):
    gemma = ollama_backend(vision_ollama)
    body = api.post(f"/api/v1/backends/{gemma.pk}/test/").json()
    assert body["ok"] is True and body["reads_images"] is True


# --- The images a prompt carries ---------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("keep, expected", [
    # The answered turn's own image always goes; `keep` is how many earlier ones go again.
    (0, [(), (), ("d",)]),
    (1, [(), ("c",), ("d",)]),
    (2, [(), ("b", "c"), ("d",)]),
    (3, [("a",), ("b", "c"), ("d",)]),
    (9, [("a",), ("b", "c"), ("d",)]),
])
def test_build_prompt_keeps_only_the_presets_newest_images(backend, keep, expected):
    def part(name):
        return ImagePart("image/png", name.encode())

    preset = SamplingPreset.objects.create(name=f"keep {keep}", backend=backend, history_images=keep,
                                           system_prompt="Look closely.")
    conversation = [Turn("user", "first", (part("a"),)), Turn("assistant", "a"),
                    Turn("user", "an album", (part("b"), part("c"))), Turn("assistant", "b and c"),
                    Turn("user", "last", (part("d"),))]
    prompt = build_prompt(preset=preset, conversation=conversation)
    assert prompt[0] == Turn("system", "Look closely.")
    assert [tuple(i.data.decode() for i in t.images) for t in prompt if t.role == "user"] == expected
    assert [t.content for t in prompt[1:]] == [t.content for t in conversation], "texts untouched"
    assert all(not t.images for t in without_images(prompt))


@pytest.mark.django_db
def test_images_of_turns_outside_the_history_window_are_not_counted(backend):
    preset = SamplingPreset.objects.create(name="short", backend=backend, history_turns=1, history_images=5)
    old, recent = ImagePart("image/png", b"old"), ImagePart("image/png", b"recent")
    prompt = build_prompt(preset=preset, conversation=[Turn("user", "x", (old,)), Turn("assistant", "y"),
                                                      Turn("user", "z", (recent,))])
    assert [t.images for t in prompt] == [(), (recent,)]


# --- Speech to text --------------------------------------------------------------------


@pytest.fixture
def whisper():
    with FakeTranscription(models=("whisper-1",), api_key=KEY) as fake:
        yield fake


def stt_config(fake, key=KEY, model="whisper-1", timeout=5.0) -> BackendConfig:
    return BackendConfig(kind="transcription", base_url=fake.url + "/v1", model=model, api_key=key, timeout=timeout)


def test_transcribe_sends_the_multipart_form_and_reads_the_transcript(whisper):
    whisper.transcriber = lambda audio, fields: "  明天下午三點開會  "
    transcript = backend_for(stt_config(whisper)).transcribe(M4A, "audio/x-m4a", "zh")
    assert transcript.text == "明天下午三點開會" and transcript.language == "zh"
    assert transcript.duration == pytest.approx(len(M4A) / 4000, abs=0.01)
    form = whisper.forms[-1]
    assert form["file"] == ("audio.m4a", "audio/x-m4a", M4A)
    assert {k: form[k] for k in ("model", "response_format", "language")} == {
        "model": "whisper-1", "response_format": "verbose_json", "language": "zh"}
    assert whisper.last("transcriptions").headers["authorization"] == f"Bearer {KEY}"


def test_transcribe_leaves_the_language_to_the_server_when_not_told(whisper):
    transcript = backend_for(stt_config(whisper)).transcribe(M4A, "audio/mp4")
    assert "language" not in whisper.forms[-1] and transcript.language == "en"
    assert transcript.text == f"heard {len(M4A)} bytes of mp4 audio"


@pytest.mark.parametrize("audio, content_type, language, message", [
    (M4A, "video/mp4", None, "not one of the audio types"),
    (b"", "audio/mp4", None, "No audio"),
    (M4A, "audio/mp4", "Chinese", "not an ISO 639-1 code"),
])
def test_bad_audio_is_refused_before_anything_is_sent(whisper, audio, content_type, language, message):
    with pytest.raises(ValueError, match=message):
        backend_for(stt_config(whisper)).transcribe(audio, content_type, language)
    assert whisper.count() == 0


def test_audio_over_the_size_limit_is_refused(whisper, monkeypatch):
    monkeypatch.setattr(transcription, "MAX_AUDIO_BYTES", 100)
    with pytest.raises(ValueError, match="at most 100"):
        backend_for(stt_config(whisper)).transcribe(M4A, "audio/mp4")
    assert whisper.count() == 0


def test_transcription_errors_are_the_backend_error_kinds(whisper):
    with pytest.raises(BackendRejected, match="HTTP 401: Invalid API key") as refused:
        backend_for(stt_config(whisper, key="sk-wrong-key-987")).transcribe(M4A, "audio/mp4")
    assert "sk-wrong-key-987" not in str(refused.value)
    with pytest.raises(BackendRejected, match="HTTP 404: The model `whisper-9` does not exist"):
        backend_for(stt_config(whisper, model="whisper-9")).transcribe(M4A, "audio/mp4")
    with pytest.raises(BackendRejected, match="could not be decoded"):
        backend_for(stt_config(whisper)).transcribe(b"plain text, no audio", "audio/mp4")
    whisper.fail_next("transcriptions", 503)
    with pytest.raises(BackendUnavailable, match="HTTP 503"):
        backend_for(stt_config(whisper)).transcribe(M4A, "audio/mp4")
    whisper.set_delay("transcriptions", 1.5)
    with pytest.raises(BackendTimeout, match="did not answer within 1 s"):
        backend_for(stt_config(whisper, timeout=1.0)).transcribe(M4A, "audio/mp4")


def test_a_refused_connection_is_unavailable():
    with FakeTranscription() as fake:
        config = stt_config(fake)
    with pytest.raises(BackendUnavailable, match="connection refused"):
        backend_for(config).transcribe(M4A, "audio/mp4")


class OddTranscriber(FakeTranscription):
    """A server that answers the transcription request with `odd_answer`."""

    odd_answer: Response = text_response(200, "<html>Bad gateway</html>", "text/html")

    @route("POST", r"/v1/audio/transcriptions", "transcriptions")
    def transcriptions(self, request: RecordedRequest) -> Response:
        return self.odd_answer


@pytest.mark.parametrize("answer, message", [
    (text_response(200, "<html>Bad gateway</html>", "text/html"), "not JSON"),
    (json_response(200, {"transcript": "hello"}), "has no text"),
    (json_response(200, {"text": "word " * 5000}), "over 20000 characters"),
    (json_response(200, {"text": "hi", "segments": ["x" * (transcription.MAX_ANSWER_BYTES + 1)]}),
     "over 1048576 bytes"),
])
def test_a_bad_answer_is_rejected(answer, message):
    with OddTranscriber() as fake:
        fake.odd_answer = answer
        with pytest.raises(BackendRejected, match=message):
            backend_for(stt_config(fake, key="")).transcribe(M4A, "audio/mp4")


def test_odd_language_and_duration_fields_are_left_out():
    with OddTranscriber() as fake:
        fake.odd_answer = json_response(200, {"text": "hi", "language": "x" * 40, "duration": "long"})
        transcript = backend_for(stt_config(fake, key="")).transcribe(M4A, "audio/mp4")
    assert (transcript.text, transcript.language, transcript.duration) == ("hi", "", None)


def test_check_lists_models_and_finds_the_endpoint(whisper):
    report = backend_for(stt_config(whisper)).check()
    assert report.ok and report.models == ["whisper-1"] and str(report.detail) == "Reachable; model available."
    probe = whisper.last("transcriptions")
    assert probe.status == 400 and b'name="model"' in probe.body, "a form without audio: nothing transcribed"
    assert whisper.forms == []
    missing = backend_for(stt_config(whisper, model="large-v3")).check()
    assert not missing.ok and "no model “large-v3”" in str(missing.detail)
    refused = backend_for(stt_config(whisper, key="sk-bad")).check()
    assert not refused.ok and "HTTP 401" in refused.detail


def test_check_of_a_server_without_a_model_list_says_what_it_checked():
    with FakeTranscription(lists_models=False) as fake:
        report = backend_for(stt_config(fake, key="")).check()
    assert report.ok and "lists no models" in str(report.detail)


def test_check_of_a_url_without_the_endpoint_says_so():
    with FakeOpenAICompat(models=("whisper-1",)) as chat_only:
        report = backend_for(stt_config(chat_only, key="")).check()
    assert not report.ok and "no audio/transcriptions endpoint" in report.detail


# --- The transcription service -----------------------------------------------------------


def stt_backend(fake, **fields) -> ModelBackend:
    return ModelBackend.objects.create(**{
        "name": "Whisper", "kind": BackendKind.TRANSCRIPTION, "base_url": fake.url + "/v1", "model": "whisper-1",
        "api_key": KEY, "timeout": 5, **fields})


@pytest.mark.django_db
def test_the_service_transcribes_retrying_a_transient_error(whisper):
    whisper.fail_next("transcriptions", 503)
    transcript = services.transcribe(backend=stt_backend(whisper), audio=M4A, content_type="audio/mp4",
                                     language="zh", local_only=True)
    assert transcript.text.startswith("heard") and whisper.count("transcriptions") == 2


@pytest.mark.django_db
def test_a_local_only_chat_never_sends_audio_to_a_cloud_transcriber(whisper):
    cloud = stt_backend(whisper, is_local=False)
    with pytest.raises(services.TranscriptionRefused, match="runs in the cloud and the chat is local-only"):
        services.transcribe(backend=cloud, audio=M4A, content_type="audio/mp4", local_only=True)
    assert whisper.count() == 0
    assert services.transcribe(backend=cloud, audio=M4A, content_type="audio/mp4", local_only=False).text


@pytest.mark.django_db
def test_the_service_refuses_a_disabled_or_text_backend(whisper, backend):
    with pytest.raises(services.TranscriptionRefused, match="is disabled"):
        services.transcribe(backend=stt_backend(whisper, enabled=False), audio=M4A, content_type="audio/mp4",
                            local_only=False)
    with pytest.raises(services.TranscriptionRefused, match="is not a speech-to-text backend"):
        services.transcribe(backend=backend, audio=M4A, content_type="audio/mp4", local_only=False)
    assert whisper.count() == 0


@pytest.mark.django_db
def test_transcription_backends_a_channel_may_choose(whisper, backend):
    local = stt_backend(whisper)
    cloud = stt_backend(whisper, name="Cloud whisper", is_local=False)
    stt_backend(whisper, name="Off", enabled=False)
    assert set(selectors.transcription_backends()) == {local, cloud}
    assert list(selectors.transcription_backends(local_only=True)) == [local]


# --- Kinds kept apart ------------------------------------------------------------------


@pytest.mark.django_db
def test_a_preset_cannot_write_with_a_transcription_backend(whisper, backend):
    stt = stt_backend(whisper)
    for field in ("backend", "fallback_backend"):
        preset = SamplingPreset(name=f"bad {field}", **{"backend": backend, field: stt})
        with pytest.raises(ValidationError) as refused:
            preset.full_clean()
        assert "cannot write answers" in str(refused.value.message_dict[field])


@pytest.mark.django_db
def test_a_backend_used_by_a_preset_cannot_become_a_transcriber(preset):
    preset.backend.kind = BackendKind.TRANSCRIPTION
    with pytest.raises(ValidationError, match="Presets use this backend"):
        preset.backend.full_clean()


@pytest.mark.django_db
def test_a_replicate_backend_reading_images_names_its_input():
    backend = ModelBackend(name="R", kind=BackendKind.REPLICATE, base_url="https://api.replicate.com",
                           model=GEMMA, reads_images=True, image_input="")
    with pytest.raises(ValidationError, match="Name the model's image input"):
        backend.full_clean()
    backend.image_input = "image url"
    with pytest.raises(ValidationError, match="letters, digits and underscores"):
        backend.full_clean()


@pytest.mark.django_db
def test_the_preset_form_offers_only_text_backends(admin_client, whisper, backend):
    stt_backend(whisper)
    page = admin_client.get("/admin/models_registry/samplingpreset/add/").content.decode()
    assert "Local Ollama" in page and "Whisper" not in page
    assert 'name="history_images"' in page


@pytest.mark.django_db
def test_the_api_refuses_a_transcriber_as_a_presets_backend(api, whisper, backend):
    stt = stt_backend(whisper)
    response = api.post("/api/v1/presets/", {"name": "p", "backend": stt.pk, "history_images": 2}, format="json")
    assert response.status_code == 400 and "cannot write answers" in str(response.json()["backend"])
    created = api.post("/api/v1/presets/", {"name": "p", "backend": backend.pk, "history_images": 2}, format="json")
    assert created.status_code == 201 and created.json()["history_images"] == 2


@pytest.mark.django_db
def test_the_api_edits_image_settings_and_tests_a_transcriber(api, whisper):
    created = api.post("/api/v1/backends/", {
        "name": "vLLM vision", "kind": "openai_compatible", "base_url": "http://127.0.0.1:8001/v1",
        "model": "qwen2.5-vl", "reads_images": True}, format="json")
    assert created.status_code == 201 and created.json()["reads_images"] is True
    assert created.json()["image_input"] == "image"
    stt = stt_backend(whisper)
    body = api.post(f"/api/v1/backends/{stt.pk}/test/").json()
    assert body == {"ok": True, "latency_ms": body["latency_ms"], "detail": "Reachable; model available.",
                    "models": ["whisper-1"], "reads_images": False}
    assert KEY not in str(body)


@pytest.mark.django_db
def test_the_console_tests_a_transcriber(admin_client, whisper):
    stt = stt_backend(whisper)
    page = admin_client.post(f"/admin/models_registry/modelbackend/{stt.pk}/test/").content.decode()
    assert "Connected" in page and "no (speech to text)" in page and "whisper-1" in page
    assert KEY not in page

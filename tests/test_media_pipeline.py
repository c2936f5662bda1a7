"""Photos and voice messages through the real webhook: fetched from the fake LINE data host in
the worker, cleaned, stored, transcribed, shown to the backends that may see them."""
import base64
import io
import multiprocessing
import os
import signal
import time
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone
from PIL import Image

from core.models import AuditEvent
from conversations import answering, erasure, notices, selectors, sweeper
from conversations.media.files import sweep_orphans
from conversations.media.models import MediaKind, MessageMedia
from conversations.media.storage import media_storage
from conversations.models import Chat, Direction, LineChannel, Message, Status
from models_registry.models import BackendKind, ModelBackend, SamplingPreset
from tests.fakes import webhooks as ev
from tests.fakes.llm import image_label
from tests.fakes.media import CAMERA, image_bytes, m4a_bytes
from tests.fakes.ollama import FakeOllama
from tests.fakes.openai_compat import FakeOpenAICompat
from tests.fakes.transcription import FakeTranscription
from tests.test_engine import _answer_in_child  # the forked worker the engine's kill test uses
from tests.test_api import api, api_test_settings, superuser  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db

CANNOT_READ = "I can't read images here. Please tell me in words what you would like to know."
CANNOT_LISTEN = "I can't listen to voice messages here. Please type your message."


@pytest.fixture
def ollama_server():
    # gemma3 reads images (Ollama's "vision" capability); llama3.2 does not.
    with FakeOllama(models=("gemma3:4b", "llama3.2:3b"), vision_models=("gemma3:4b",)) as fake:
        yield fake


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.LINEBOT_MEDIA_ROOT = tmp_path / "media"
    settings.LINEBOT = {**settings.LINEBOT, "LANGUAGE": "en"}
    return settings.LINEBOT_MEDIA_ROOT


@pytest.fixture(autouse=True)
def english(channel):
    LineChannel.objects.filter(pk=channel.pk).update(language="en")
    selectors.forget_cached_channels()


def photo(line_api, *, exif=True, fmt="JPEG", **event) -> dict:
    message = ev.media_message_event("image", **event)
    line_api.add_content(message["message"]["id"], image_bytes(fmt, exif=exif), f"image/{fmt.lower()}")
    return message


def voice(line_api, **event) -> dict:
    message = ev.media_message_event("audio", **event)
    line_api.add_content(message["message"]["id"], m4a_bytes(), "audio/m4a")
    return message


def sent_images(request) -> list[bytes]:
    return [base64.b64decode(data) for message in request.json["messages"] for data in message.get("images", [])]


def has_no_exif(data: bytes) -> bool:
    with Image.open(io.BytesIO(data)) as image:
        exif = image.getexif()
        return not exif and CAMERA.encode() not in data and "exif" not in image.info


def files_in_storage() -> list[str]:
    """Every file in the media storage, sorted."""
    storage, found = media_storage(), []

    def walk(folder):
        try:
            folders, files = storage.listdir(folder)
        except FileNotFoundError:
            return
        found.extend(f"{folder}/{name}".lstrip("/") for name in files)
        for sub in folders:
            walk(f"{folder}/{sub}".lstrip("/"))

    walk("")
    return sorted(found)


def set_channel(channel, **fields) -> None:
    LineChannel.objects.filter(pk=channel.pk).update(**fields)
    selectors.forget_cached_channels()


# --- Photos ----------------------------------------------------------------------------


def test_a_photo_in_a_one_to_one_chat_is_answered_by_a_vision_model_that_saw_it_without_exif(
        webhook, line_api, ollama_server):
    original = image_bytes("JPEG", exif=True)
    assert CAMERA.encode() in original, "the fixture carries EXIF"
    event = photo(line_api)
    webhook.post(event)
    assert line_api.count("content") == 1
    [sent] = sent_images(ollama_server.last("chat"))
    assert has_no_exif(sent)
    assert line_api.delivered_texts() == ["I see an image 64x48 JPEG. echo: [photo]"]
    inbound = Message.objects.get(direction=Direction.IN)
    assert inbound.status == Status.REPLIED
    media = MessageMedia.objects.get(message=inbound)
    with media.file.open("rb") as handle:
        stored = handle.read()
    assert has_no_exif(stored) and stored == sent, "what was sent is what was stored"


def test_the_webhook_fetches_nothing(webhook, line_api, monkeypatch):
    monkeypatch.setattr("conversations.ingest.enqueue_after_commit", lambda *args: None)
    webhook.post(photo(line_api))
    assert line_api.count("content") == 0
    assert Message.objects.get().status == Status.PENDING


def test_a_question_and_the_photo_after_it_are_one_turn(webhook, line_api, ollama_server):
    webhook.post(ev.text_message_event("What is this?"), photo(line_api))
    assert ollama_server.count("chat") == 1
    user_turns = [m for m in ollama_server.last("chat").json["messages"] if m["role"] == "user"]
    assert [m["content"] for m in user_turns] == ["What is this?", "[photo]"]
    assert len(line_api.delivered) == 1
    assert set(Message.objects.filter(direction=Direction.IN).values_list("status", flat=True)) == {Status.REPLIED}


def test_an_image_set_is_one_turn_its_place_kept(webhook, line_api, ollama_server, preset):
    SamplingPreset.objects.filter(pk=preset.pk).update(history_images=3)
    events = [photo(line_api, image_set=("set-7", index, 3)) for index in (1, 2, 3)]
    webhook.post(*events)
    assert ollama_server.count("chat") == 1
    assert len(sent_images(ollama_server.last("chat"))) == 3
    rows = MessageMedia.objects.order_by("message_id")
    assert [(m.image_set_id, m.image_set_index, m.image_set_total) for m in rows] == [
        ("set-7", 1, 3), ("set-7", 2, 3), ("set-7", 3, 3)]
    assert line_api.delivered_texts() == ["I see 3 images: 64x48 JPEG, 64x48 JPEG, 64x48 JPEG. echo: [photo]"]


def test_a_malformed_image_set_is_refused_before_anything_is_stored(webhook, line_api):
    event = photo(line_api, image_set=("set-1", 0, 3))
    webhook.post(event)
    assert Message.objects.count() == 0


def test_a_photo_in_a_group_is_answered_only_soon_after_its_sender_addressed_the_bot(
        webhook, line_api, ollama_server, make_chat):
    make_chat(ev.DEFAULT_GROUP_ID, group_memory="everything")
    now_ms = int(timezone.now().timestamp() * 1000)
    webhook.post(ev.text_message_event("what is this?", source="group", mention_self=True,
                                       timestamp_ms=now_ms - 150_000))
    late = photo(line_api, source="group", timestamp_ms=now_ms - 60_000)
    webhook.post(late)  # 90 s after the mention: outside the 60 s window
    late_row = Message.objects.get(line_message_id=late["message"]["id"])
    assert (late_row.status, late_row.skip_reason) == (Status.SKIPPED, "not mentioned")
    assert line_api.count("content") == 0
    webhook.post(ev.text_message_event("and this?", source="group", mention_self=True, timestamp_ms=now_ms - 20_000))
    soon = photo(line_api, source="group", timestamp_ms=now_ms - 10_000)
    webhook.post(soon)
    soon_row = Message.objects.get(line_message_id=soon["message"]["id"])
    assert soon_row.status == Status.REPLIED and line_api.count("content") == 1
    assert line_api.delivered_texts()[-1].startswith("I see an image 64x48 JPEG.")


def test_a_photo_from_someone_else_after_a_mention_is_not_for_the_bot(webhook, line_api, make_chat):
    make_chat(ev.DEFAULT_GROUP_ID)
    webhook.post(ev.text_message_event("look", source="group", mention_self=True))
    webhook.post(photo(line_api, source="group", user_id="U" + "9" * 32))
    assert line_api.count("content") == 0
    assert Message.objects.filter(message_type="image").count() == 0, "a group keeping only what is addressed"


@pytest.fixture
def cloud_vision():
    with FakeOpenAICompat(models=("qwen2.5-vl",), vision_models=("qwen2.5-vl",)) as fake:
        backend = ModelBackend.objects.create(
            name="Cloud vision", kind=BackendKind.OPENAI_COMPATIBLE, base_url=fake.url + "/v1", model="qwen2.5-vl",
            timeout=5, is_local=False, reads_images=True)
        yield fake, backend


def test_a_cloud_backend_gets_no_image_unless_the_channel_allows_it(webhook, line_api, preset, channel, cloud_vision):
    fake, backend = cloud_vision
    SamplingPreset.objects.filter(pk=preset.pk).update(backend=backend)
    webhook.post(photo(line_api))
    assert line_api.delivered_texts() == [CANNOT_READ]
    assert fake.count("chat") == 0
    assert Message.objects.get(direction=Direction.IN).status == Status.REPLIED
    # An earlier photo in the history is taken out of what the cloud is sent.
    webhook.post(ev.text_message_event("and now?"))
    assert sent_labels(fake) == [] and fake.count("chat") == 1
    set_channel(channel, images_to_cloud=True)
    webhook.post(photo(line_api))
    assert sent_labels(fake) == ["64x48 JPEG"]


def sent_labels(fake) -> list[str]:
    """The images the last chat request carried, as OpenAI-compatible content parts."""
    return [image_label(base64.b64decode(part["image_url"]["url"].partition(",")[2]))
            for message in fake.last("chat").json["messages"] if isinstance(message["content"], list)
            for part in message["content"] if part["type"] == "image_url"]


def test_a_local_only_chat_never_sends_an_image_to_the_cloud(
        webhook, line_api, preset, channel, cloud_vision, make_chat, backend):
    fake, cloud = cloud_vision
    # The local model reads no images; the cloud one would, and the channel allows it.
    ModelBackend.objects.filter(pk=backend.pk).update(model="llama3.2:3b")
    SamplingPreset.objects.filter(pk=preset.pk).update(fallback_backend=cloud)
    set_channel(channel, images_to_cloud=True)
    make_chat(ev.DEFAULT_USER_ID, source_type="user", local_only=True)
    webhook.post(photo(line_api))
    assert line_api.delivered_texts() == [CANNOT_READ]
    assert fake.requests_for("chat") == []


def test_the_privacy_notice_says_when_photos_may_go_to_the_cloud(channel, preset, cloud_vision, make_chat):
    SamplingPreset.objects.filter(pk=preset.pk).update(backend=cloud_vision[1])
    chat = make_chat(ev.DEFAULT_USER_ID, source_type="user")
    assert "photo" not in notices.privacy_notice(chat=chat, language="en")
    set_channel(channel, images_to_cloud=True)
    chat.channel.refresh_from_db()
    assert "Photos you send may go there too" in notices.privacy_notice(chat=chat, language="en")


def test_expired_content_gets_a_short_text_not_a_crash(webhook, line_api, ollama_server):
    event = photo(line_api)
    line_api.expire_content(event["message"]["id"])
    webhook.post(event)
    [text] = line_api.delivered_texts()
    assert text.startswith("I could not get your photo")
    inbound = Message.objects.get(direction=Direction.IN)
    assert inbound.status == Status.REPLIED and "expired" in inbound.error
    assert ollama_server.count("chat") == 0 and MessageMedia.objects.count() == 0


def test_an_external_image_is_not_fetched_unless_the_channel_allows_it(webhook, line_api, ollama_server):
    webhook.post(ev.media_message_event("image", external_url="https://images.example.com/cat.jpg"))
    assert line_api.delivered_texts()[0].startswith("I could not get your photo")
    assert "does not fetch those" in Message.objects.get(direction=Direction.IN).error


def test_a_transient_fetch_failure_waits_for_the_sweeper(webhook, line_api, ollama_server):
    event = photo(line_api)
    line_api.fail_next("content", 503, count=5)
    webhook.post(event)
    inbound = Message.objects.get(direction=Direction.IN)
    assert inbound.status == Status.PENDING and "503" in inbound.error
    assert line_api.delivered == []
    sweeper.sweep_stuck_messages(now=timezone.now() + timedelta(minutes=10))
    assert Message.objects.get(pk=inbound.pk).status == Status.REPLIED
    assert line_api.delivered_texts()[0].startswith("I see an image")


# --- Voice messages ----------------------------------------------------------------------


@pytest.fixture
def whisper(channel):
    with FakeTranscription(models=("whisper-1",)) as fake:
        fake.transcriber = lambda audio, fields: "Mail me at amy@example.com about lunch"
        transcriber = ModelBackend.objects.create(name="Whisper", kind=BackendKind.TRANSCRIPTION,
                                                  base_url=fake.url + "/v1", model="whisper-1", timeout=5)
        set_channel(channel, transcriber=transcriber)
        yield fake, transcriber


def test_a_voice_message_is_transcribed_answered_and_its_audio_not_kept(webhook, line_api, ollama_server, whisper):
    webhook.post(voice(line_api))
    fake, _ = whisper
    assert fake.forms[-1]["file"][2] == m4a_bytes()
    inbound = Message.objects.get(direction=Direction.IN)
    assert (inbound.message_type, inbound.text, inbound.status) == (
        "audio", "Mail me at amy@example.com about lunch", Status.REPLIED)
    assert line_api.delivered_texts() == ["echo: Mail me at amy@example.com about lunch"]
    assert MessageMedia.objects.count() == 0 and files_in_storage() == []


def test_a_kept_voice_message_stays_until_erasure(webhook, line_api, whisper, channel):
    set_channel(channel, keep_audio=True)
    webhook.post(voice(line_api))
    media = MessageMedia.objects.get()
    assert media.kind == MediaKind.AUDIO and files_in_storage() == [media.file.name]


def test_a_transcript_is_masked_when_the_channel_masks_before_storing(webhook, line_api, whisper, channel,
                                                                      ollama_server):
    set_channel(channel, mask_before_storing=True)
    webhook.post(voice(line_api))
    text = Message.objects.get(direction=Direction.IN).text
    assert "amy@example.com" not in text and "lunch" in text
    assert "amy@example.com" not in str(ollama_server.last("chat").json)


def test_without_a_transcriber_a_voice_message_gets_a_short_text(webhook, line_api, ollama_server):
    webhook.post(voice(line_api))
    assert line_api.delivered_texts() == [CANNOT_LISTEN]
    assert line_api.count("content") == 0 and ollama_server.count("chat") == 0


def test_a_local_only_chat_uses_only_a_local_transcriber(webhook, line_api, whisper, make_chat):
    fake, transcriber = whisper
    ModelBackend.objects.filter(pk=transcriber.pk).update(is_local=False)
    make_chat(ev.DEFAULT_USER_ID, source_type="user", local_only=True)
    webhook.post(voice(line_api))
    assert line_api.delivered_texts() == [CANNOT_LISTEN]
    assert fake.requests_for("transcriptions") == []


# --- Files gone with their messages, and a worker killed mid-download ---------------------


@pytest.mark.django_db(transaction=True)
def test_erasure_removes_the_photos_the_pipeline_stored(webhook, line_api, ollama_server):
    webhook.post(photo(line_api), photo(line_api))
    assert len(files_in_storage()) == 2
    erasure.erase_user(line_user_id=ev.DEFAULT_USER_ID, actor="shell:test")
    assert files_in_storage() == [] and MessageMedia.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_download_leads_to_one_answer_and_no_orphan_file(
        webhook, line_api, ollama_server, monkeypatch, settings):
    settings.LINEBOT = {**settings.LINEBOT, "CLAIM_LEASE": 0.5}
    monkeypatch.setattr("conversations.ingest.enqueue_after_commit", lambda *args: None)
    webhook.post(photo(line_api))
    monkeypatch.undo()
    message_id = Message.objects.get(direction=Direction.IN).pk
    line_api.hold_response("content", 10)  # the photo is on its way when the worker dies
    connections.close_all()
    worker = multiprocessing.get_context("fork").Process(target=_answer_in_child, args=(message_id,))
    worker.start()
    line_api.wait_for(lambda fake: fake.count("content"), timeout=20)
    os.kill(worker.pid, signal.SIGKILL)
    worker.join(timeout=5)
    line_api.hold_response("content", 0)
    time.sleep(0.6)  # the dead worker's claim runs out

    sweeper.sweep_stuck_messages(now=timezone.now() + timedelta(seconds=1))

    assert len(line_api.delivered) == 1
    assert line_api.delivered_texts()[0].startswith("I see an image")
    message = Message.objects.get(pk=message_id)
    assert (message.status, message.attempts) == (Status.REPLIED, 2)
    assert Message.objects.filter(reply_to_id=message_id).count() == 1
    assert sweep_orphans(grace_seconds=0) == 0
    assert files_in_storage() == [MessageMedia.objects.get(message_id=message_id).file.name]


@pytest.mark.django_db(transaction=True)
def test_a_rerun_reuses_the_stored_photo(webhook, line_api, ollama_server):
    webhook.post(photo(line_api))
    inbound = Message.objects.get(direction=Direction.IN)
    Message.objects.filter(direction=Direction.OUT).delete()
    Message.objects.filter(pk=inbound.pk).update(status=Status.PENDING)
    Chat.objects.update(answering_claim="")
    answering.answer_message(message_id=inbound.pk)
    assert line_api.count("content") == 1 and MessageMedia.objects.count() == 1
    assert len(files_in_storage()) == 1


# --- The channel's settings in the API and the admin ---------------------------------------


def test_the_api_sets_the_media_settings_and_takes_only_a_speech_to_text_backend(api, channel, backend, whisper):
    _, transcriber = whisper
    url = f"/api/v1/channels/{channel.pk}/"
    wrong = api.patch(url, {"transcriber": backend.pk}, format="json")
    assert wrong.status_code == 400 and list(wrong.json()) == ["transcriber"]
    response = api.patch(url, {"transcriber": transcriber.pk, "keep_audio": True, "images_to_cloud": True},
                         format="json")
    assert response.status_code == 200, response.json()
    assert {key: response.json()[key] for key in ("transcriber", "keep_audio", "images_to_cloud")} == {
        "transcriber": transcriber.pk, "keep_audio": True, "images_to_cloud": True}
    channel.refresh_from_db()
    assert (channel.transcriber, channel.keep_audio, channel.images_to_cloud) == (transcriber, True, True)


def test_the_admin_form_offers_only_speech_to_text_backends(admin_client, channel, backend, whisper):
    _, transcriber = whisper
    page = admin_client.get(f"/admin/conversations/linechannel/{channel.pk}/change/").content.decode()
    assert f'<option value="{transcriber.pk}"' in page
    assert f'<option value="{backend.pk}"' not in page.split('name="transcriber"')[1].split("</select>")[0]
    assert 'name="images_to_cloud"' in page and 'name="keep_audio"' in page


def test_the_thread_shows_a_thumbnail_through_the_audited_view_and_marks_transcripts(
        webhook, line_api, whisper, admin_client):
    webhook.post(photo(line_api), voice(line_api))
    photo_message = Message.objects.get(message_type="image")
    page = admin_client.get(f"/admin/conversations/chat/{photo_message.chat_id}/thread/").content.decode()
    thumbnail = f"/admin/conversations/message/{photo_message.pk}/media/thumbnail/"
    assert f'src="{thumbnail}"' in page
    assert "Mail me at amy@example.com about lunch" in page and ">spoken<" in page
    response = admin_client.get(thumbnail)
    assert response.status_code == 200 and "no-store" in response["Cache-Control"]
    assert AuditEvent.objects.filter(target_type="message_media", target_id=str(photo_message.pk)).exists()


def test_the_dashboard_counts_photos_and_voice_messages(webhook, line_api, whisper, admin_client, api):
    webhook.post(photo(line_api))
    webhook.post(voice(line_api))
    webhook.post(ev.text_message_event("plain text"))
    figures = api.get("/api/v1/stats/").json()["media_messages"]
    assert figures == {"photos": 1, "voice": 1, "transcribed": 1}
    page = admin_client.get("/admin/").content.decode()
    assert "Photos and voice messages" in page and "1 transcribed" in page


# --- The playground ----------------------------------------------------------------------


PLAYGROUND = "/admin/models_registry/samplingpreset/playground/"


def test_the_playground_sends_an_uploaded_image_cleaned_to_a_backend_that_reads_images(
        admin_client, preset, ollama_server):
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile("cat.jpg", image_bytes("JPEG", exif=True), content_type="image/jpeg")
    response = admin_client.post(PLAYGROUND, {"preset": preset.pk, "conversation": "What is this?", "image": upload})
    assert "I see an image 64x48 JPEG. echo: What is this?" in response.content.decode()
    [sent] = sent_images(ollama_server.last("chat"))
    assert has_no_exif(sent)


def test_the_playground_refuses_what_is_not_an_image_and_a_preset_that_reads_none(
        admin_client, preset, backend, ollama_server):
    from django.core.files.uploadedfile import SimpleUploadedFile

    junk = SimpleUploadedFile("cat.jpg", b"not a picture", content_type="image/jpeg")
    page = admin_client.post(PLAYGROUND, {"preset": preset.pk, "conversation": "hi", "image": junk}).content.decode()
    assert "not an image in a format we accept" in page
    ModelBackend.objects.filter(pk=backend.pk).update(model="llama3.2:3b")
    upload = SimpleUploadedFile("cat.png", image_bytes("PNG"), content_type="image/png")
    page = admin_client.post(PLAYGROUND, {"preset": preset.pk, "conversation": "hi", "image": upload}).content.decode()
    assert "reads images" in page and ollama_server.count("chat") == 0

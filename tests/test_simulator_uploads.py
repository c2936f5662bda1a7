"""Photos and voice messages uploaded in the simulator: checked, kept by the emulator as LINE keeps
what users send, fetched by the worker through the real pipeline, shown in the thread, and gone
with the simulated chat."""
import base64
import io
import json
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone
from PIL import Image

from core.models import AuditEvent
from conversations import bootstrap, retention
from conversations.media.files import sweep_orphans
from conversations.media.models import MediaKind, MessageMedia
from conversations.models import Direction, LineChannel, Message, Status
from conversations.simulator import emulator, events, services
from conversations.simulator.models import EmulatorCall, SimulatedEvent
from conversations.simulator.selectors import timeline
from models_registry.models import BackendKind, ModelBackend
from tests.fakes import webhooks as ev
from tests.fakes.line_spec import spec_dir
from tests.fakes.media import CAMERA, image_bytes, m4a_bytes
from tests.test_media_pipeline import files_in_storage
from tests.fakes.ollama import FakeOllama
from tests.fakes.transcription import FakeTranscription
from tests.simulation import SANDBOX_TOKEN, sandbox, simulation  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db


@pytest.fixture
def ollama_server():
    # gemma3 reads images (Ollama's "vision" capability): it says what it saw before its echo.
    with FakeOllama(models=("gemma3:4b",), vision_models=("gemma3:4b",)) as fake:
        yield fake


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.LINEBOT_MEDIA_ROOT = tmp_path / "media"
    return settings.LINEBOT_MEDIA_ROOT


@pytest.fixture
def operator(simulation, client):
    client.force_login(simulation.actor)
    return client


def upload(client, simulated, data: bytes, *, name: str, message_type: str = "image",
           capture=None):
    url = reverse("admin:conversations_simulatedchat_send", args=[simulated.pk])
    fields = {"member": simulated.members.first().pk, "type": message_type,
              "content": SimpleUploadedFile(name, data, content_type="application/octet-stream")}
    if capture is None:
        return client.post(url, fields)
    with capture(execute=True):
        return client.post(url, fields)


def test_an_uploaded_photo_reaches_the_model_through_the_real_pipeline_and_its_answer_shows(
        simulation, operator, ollama_server, line_api, django_capture_on_commit_callbacks):
    simulated = simulation.without_notice().chat("user")
    photo = image_bytes("JPEG", exif=True)
    response = upload(operator, simulated, photo, name="cat.jpg", capture=django_capture_on_commit_callbacks)
    assert response.status_code == 200 and response.json()["webhook"]["stored"] == 1
    event = SimulatedEvent.objects.get(message_type="image")
    assert event.content_type == "image/jpeg" and event.content.name.startswith("simulator/")
    # The worker fetched it from the emulator's content endpoint, as from LINE's data host.
    call = EmulatorCall.objects.get(endpoint="content")
    assert (call.method, call.status, call.path, call.simulated_chat_id) == (
        "GET", 200, f"/v2/bot/message/{event.line_message_id}/content", simulated.pk)
    assert line_api.requests == [], "nothing reached LINE"
    # The model got the photo, cleaned of its EXIF by the pipeline.
    [sent] = [base64.b64decode(data) for message in ollama_server.last("chat").json["messages"]
              for data in message.get("images", [])]
    assert CAMERA.encode() not in sent and Image.open(io.BytesIO(sent)).size == (64, 48)
    inbound = Message.objects.get(direction=Direction.IN, message_type="image")
    answer = Message.objects.get(direction=Direction.OUT, reply_to=inbound)
    assert inbound.status == Status.REPLIED and answer.text == "I see an image 64x48 JPEG. echo: [photo]"
    # In the simulator's thread: the photo as a thumbnail through the audited staff view, then the answer.
    data = timeline(simulated_chat=simulated)
    [user] = [item for item in data["items"] if item["kind"] == "user"]
    thumbnail = reverse("admin:conversations_message_media", args=[inbound.pk, "thumbnail"])
    assert user["media"]["kind"] == "image" and user["media"]["thumbnail"] == thumbnail
    [bot] = [item for item in data["items"] if item["kind"] == "bot"]
    assert bot["bubbles"] == [{"type": "text", "text": answer.text}]
    shown = operator.get(thumbnail)
    assert shown.status_code == 200 and "no-store" in shown["Cache-Control"]
    assert Image.open(io.BytesIO(shown.content)).format == "JPEG"
    assert AuditEvent.objects.filter(target_type="message_media", target_id=str(inbound.pk)).exists()
    # The upload is audited as any simulated event, with its size only.
    audited = AuditEvent.objects.filter(action="simulate", details__message_type="image").get()
    assert audited.details["uploaded_bytes"] == len(photo)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "GIF"])
def test_other_formats_a_line_user_sends_are_taken(simulation, fmt):
    upload = services.checked_upload(message_type="image", data=image_bytes(fmt))
    assert upload.content_type == f"image/{fmt.lower()}"


@pytest.mark.skipif(spec_dir() is None, reason="LINE's OpenAPI files (../shared/specs/line-openapi) are not beside "
                    "the project; CI has them")
def test_the_events_of_uploads_are_shaped_as_line_sends_them():
    source = events.source(source_type="user", chat_id=events.new_line_id("user"), user_id=None)
    built = [events.message_event(source=source, content=events.media_content("image")),
             events.message_event(source=source, content=events.media_content("audio", duration_ms=2500))]
    assert ev.validate_webhook_payload(json.loads(events.body(destination=ev.DEFAULT_BOT_USER_ID, events=built)))
    image, audio = (event["message"] for event in built)
    assert image["contentProvider"] == {"type": "line"} and "quoteToken" in image
    assert audio["contentProvider"] == {"type": "line"} and audio["duration"] == 2500


def test_an_uploaded_voice_message_is_transcribed_and_answered(simulation, operator, ollama_server, sandbox,
                                                               django_capture_on_commit_callbacks):
    with FakeTranscription(models=("whisper-1",)) as whisper:
        whisper.transcriber = lambda audio, fields: "What time is it?"
        transcriber = ModelBackend.objects.create(name="Whisper", kind=BackendKind.TRANSCRIPTION,
                                                  base_url=whisper.url + "/v1", model="whisper-1", timeout=5)
        sandbox.transcriber = transcriber
        sandbox.save()
        simulated = simulation.without_notice().chat("user")
        voice = m4a_bytes(duration_ms=2500)
        response = upload(operator, simulated, voice, name="memo.m4a", message_type="audio",
                          capture=django_capture_on_commit_callbacks)
        assert response.status_code == 200, response.content
        assert whisper.forms[-1]["file"][2] == voice, "the transcriber heard what was uploaded"
    inbound = Message.objects.get(direction=Direction.IN, message_type="audio")
    assert (inbound.text, inbound.status) == ("What time is it?", Status.REPLIED)
    assert Message.objects.get(reply_to=inbound).text == "echo: What time is it?"
    [user] = [item for item in timeline(simulated_chat=simulated)["items"] if item["kind"] == "user"]
    assert user["text"] == "[Voice message] What time is it?" and user["media"] is None  # the audio is not kept


def test_the_event_of_a_voice_message_says_how_long_it_plays(simulation, monkeypatch):
    sent = []
    monkeypatch.setattr(services, "deliver", lambda *, channel, events_: sent.extend(events_) or services.Delivery(
        status=200, body={}))
    simulated = simulation.without_notice().chat("user")
    services.send_message(simulated_chat=simulated, member=simulated.members.first(), message_type="audio",
                          upload=services.checked_upload(message_type="audio", data=m4a_bytes(duration_ms=3210)),
                          actor="test")
    assert sent[-1]["message"]["duration"] == 3210 and sent[-1]["message"]["contentProvider"] == {"type": "line"}


@pytest.mark.parametrize(("name", "data", "message_type", "error"), [
    ("notes.txt", b"just some text, not a photo", "image", "not an image in a format we accept"),
    ("fake.jpg", b"\xff\xd8\xff\xe0" + b"\0" * 64, "image", "That is not a photo LINE would send"),
    ("huge.png", None, "image", "larger than"),
    ("song.mp3", b"ID3\x04\0\0\0\0\0\0" + b"\0" * 64, "audio", "LINE sends voice messages as M4A"),
    ("memo.m4a", m4a_bytes(), "audio", "says nothing of how long it plays"),
    ("cat.jpg", image_bytes("JPEG"), "video", "Only a photo or a voice message can be uploaded"),
])
def test_a_wrong_upload_gets_a_clear_error_and_nothing_is_stored(simulation, operator, settings, name, data,
                                                                  message_type, error,
                                                                  django_capture_on_commit_callbacks):
    settings.LINEBOT_MEDIA = {**settings.LINEBOT_MEDIA, "MAX_IMAGE_BYTES": 1000}
    simulated = simulation.without_notice().chat("user")
    data = image_bytes("PNG", size=(400, 400)) if data is None else data
    before = (SimulatedEvent.objects.count(), Message.objects.count())
    response = upload(operator, simulated, data, name=name, message_type=message_type,
                      capture=django_capture_on_commit_callbacks)
    assert response.status_code == 400 and error in response.json()["error"]
    assert (SimulatedEvent.objects.count(), Message.objects.count()) == before
    assert files_in_storage() == [] and not EmulatorCall.objects.filter(endpoint="content").exists()


def test_a_viewer_cannot_upload(simulation, client, django_capture_on_commit_callbacks):
    bootstrap._groups()
    viewer = User.objects.create(username="viewer", is_staff=True)
    viewer.groups.add(Group.objects.get(name="Viewers"))
    client.force_login(viewer)
    simulated = simulation.without_notice().chat("user")
    before = SimulatedEvent.objects.count()
    response = upload(client, simulated, image_bytes("JPEG"), name="cat.jpg",
                      capture=django_capture_on_commit_callbacks)
    assert response.status_code == 403
    assert SimulatedEvent.objects.count() == before and files_in_storage() == []


def test_the_upload_is_a_post_with_the_csrf_token(simulation, sandbox):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(simulation.actor)
    simulated = simulation.without_notice().chat("user")
    url = reverse("admin:conversations_simulatedchat_send", args=[simulated.pk])
    assert strict.get(url).status_code == 405
    response = strict.post(url, {"member": simulated.members.first().pk, "type": "image",
                                 "content": SimpleUploadedFile("cat.jpg", image_bytes("JPEG"))})
    assert response.status_code == 403 and files_in_storage() == []


def content_call(simulated, message_id: str, *, token: str = SANDBOX_TOKEN):
    return emulator.handle(channel_id=simulated.channel_id, method="GET", path=f"/v2/bot/message/{message_id}/content",
                           headers={"Authorization": f"Bearer {token}"}, body=b"")


def test_the_emulator_serves_content_as_line_does(simulation, monkeypatch, django_capture_on_commit_callbacks):
    monkeypatch.setattr(services, "deliver", lambda *, channel, events_: services.Delivery(status=200, body={}))
    simulated = simulation.without_notice().chat("user")
    photo = image_bytes("PNG")
    services.send_message(simulated_chat=simulated, member=simulated.members.first(), message_type="image",
                          upload=services.checked_upload(message_type="image", data=photo), actor="test")
    event = SimulatedEvent.objects.get(message_type="image")
    served = content_call(simulated, event.line_message_id)
    assert (served.status, served.content, served.headers["Content-Type"]) == (200, photo, "image/png")
    assert content_call(simulated, "123456789012345678").status == 404, "an unknown id: LINE's 404"
    assert content_call(simulated, event.line_message_id, token="wrong").status == 401
    # LINE keeps content for a while only: past it, 404; the daily purge then deletes the file.
    SimulatedEvent.objects.filter(pk=event.pk).update(sent_at=timezone.now() - emulator.CONTENT_LIFETIME
                                                      - timedelta(minutes=1))
    assert content_call(simulated, event.line_message_id).status == 404
    assert files_in_storage() == [event.content.name]
    monkeypatch.setattr(retention, "checkpoint_wal", lambda: None)  # SQLite's, inside the test's transaction
    with django_capture_on_commit_callbacks(execute=True):
        retention.purge_expired(actor="test")
    assert files_in_storage() == []
    assert SimulatedEvent.objects.get(pk=event.pk).content.name == ""


def test_the_orphan_sweep_keeps_an_upload_its_event_holds(simulation, monkeypatch):
    monkeypatch.setattr(services, "deliver", lambda *, channel, events_: services.Delivery(status=200, body={}))
    simulated = simulation.without_notice().chat("user")
    services.send_message(simulated_chat=simulated, member=simulated.members.first(), message_type="image",
                          upload=services.checked_upload(message_type="image", data=image_bytes("JPEG")),
                          actor="test")
    assert sweep_orphans(grace_seconds=0) == 0 and len(files_in_storage()) == 1
    # Its channel deleted (the rows go by cascade): the file is an orphan, and the sweep takes it.
    LineChannel.objects.filter(pk=simulated.channel_id).delete()
    assert sweep_orphans(grace_seconds=0) == 1 and files_in_storage() == []


def test_deleting_the_simulated_chat_removes_the_upload_and_the_stored_photo(
        simulation, operator, ollama_server, django_capture_on_commit_callbacks, monkeypatch):
    monkeypatch.setattr("conversations.chats.checkpoint_wal", lambda: None)  # SQLite's, inside the test's transaction
    simulated = simulation.without_notice().chat("user")
    upload(operator, simulated, image_bytes("JPEG"), name="cat.jpg", capture=django_capture_on_commit_callbacks)
    event = SimulatedEvent.objects.get(message_type="image")
    media = MessageMedia.objects.get(kind=MediaKind.IMAGE)
    assert files_in_storage() == sorted([event.content.name, media.file.name])
    with django_capture_on_commit_callbacks(execute=True):
        response = operator.post(reverse("admin:conversations_simulatedchat_delete", args=[simulated.pk]))
    assert response.status_code == 302
    assert files_in_storage() == [] and not SimulatedEvent.objects.exists() and not MessageMedia.objects.exists()
    assert content_call(simulated, event.line_message_id).status == 404


def test_a_photo_the_bot_does_not_store_is_not_kept_by_the_emulator_either(simulation, ollama_server):
    simulated = simulation.without_notice().chat("group")  # group memory "addressed": no mention, not stored
    delivery = simulation.say(simulated, message_type="image",
                              upload=services.checked_upload(message_type="image", data=image_bytes("JPEG")))
    assert delivery.body["ignored"] == 1
    event = SimulatedEvent.objects.get(message_type="image")
    assert (event.unstored_reason, event.content.name) == ("not addressed", "")
    assert files_in_storage() == [] and ollama_server.chat_requests == []
    assert content_call(simulated, event.line_message_id).status == 404

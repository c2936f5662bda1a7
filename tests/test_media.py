"""Photos and voice messages: downloading them (LINE's data host, external links), making
images safe (EXIF and GPS gone, bombs refused), and the one audited way staff see them."""
import io
import socket

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse
from PIL import Image

from conversations.line.content import (
    ContentError, ContentNotFound, ContentRefused, ContentTooLarge, ContentUnavailable, ExternalPolicy,
    fetch_external_content, fetch_line_content,
)
from conversations.media.audio import AudioRejected, audio_content_type
from conversations.media.files import store_media
from core.images import ImageRejected, sanitize_image
from conversations.media.models import MediaKind
from conversations.media.storage import media_storage
from core.models import AuditAction, AuditEvent
from tests.conftest import ACCESS_TOKEN
from tests.fakes.line_api import FakeLineAPI
from tests.fakes.media import CAMERA, animated_gif, image_bytes, m4a_bytes, png_bomb

MESSAGE_ID = "468789577898262530"


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.LINEBOT_MEDIA_ROOT = tmp_path / "media"
    return settings.LINEBOT_MEDIA_ROOT


@pytest.fixture
def data_host(settings):
    with FakeLineAPI(access_token=ACCESS_TOKEN) as fake:
        settings.LINE_DATA_API_HOST = fake.url
        yield fake


def fetch(message_id=MESSAGE_ID, max_bytes=1 << 20, token=ACCESS_TOKEN):
    return fetch_line_content(access_token=token, message_id=message_id, max_bytes=max_bytes)


# --- LINE's content endpoint ---------------------------------------------------------


def test_content_comes_from_the_data_host_with_the_channel_token(data_host):
    photo = image_bytes("JPEG", exif=True)
    data_host.add_content(MESSAGE_ID, photo, "image/jpeg")
    content = fetch()
    assert (content.data, content.content_type) == (photo, "image/jpeg")
    request = data_host.requests[-1]
    assert request.path == f"/v2/bot/message/{MESSAGE_ID}/content"
    assert request.headers["authorization"] == f"Bearer {ACCESS_TOKEN}"


def test_the_fake_serves_content_as_line_bot_sdk_expects(data_host):
    """The fake's endpoint, read by the SDK's own blob client: the same bytes."""
    from linebot.v3.messaging import ApiClient, Configuration, MessagingApiBlob

    audio = m4a_bytes()
    data_host.add_content(MESSAGE_ID, audio, "audio/x-m4a")
    blob = MessagingApiBlob(ApiClient(Configuration(host=data_host.url, access_token=ACCESS_TOKEN)))
    assert bytes(blob.get_message_content(MESSAGE_ID)) == audio


def test_unknown_and_expired_content_is_lines_404(data_host):
    with pytest.raises(ContentNotFound) as unknown:
        fetch("111")
    data_host.add_content(MESSAGE_ID, b"x", "image/jpeg")
    data_host.expire_content(MESSAGE_ID)
    with pytest.raises(ContentNotFound) as expired:
        fetch()
    assert unknown.value.status == expired.value.status == 404
    assert not expired.value.transient


@pytest.mark.parametrize("status", [429, 500, 503])
def test_rate_limits_and_server_errors_are_transient(data_host, status):
    data_host.add_content(MESSAGE_ID, b"x", "image/jpeg")
    data_host.fail_next("content", status)
    with pytest.raises(ContentUnavailable) as failure:
        fetch()
    assert failure.value.transient and failure.value.status == status
    assert fetch().data == b"x"  # the next try gets it


def test_a_wrong_token_is_an_error_not_worth_retrying(data_host):
    data_host.add_content(MESSAGE_ID, b"x", "image/jpeg")
    with pytest.raises(ContentError) as failure:
        fetch(token="not-the-token")
    assert failure.value.status == 401 and not failure.value.transient
    assert "not-the-token" not in str(failure.value)


def test_a_file_over_the_limit_is_refused_from_its_length(data_host):
    data_host.add_content(MESSAGE_ID, b"\0" * 5000, "image/jpeg")
    with pytest.raises(ContentTooLarge, match="5000 bytes"):
        fetch(max_bytes=4999)
    assert fetch(max_bytes=5000).data == b"\0" * 5000


def test_a_streamed_file_is_cut_off_at_the_limit(data_host):
    """Sent chunked (no Content-Length): the download stops once past the limit."""
    data_host.add_content(MESSAGE_ID, b"\0" * (400 * 1024), "audio/x-m4a")
    with pytest.raises(ContentTooLarge):
        fetch(max_bytes=100 * 1024)
    assert len(fetch(max_bytes=400 * 1024).data) == 400 * 1024


def test_a_message_id_must_be_a_number(data_host):
    with pytest.raises(ContentError, match="number"):
        fetch("../../v2/bot/info")
    assert data_host.requests == []


# --- External images (contentProvider.type = external) -------------------------------


@pytest.mark.parametrize("url, reason", [
    ("http://example.com/a.jpg", "https"),
    ("https://127.0.0.1/a.jpg", "private or local"),
    ("https://[::1]/a.jpg", "private or local"),
    ("https://10.1.2.3/a.jpg", "private or local"),
    ("https://169.254.169.254/latest/meta-data/", "private or local"),
    ("https://localhost/a.jpg", "private or local"),
    ("https://user:pw@example.com/a.jpg", "user name"),
    ("file:///etc/passwd", "https"),
])
def test_external_urls_to_private_addresses_or_not_https_are_refused(url, reason):
    with pytest.raises(ContentRefused, match=reason):
        fetch_external_content(url=url, max_bytes=1000)


def test_a_name_with_any_private_address_is_refused(monkeypatch):
    """A name that resolves to a public and a private address is refused as a whole."""
    def resolve(host, port, *args, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)) for address in ("93.184.215.14", "10.0.0.5")]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    with pytest.raises(ContentRefused, match="private"):
        fetch_external_content(url="https://images.example.com/a.jpg", max_bytes=1000)


LOOPBACK_FOR_TESTS = ExternalPolicy(schemes=("http",), allow_address=lambda address: address.is_loopback)


def test_an_external_image_is_fetched_from_the_checked_address_with_its_host_name():
    photo = image_bytes("PNG")
    with FakeLineAPI() as server:
        server.add_content(MESSAGE_ID, photo, "image/png")
        port = server.url.rsplit(":", 1)[1]
        content = fetch_external_content(url=f"http://localhost:{port}/v2/bot/message/{MESSAGE_ID}/content",
                                         max_bytes=1 << 20, policy=LOOPBACK_FOR_TESTS)
        assert content.data == photo
        assert server.requests[-1].headers["host"] == f"localhost:{port}"
        assert "authorization" not in server.requests[-1].headers  # no LINE token to another server


def test_an_external_redirect_is_never_followed():
    with FakeLineAPI() as server, FakeLineAPI() as inner:
        inner.add_content(MESSAGE_ID, b"secret", "image/png")
        server.redirect_to(inner.url)
        with pytest.raises(ContentRefused, match="redirect"):
            fetch_external_content(url=f"{server.url}/v2/bot/message/{MESSAGE_ID}/content", max_bytes=1000,
                                   policy=LOOPBACK_FOR_TESTS)
        assert inner.requests == []


def test_an_external_image_over_the_limit_is_refused():
    with FakeLineAPI() as server:
        server.add_content(MESSAGE_ID, b"\0" * 300_000, "image/png")
        with pytest.raises(ContentTooLarge):
            fetch_external_content(url=f"{server.url}/v2/bot/message/{MESSAGE_ID}/content", max_bytes=100_000,
                                   policy=LOOPBACK_FOR_TESTS)


# --- Images made safe ----------------------------------------------------------------


def test_exif_and_gps_are_gone_after_sanitising():
    original = image_bytes("JPEG", exif=True)
    assert Image.open(io.BytesIO(original)).getexif().get_ifd(0x8825)  # the fixture has GPS
    clean = sanitize_image(original)
    image = Image.open(io.BytesIO(clean.data))
    assert clean.content_type == "image/jpeg" and image.format == "JPEG"
    assert dict(image.getexif()) == {}
    assert "exif" not in image.info and CAMERA.encode() not in clean.data
    assert (clean.width, clean.height) == (64, 48)


def test_the_orientation_is_applied_before_exif_goes():
    """EXIF orientation 6 (turn 90° clockwise): the stored pixels stand upright."""
    clean = sanitize_image(image_bytes("JPEG", size=(64, 48), orientation=6))
    image = Image.open(io.BytesIO(clean.data)).convert("RGB")
    assert (clean.width, clean.height) == (48, 64)
    # The blue marker was top-left; turned clockwise it is top-right.
    red, green, blue = image.getpixel((47 - 3, 3))
    assert blue > 200 and red < 60


@pytest.mark.parametrize("data, content_type", [
    (image_bytes("PNG"), "image/jpeg"),
    (image_bytes("PNG", alpha=True), "image/png"),
    (image_bytes("WEBP"), "image/jpeg"),
    (image_bytes("GIF"), "image/jpeg"),
    (animated_gif(), "image/jpeg"),
])
def test_each_format_users_send_is_stored_as_jpeg_or_png(data, content_type):
    clean = sanitize_image(data)
    assert clean.content_type == content_type
    assert Image.open(io.BytesIO(clean.data)).format == content_type.split("/")[1].upper()


@pytest.mark.parametrize("data, reason", [
    (b"", "empty"),
    (b"%PDF-1.7\n1 0 obj<<>>endobj", "not an image"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "not an image"),
    (m4a_bytes(), "not an image"),
    (image_bytes("JPEG")[:200], "could not be"),
    (image_bytes("BMP"), "not an image"),  # decodable, but not a format LINE users send
])
def test_what_is_not_an_image_is_refused_with_a_reason(data, reason):
    with pytest.raises(ImageRejected, match=reason):
        sanitize_image(data)


@pytest.mark.parametrize("side, reason", [
    (7000, "7000×7000 pixels, more than the limit of 40000000"),  # over our limit, under Pillow's
    (50_000, "more pixels than the limit of 40000000"),  # over Pillow's own bomb limit too
])
def test_a_decompression_bomb_is_refused_before_decoding(side, reason):
    bomb = png_bomb(side, side)
    assert len(bomb) < 2000
    with pytest.raises(ImageRejected, match=reason):
        sanitize_image(bomb)


def test_big_images_are_scaled_to_the_longest_side(settings):
    clean = sanitize_image(image_bytes("JPEG", size=(1000, 500)), max_side=200)
    assert (clean.width, clean.height) == (200, 100)


def test_voice_messages_must_be_m4a():
    assert audio_content_type(m4a_bytes()) == "audio/mp4"
    with pytest.raises(AudioRejected):
        audio_content_type(b"ID3\x04\x00" + b"\0" * 100)  # an MP3
    with pytest.raises(AudioRejected):
        audio_content_type(image_bytes("JPEG"))


# --- Storing -------------------------------------------------------------------------


def test_a_stored_photo_is_the_clean_one_with_its_hash(make_chat, make_message, media_root):
    import hashlib

    message = make_message(make_chat("U" + "1" * 32, source_type="user"), "", message_type="image")
    media = store_media(message=message, kind=MediaKind.IMAGE, data=image_bytes("JPEG", exif=True))
    stored = (media_root / media.file.name).read_bytes()
    assert hashlib.sha256(stored).hexdigest() == media.sha256 and len(stored) == media.size
    assert CAMERA.encode() not in stored
    assert (media_root / media.file.name).stat().st_mode & 0o777 == 0o600
    assert "U1111" not in media.file.name  # a random name, nothing of whose file it is


def test_an_image_set_is_several_messages_sharing_its_id(make_chat, make_message):
    chat = make_chat("C" + "2" * 32)
    stored = [store_media(message=make_message(chat, "", message_type="image"), kind=MediaKind.IMAGE,
                          data=image_bytes("PNG"), image_set_id="set-1", image_set_index=index, image_set_total=3)
              for index in (1, 2, 3)]
    assert [(m.image_set_id, m.image_set_index, m.image_set_total) for m in stored] == [
        ("set-1", 1, 3), ("set-1", 2, 3), ("set-1", 3, 3)]
    assert len({m.message_id for m in stored}) == 3


def test_a_rejected_file_stores_nothing(make_chat, make_message, media_root):
    message = make_message(make_chat("U" + "3" * 32, source_type="user"), "", message_type="image")
    with pytest.raises(ImageRejected):
        store_media(message=message, kind=MediaKind.IMAGE, data=b"GIF89a not really")
    assert not media_root.exists() or not any(p.is_file() for p in media_root.rglob("*"))


def test_media_has_no_public_url():
    with pytest.raises(ValueError, match="no public URL"):
        media_storage().url("2026/01/x.jpg")


# --- The staff view --------------------------------------------------------------------


@pytest.fixture
def photo(make_chat, make_message):
    message = make_message(make_chat("U" + "4" * 32, source_type="user"), "", message_type="image")
    return store_media(message=message, kind=MediaKind.IMAGE, data=image_bytes("JPEG", size=(800, 600)))


def media_url(photo, variant="file"):
    return reverse("admin:conversations_message_media", args=[photo.message_id, variant])


def test_anonymous_and_staff_without_permission_are_refused(client, photo):
    anonymous = client.get(media_url(photo))
    assert anonymous.status_code == 302 and "/login/" in anonymous["Location"]
    User.objects.create_user("clerk", password="clerk-test-password", is_staff=True)
    client.login(username="clerk", password="clerk-test-password")
    assert client.get(media_url(photo)).status_code == 403
    assert not AuditEvent.objects.filter(action=AuditAction.VIEW_CONVERSATION).exists()


def test_staff_with_permission_get_the_file_privately_and_audited(client, photo):
    viewer = User.objects.create_user("viewer", password="viewer-test-password", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_message"))
    client.login(username="viewer", password="viewer-test-password")
    response = client.get(media_url(photo))
    assert response.status_code == 200
    assert response["Content-Type"] == "image/jpeg"
    # The admin adds its own never-cache words; private and no-store are what matter.
    assert {"private", "no-store"} <= set(response["Cache-Control"].replace(" ", "").split(","))
    assert response["X-Content-Type-Options"] == "nosniff"
    assert b"".join(response.streaming_content) == photo.file.storage.open(photo.file.name).read()
    thumb = client.get(media_url(photo, "thumbnail"))
    assert thumb.status_code == 200 and "no-store" in thumb["Cache-Control"]
    assert max(Image.open(io.BytesIO(thumb.content)).size) == 320
    events = AuditEvent.objects.filter(action=AuditAction.VIEW_CONVERSATION, target_type="message_media")
    assert [(e.actor_username, e.target_id, e.details["variant"]) for e in events.order_by("id")] == [
        ("viewer", str(photo.message_id), "file"), ("viewer", str(photo.message_id), "thumbnail")]
    assert client.get(media_url(photo, "original")).status_code == 404

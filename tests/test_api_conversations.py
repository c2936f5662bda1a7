"""/api/v1/channels/, chats/, messages/ and audit-events/: the admin's rules and audit trail."""
from datetime import timedelta
from datetime import timezone as dt_timezone
from urllib.parse import parse_qs, urlparse

import pytest
from django.utils import timezone

from core.models import AuditAction, AuditEvent
from conversations.models import Chat, LineChannel, Message
from conversations.redaction import REDACTED_TEXT
from models_registry.models import ModelBackend, SamplingPreset
from tests.conftest import ACCESS_TOKEN, CHANNEL_SECRET
from tests.test_api import api, api_test_settings, nobody_api, reader, reader_api, superuser  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db


@pytest.fixture
def cloud_preset(db) -> SamplingPreset:
    cloud = ModelBackend.objects.create(name="Replicate", kind="replicate", base_url="https://api.replicate.com",
                                        model="google/gemma-3-4b-it", api_key="r8_x", is_local=False)
    return SamplingPreset.objects.create(name="Cloud", backend=cloud)


# --- Channels -------------------------------------------------------------------------


def test_channels_never_show_their_secrets(api, channel):
    for response in (api.get("/api/v1/channels/"), api.get(f"/api/v1/channels/{channel.pk}/")):
        assert response.status_code == 200
        assert CHANNEL_SECRET not in response.content.decode() and ACCESS_TOKEN not in response.content.decode()
    body = api.get(f"/api/v1/channels/{channel.pk}/").json()
    assert body["has_channel_secret"] is True and body["has_access_token"] is True
    assert "channel_secret" not in body and "access_token" not in body
    assert body["webhook_url"] == "https://testserver/line/webhook/test/"


def test_a_new_channel_needs_both_secrets(api):
    response = api.post("/api/v1/channels/", {"name": "New", "slug": "new"}, format="json")
    assert response.status_code == 400
    assert response.json() == {"channel_secret": ["Required for a new LINE channel."],
                               "access_token": ["Required for a new LINE channel."]}
    assert not LineChannel.objects.exists()


def test_create_a_channel(api, preset):
    response = api.post("/api/v1/channels/", {"name": "Shop", "slug": "shop", "channel_secret": "s3cret",
                                              "access_token": "t0ken", "default_preset": preset.pk}, format="json")
    assert response.status_code == 201, response.json()
    assert "s3cret" not in response.content.decode() and "t0ken" not in response.content.decode()
    channel = LineChannel.objects.get(slug="shop")
    assert (channel.channel_secret, channel.access_token, channel.default_preset) == ("s3cret", "t0ken", preset)
    event = AuditEvent.objects.get(action=AuditAction.CHANNEL_CHANGE)
    assert event.details["changes"]["channel_secret"] == "(changed)" and "s3cret" not in str(event.details)


def test_updating_a_channel_keeps_secrets_left_out(api, channel):
    response = api.patch(f"/api/v1/channels/{channel.pk}/", {"name": "Renamed", "access_token": ""}, format="json")
    assert response.status_code == 200
    channel.refresh_from_db()
    assert (channel.name, channel.channel_secret, channel.access_token) == ("Renamed", CHANNEL_SECRET, ACCESS_TOKEN)
    api.patch(f"/api/v1/channels/{channel.pk}/", {"access_token": "rotated"}, format="json")
    channel.refresh_from_db()
    assert channel.access_token == "rotated" and channel.channel_secret == CHANNEL_SECRET


@pytest.mark.parametrize("fields, field", [
    ({"slug": "not a slug"}, "slug"),
    ({"slug": "test"}, "slug"),
    ({"default_preset": 999999}, "default_preset"),
    ({"name": ""}, "name"),
])
def test_invalid_channels_are_refused_field_by_field(api, channel, fields, field):
    body = {"name": "Other", "slug": "other", "channel_secret": "s", "access_token": "t", **fields}
    response = api.post("/api/v1/channels/", body, format="json")
    assert response.status_code == 400
    assert list(response.json()) == [field]


def test_only_one_default_channel(api, channel):
    response = api.post("/api/v1/channels/", {"name": "Other", "slug": "other", "channel_secret": "s",
                                              "access_token": "t", "is_default": True}, format="json")
    assert response.status_code == 400 and list(response.json()) == ["is_default"]


def test_channels_cannot_be_deleted_over_the_api(api, channel):
    assert api.delete(f"/api/v1/channels/{channel.pk}/").status_code == 405
    assert api.get("/api/v1/channels/999999/").status_code == 404


def test_channels_need_permissions(reader_api, nobody_api, channel):
    assert nobody_api.get("/api/v1/channels/").status_code == 403
    assert reader_api.get("/api/v1/channels/").status_code == 200
    assert reader_api.patch(f"/api/v1/channels/{channel.pk}/", {"name": "x"}, format="json").status_code == 403


# --- Chats ----------------------------------------------------------------------------


def test_list_and_filter_chats(api, make_chat):
    group = make_chat("Cgroup", display_name="Book club")
    make_chat("Uuser", source_type="user", local_only=True)
    assert api.get("/api/v1/chats/").json()["count"] == 2
    assert [c["id"] for c in api.get("/api/v1/chats/", {"line_id": "Cgroup"}).json()["results"]] == [group.pk]
    assert [c["line_id"] for c in api.get("/api/v1/chats/", {"local_only": "true"}).json()["results"]] == ["Uuser"]
    assert [c["id"] for c in api.get("/api/v1/chats/", {"search": "book"}).json()["results"]] == [group.pk]
    assert api.get("/api/v1/chats/", {"source_type": "channel"}).status_code == 400


def test_assign_a_preset_and_settings_to_a_chat(api, make_chat, preset, superuser):
    chat = make_chat("Cgroup")
    response = api.patch(f"/api/v1/chats/{chat.pk}/", {"preset": preset.pk, "reply_mode": "always",
                                                       "line_id": "ignored"}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["preset"] == preset.pk and response.json()["line_id"] == "Cgroup"
    chat.refresh_from_db()
    assert chat.preset == preset and chat.reply_mode == "always" and chat.line_id == "Cgroup"
    event = AuditEvent.objects.get(action=AuditAction.CHAT_CHANGE)
    assert event.actor_username == superuser.username
    assert event.details["changes"] == {"preset": [None, preset.pk], "reply_mode": ["mention", "always"]}


def test_retention_and_legal_hold_changes_are_audited_as_such(api, make_chat):
    chat = make_chat("Cgroup")
    response = api.patch(f"/api/v1/chats/{chat.pk}/", {"retention_days": 30, "legal_hold": True}, format="json")
    assert response.status_code == 200
    chat.refresh_from_db()
    assert chat.retention_days == 30 and chat.legal_hold
    assert AuditEvent.objects.get(action=AuditAction.RETENTION_CHANGE).target_id == str(chat.pk)
    api.patch(f"/api/v1/chats/{chat.pk}/", {"retention_days": None}, format="json")
    chat.refresh_from_db()
    assert chat.retention_days is None


def test_a_local_only_chat_refuses_a_cloud_preset(api, make_chat, cloud_preset):
    chat = make_chat("Cprivate", local_only=True)
    response = api.patch(f"/api/v1/chats/{chat.pk}/", {"preset": cloud_preset.pk}, format="json")
    assert response.status_code == 400
    [message] = response.json()["preset"]
    assert "local-only" in message and "Cloud" in message
    chat.refresh_from_db()
    assert chat.preset is None and not AuditEvent.objects.exists()


def test_making_a_chat_local_only_is_refused_while_its_preset_is_cloud(api, make_chat, cloud_preset):
    chat = make_chat("Cgroup", preset=cloud_preset)
    response = api.patch(f"/api/v1/chats/{chat.pk}/", {"local_only": True}, format="json")
    assert response.status_code == 400 and list(response.json()) == ["local_only"]
    both = api.patch(f"/api/v1/chats/{chat.pk}/", {"local_only": True, "preset": None}, format="json")
    assert both.status_code == 200
    chat.refresh_from_db()
    assert chat.local_only and chat.preset is None


def test_a_local_preset_is_fine_for_a_local_only_chat(api, make_chat, preset):
    chat = make_chat("Cprivate", local_only=True)
    assert api.patch(f"/api/v1/chats/{chat.pk}/", {"preset": preset.pk}, format="json").status_code == 200


@pytest.mark.parametrize("fields, field", [
    ({"reply_mode": "sometimes"}, "reply_mode"),
    ({"retention_days": -1}, "retention_days"),
    ({"preset": 999999}, "preset"),
    ({"legal_hold": "perhaps"}, "legal_hold"),
])
def test_invalid_chat_changes_are_refused_field_by_field(api, make_chat, fields, field):
    chat = make_chat("Cgroup")
    response = api.patch(f"/api/v1/chats/{chat.pk}/", fields, format="json")
    assert response.status_code == 400 and list(response.json()) == [field]


def test_chats_come_only_from_line(api, make_chat):
    chat = make_chat("Cgroup")
    assert api.post("/api/v1/chats/", {"line_id": "Cnew"}, format="json").status_code == 405
    assert api.put(f"/api/v1/chats/{chat.pk}/", {}, format="json").status_code == 405
    assert api.delete(f"/api/v1/chats/{chat.pk}/").status_code == 405
    assert api.patch("/api/v1/chats/999999/", {"legal_hold": True}, format="json").status_code == 404


def test_chats_need_permissions(reader_api, nobody_api, make_chat):
    chat = make_chat("Cgroup")
    assert nobody_api.get(f"/api/v1/chats/{chat.pk}/").status_code == 403
    assert reader_api.get(f"/api/v1/chats/{chat.pk}/").status_code == 200
    assert reader_api.patch(f"/api/v1/chats/{chat.pk}/", {"legal_hold": True}, format="json").status_code == 403


# --- Messages -------------------------------------------------------------------------


@pytest.fixture
def conversation(make_chat, make_message, backend):
    chat = make_chat("Cgroup")
    other = make_chat("Cother")
    question = make_message(chat, "hello bot", user="U1", days_ago=2, reply_token="secret-reply-token")
    answer = make_message(chat, "hello human", direction="out", reply_to=question, backend=backend, latency_ms=120,
                          days_ago=2)
    late = make_message(chat, "anyone?", user="U2", status="failed", days_ago=0.5)
    elsewhere = make_message(other, "other chat", user="U1")
    return chat, [question, answer, late, elsewhere]


def ids(response) -> list[int]:
    assert response.status_code == 200, response.json()
    return [m["id"] for m in response.json()["results"]]


def test_messages_newest_first_without_reply_token_or_hash(api, conversation):
    chat, (question, answer, late, elsewhere) = conversation
    response = api.get("/api/v1/messages/")
    assert ids(response) == [elsewhere.pk, late.pk, answer.pk, question.pk]
    first = response.json()["results"][-1]
    assert first["text"] == "hello bot" and first["chat"] == chat.pk and first["line_user_id"] == "U1"
    assert "reply_token" not in first and "original_hmac" not in first
    assert "secret-reply-token" not in response.content.decode()


def test_filter_messages(api, conversation):
    chat, (question, answer, late, elsewhere) = conversation
    assert ids(api.get("/api/v1/messages/", {"chat": chat.pk})) == [late.pk, answer.pk, question.pk]
    assert ids(api.get("/api/v1/messages/", {"user": "U1"})) == [elsewhere.pk, question.pk]
    assert ids(api.get("/api/v1/messages/", {"direction": "out"})) == [answer.pk]
    assert ids(api.get("/api/v1/messages/", {"status": "failed"})) == [late.pk]
    day_ago = (timezone.now() - timedelta(days=1)).isoformat()
    assert ids(api.get("/api/v1/messages/", {"chat": chat.pk, "since": day_ago})) == [late.pk]
    assert ids(api.get("/api/v1/messages/", {"until": day_ago})) == [answer.pk, question.pk]
    assert ids(api.get("/api/v1/messages/", {"chat": 999999})) == []


@pytest.mark.parametrize("params, field, message", [
    ({"since": "yesterday"}, "since", "Enter a valid date/time."),
    ({"until": "2024-13-01T00:00:00Z"}, "until", "Enter a valid date/time."),
    ({"direction": "sideways"}, "direction", "Select a valid choice. sideways is not one of the available choices."),
    ({"status": "lost"}, "status", "Select a valid choice. lost is not one of the available choices."),
    ({"chat": "abc"}, "chat", "Enter a whole number."),
    ({"chat": str(2**100)}, "chat", "Ensure this value is less than or equal to 9223372036854775807."),
    ({"since": "9999-12-31T23:00:00-05:00"}, "since", "Enter a date/time between the years 1 and 9999."),
])
def test_bad_message_filters_are_400_with_the_field(api, conversation, params, field, message):
    response = api.get("/api/v1/messages/", params)
    assert response.status_code == 400
    assert response.json() == {field: [message]}
    assert not AuditEvent.objects.exists()


def test_unusual_offsets_are_read_as_the_same_moment(api, conversation):
    chat, (question, answer, late, elsewhere) = conversation
    moment = late.event_at - timedelta(minutes=1)
    odd = moment.astimezone(dt_timezone(timedelta(hours=17, minutes=9))).isoformat()
    assert ids(api.get("/api/v1/messages/", {"chat": chat.pk, "since": odd})) == [late.pk]


def test_messages_page_by_cursor(api, make_chat, make_message):
    chat = make_chat("Cbusy")
    made = [make_message(chat, f"m{i}") for i in range(5)]
    seen, url, params = [], "/api/v1/messages/", {"chat": chat.pk, "page_size": 2}
    while url:
        page = api.get(url, params).json()
        seen += [m["id"] for m in page["results"]]
        assert len(page["results"]) <= 2 and "count" not in page
        url, params = page["next"], None
        if url:
            assert "cursor" in parse_qs(urlparse(url).query)
    assert seen == [m.pk for m in reversed(made)]
    assert api.get("/api/v1/messages/", {"cursor": "garbage"}).status_code == 404


def test_pages_deep_in_a_big_table_cost_the_same_queries(api, make_chat, django_assert_max_num_queries):
    chat = make_chat("Cbig")
    now = timezone.now()
    Message.objects.bulk_create(Message(chat=chat, direction="in", text=f"m{i}", event_at=now, status_changed_at=now)
                                for i in range(300))
    page = api.get("/api/v1/messages/", {"chat": chat.pk, "page_size": 10}).json()
    for _ in range(5):
        page = api.get(page["next"]).json()
    # Auth, page, audit event; no COUNT(*) and no OFFSET scan, however deep.
    with django_assert_max_num_queries(6) as queries:
        api.get(page["next"])
    sql = " ".join(q["sql"] for q in queries.captured_queries).upper()
    assert "COUNT(" not in sql and "OFFSET" not in sql


def test_listing_a_chats_messages_is_audited_once(api, conversation, superuser):
    chat, _ = conversation
    api.get("/api/v1/messages/", {"chat": chat.pk})
    [event] = AuditEvent.objects.filter(action=AuditAction.VIEW_CONVERSATION)
    assert (event.target_type, event.target_id, event.actor_username) == ("chat", str(chat.pk), superuser.username)
    assert event.details["count"] == 3 and event.details["filters"] == {"chat": str(chat.pk)}
    api.get("/api/v1/messages/", {"user": "U1"})
    assert AuditEvent.objects.filter(action=AuditAction.VIEW_CONVERSATION, target_type="messages").count() == 1


def test_reading_a_message_is_audited(api, conversation):
    chat, (question, *_) = conversation
    response = api.get(f"/api/v1/messages/{question.pk}/")
    assert response.status_code == 200 and response.json()["text"] == "hello bot"
    event = AuditEvent.objects.get(action=AuditAction.VIEW_CONVERSATION)
    assert (event.target_type, event.target_id, event.details["chat_id"]) == ("message", str(question.pk), chat.pk)


def test_a_missing_message_is_404_and_not_audited(api):
    assert api.get("/api/v1/messages/999999/").status_code == 404
    assert api.post("/api/v1/messages/999999/redact/", {"reason": "x"}, format="json").status_code == 404
    assert not AuditEvent.objects.exists()


def test_messages_are_read_only(api, conversation):
    _, (question, *_) = conversation
    assert api.post("/api/v1/messages/", {"text": "x"}, format="json").status_code == 405
    assert api.patch(f"/api/v1/messages/{question.pk}/", {"text": "x"}, format="json").status_code == 405
    assert api.delete(f"/api/v1/messages/{question.pk}/").status_code == 405


def test_redact_a_message(api, conversation, superuser):
    _, (question, *_) = conversation
    response = api.post(f"/api/v1/messages/{question.pk}/redact/", {"reason": "Phone number"}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert body["text"] == REDACTED_TEXT and body["redacted"] is True
    assert body["redaction_reason"] == "Phone number" and body["redacted_by"] == superuser.username
    assert "original_hmac" not in body
    event = AuditEvent.objects.get(action=AuditAction.REDACT)
    assert event.target_id == str(question.pk) and event.details["reason"] == "Phone number"


@pytest.mark.parametrize("body, message", [
    ({}, "This field is required."),
    ({"reason": ""}, "This field may not be blank."),
    ({"reason": "   "}, "This field may not be blank."),
    ({"reason": "x" * 501}, "Ensure this field has no more than 500 characters."),
])
def test_redacting_needs_a_reason(api, conversation, body, message):
    _, (question, *_) = conversation
    response = api.post(f"/api/v1/messages/{question.pk}/redact/", body, format="json")
    assert response.status_code == 400 and response.json() == {"reason": [message]}
    assert Message.objects.get(pk=question.pk).text == "hello bot"


def test_redact_several_messages(api, conversation):
    _, (question, answer, late, elsewhere) = conversation
    response = api.post("/api/v1/messages/redact/", {"ids": [question.pk, answer.pk, 999999], "reason": "Request"},
                        format="json")
    assert response.status_code == 200 and response.json() == {"redacted": 2}
    assert set(Message.objects.filter(redacted=True).values_list("id", flat=True)) == {question.pk, answer.pk}
    again = api.post("/api/v1/messages/redact/", {"ids": [question.pk], "reason": "Again"}, format="json")
    assert again.json() == {"redacted": 0}
    bad = api.post("/api/v1/messages/redact/", {"ids": [], "reason": ""}, format="json")
    assert bad.status_code == 400 and set(bad.json()) == {"ids", "reason"}


def test_redacting_needs_change_permission(reader_api, conversation, reader):
    _, (question, *_) = conversation
    assert reader_api.get(f"/api/v1/messages/{question.pk}/").status_code == 200
    assert reader_api.post(f"/api/v1/messages/{question.pk}/redact/", {"reason": "x"}).status_code == 403
    assert not Message.objects.filter(redacted=True).exists()


# --- Audit events ---------------------------------------------------------------------


def test_audit_events_are_listed_and_filtered(api, reader_api, conversation):
    chat, (question, *_) = conversation
    api.get(f"/api/v1/messages/{question.pk}/")
    api.post(f"/api/v1/messages/{question.pk}/redact/", {"reason": "why"}, format="json")
    listed = reader_api.get("/api/v1/audit-events/")
    assert listed.status_code == 200
    assert [e["action"] for e in listed.json()["results"]] == ["redact", "view_conversation"]
    redactions = reader_api.get("/api/v1/audit-events/", {"action": "redact"}).json()["results"]
    assert [e["target_id"] for e in redactions] == [str(question.pk)]
    event_id = redactions[0]["id"]
    assert reader_api.get(f"/api/v1/audit-events/{event_id}/").json()["details"]["reason"] == "why"
    assert reader_api.get("/api/v1/audit-events/", {"action": "nothing"}).status_code == 400
    assert reader_api.get("/api/v1/audit-events/", {"since": "soon"}).status_code == 400


def test_the_audit_log_cannot_be_changed(api):
    event = AuditEvent.objects.create(created_at=timezone.now(), action="export")
    assert api.post("/api/v1/audit-events/", {"action": "export"}, format="json").status_code == 405
    assert api.patch(f"/api/v1/audit-events/{event.pk}/", {"action": "purge"}, format="json").status_code == 405
    assert api.delete(f"/api/v1/audit-events/{event.pk}/").status_code == 405
    assert api.get("/api/v1/audit-events/999999/").status_code == 404


def test_the_audit_log_needs_permission(nobody_api):
    assert nobody_api.get("/api/v1/audit-events/").status_code == 403


def test_chat_query_for_a_chat_that_does_not_exist_is_empty(api):
    assert Chat.objects.count() == 0
    assert ids(api.get("/api/v1/messages/", {"chat": 123})) == []

"""Webhook health and push counts: what the console tells of each channel's link with LINE."""
from datetime import date, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from conversations import channel_health
from conversations.models import ChannelHealth, LineChannel, Message, PushReason
from tests.conftest import CHANNEL_SECRET
from tests.fakes import webhooks as ev

pytestmark = pytest.mark.django_db


def health(channel) -> ChannelHealth:
    return ChannelHealth.objects.get(pk=channel.pk)


def test_a_webhook_counts_its_events_today_and_a_verify_counts_apart(webhook, channel):
    webhook.post(ev.text_message_event("one"), ev.follow_event())
    webhook.post(ev.text_message_event("two"))
    row = health(channel)
    assert (row.events_today, row.events_day) == (3, timezone.localdate())
    assert row.last_event_at is not None and row.last_verify_at is None

    webhook.post()  # LINE's Verify button: a signed body with no events
    row = health(channel)
    assert row.last_verify_at is not None and row.events_today == 3


def test_events_today_start_again_on_a_new_day(webhook, channel):
    ChannelHealth.objects.create(channel=channel, events_day=timezone.localdate() - timedelta(days=1),
                                 events_today=40)
    webhook.post(ev.text_message_event("good morning"))
    assert (health(channel).events_today, health(channel).events_day) == (1, timezone.localdate())


def test_a_redelivery_is_counted_once_per_request_even_when_ingest_starts_over(webhook, channel):
    event = ev.text_message_event("again")
    webhook.post(event)
    # The second request collides on webhookEventId, rolls back and is ingested again carefully.
    assert webhook.post(event).json()["duplicates"] == 1
    assert health(channel).events_today == 2


def test_the_webhook_counts_with_one_statement_in_its_own_transaction(webhook, channel):
    webhook.post(ev.text_message_event("make the row"))
    with CaptureQueriesContext(connection) as queries:
        webhook.post(ev.text_message_event("counted"))
    touching = [q["sql"] for q in queries.captured_queries if "conversations_channelhealth" in q["sql"]]
    assert len(touching) == 1 and touching[0].startswith("UPDATE")


def test_wrong_signatures_are_counted_with_their_time(webhook, channel):
    body = ev.payload_bytes(ev.text_message_event("forged"))
    assert webhook.post(body=body, signature=ev.sign(body, "not the channel secret")).status_code == 403
    assert webhook.post(body=body, signature=ev.sign(body, "not the channel secret")).status_code == 403
    row = health(channel)
    assert row.signatures_rejected == 2 and row.last_rejected_at is not None
    assert row.last_event_at is None and Message.objects.count() == 0


def test_requests_to_unknown_channels_or_without_signature_change_nothing(webhook, channel):
    other = LineChannel.objects.create(name="Other", slug="other", channel_secret="s" * 32, access_token="t")
    body = ev.payload_bytes(ev.text_message_event("who are you"))
    for number in range(20):
        response = webhook.post(body=body, path=f"/line/webhook/made-up-{number}/",
                                signature=ev.sign(body, CHANNEL_SECRET))
        assert response.status_code == 404
    assert webhook.post(body=body, signature=False).status_code == 400
    assert ChannelHealth.objects.count() == 0
    assert webhook.post(body=body, path="/line/webhook/other/", signature=ev.sign(body, CHANNEL_SECRET)
                        ).status_code == 403
    assert list(ChannelHealth.objects.values_list("channel_id", "signatures_rejected")) == [(other.pk, 1)]


def answer() -> Message:
    return Message.objects.get(direction="out")


def test_a_reply_is_no_push(webhook, channel, line_api):
    webhook.post(ev.text_message_event("quick"))
    assert (answer().push_calls, answer().push_reason) == (0, "")
    assert health(channel).pushes_this_month == 0


def test_a_late_answer_is_counted_as_a_push_and_says_why(webhook, channel, line_api):
    old = int((timezone.now() - timedelta(seconds=90)).timestamp() * 1000)
    webhook.post(ev.text_message_event("slow queue", timestamp_ms=old))
    assert line_api.count("push") == 1
    assert (answer().push_calls, answer().push_reason) == (1, PushReason.LATE)
    row = health(channel)
    assert (row.pushes_this_month, row.pushes_month) == (1, timezone.localdate().replace(day=1))


def test_a_refused_reply_token_is_counted_as_a_push(webhook, channel, line_api):
    event = ev.text_message_event("token trouble")
    line_api.expire_reply_token(event["replyToken"])
    webhook.post(event)
    assert (answer().push_calls, answer().push_reason) == (1, PushReason.REFUSED)
    assert health(channel).pushes_this_month == 1


def test_the_rest_of_a_long_answer_goes_by_push(webhook, channel, line_api, ollama_server):
    ollama_server.responder = lambda messages, options: "x" * 27_000
    webhook.post(ev.text_message_event("write even more"))
    assert (line_api.count("reply"), line_api.count("push")) == (1, 1)
    assert (answer().push_calls, answer().push_reason) == (1, PushReason.CONTINUED)
    assert health(channel).pushes_this_month == 1


def test_pushes_count_per_month_and_keep_the_first_reason(channel, make_chat, make_message):
    chat = make_chat("C" + "1" * 32)
    out = make_message(chat, "answer", direction="out")
    ChannelHealth.objects.create(channel=channel, pushes_month=date(2026, 1, 1), pushes_this_month=900)
    now = timezone.now()
    channel_health.count_push(message_id=out.pk, channel_id=channel.pk, reason=PushReason.NO_TOKEN, now=now)
    channel_health.count_push(message_id=out.pk, channel_id=channel.pk, reason=PushReason.CONTINUED, now=now)
    out.refresh_from_db()
    assert (out.push_calls, out.push_reason) == (2, PushReason.NO_TOKEN)
    assert health(channel).pushes_this_month == 2

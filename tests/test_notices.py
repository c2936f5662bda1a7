"""The privacy notice: sent on follow and join from the live settings, by the worker, with the
event's reply token; edited, previewed and switched off in the console and the API."""
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from django.utils.html import escape
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from conversations import notices, selectors
from conversations.models import Chat, LineChannel, Message, PrivacyPolicy, Status
from models_registry.models import BackendKind, ModelBackend
from tests.fakes import webhooks as ev

pytestmark = pytest.mark.django_db


@pytest.fixture
def english(channel):
    LineChannel.objects.filter(pk=channel.pk).update(
        language="en", operator_name="Example Clinic", operator_contact="privacy@example.tw")
    channel.refresh_from_db()
    return channel


def set_retention(days: int | None) -> None:
    PrivacyPolicy.objects.update_or_create(pk=1, defaults={"retention_days": days})
    selectors.forget_cached_policy()


def notice() -> Message:
    return Message.objects.get(message_type=notices.NOTICE_TYPE)


def sent_notice(line_api) -> str:
    [text] = line_api.last("reply").json["messages"]
    assert text["type"] == "text"
    return text["text"]


def test_follow_sends_the_notice_with_its_reply_token_built_from_live_settings(webhook, line_api, english):
    set_retention(30)
    follow = ev.follow_event()
    webhook.post(follow)
    reply = line_api.last("reply").json
    assert reply["replyToken"] == follow["replyToken"]
    text = sent_notice(line_api)
    assert "This bot is run by Example Clinic. Questions about your data: privacy@example.tw." in text
    assert "I keep what you write to me and my answers" in text
    assert "Messages are deleted after 30 days." in text
    assert "not sent to any cloud service" in text
    assert "/optout" in text and "/forgetme" in text
    stored = notice()
    assert (stored.direction, stored.status, stored.text, stored.delivered_calls) == ("out", Status.REPLIED, text, 1)
    assert stored.chat == Chat.objects.get(line_id=ev.DEFAULT_USER_ID)
    assert line_api.count("push") == 0


def test_the_notice_follows_settings_changed_after_the_last_one(webhook, line_api, english):
    webhook.post(ev.follow_event())
    assert "kept until the operator deletes them" in sent_notice(line_api)
    set_retention(90)
    LineChannel.objects.filter(pk=english.pk).update(operator_name="Another Operator", operator_contact="")
    selectors.forget_cached_channels()
    webhook.post(ev.follow_event(is_unblocked=True))
    text = sent_notice(line_api)
    assert "Messages are deleted after 90 days." in text
    assert "This bot is run by Another Operator." in text and "Questions about" not in text


def test_join_notice_tells_a_group_of_its_memory_and_a_cloud_backend(webhook, line_api, english, preset):
    cloud = ModelBackend.objects.create(name="Cloud", kind=BackendKind.REPLICATE, base_url="https://api.replicate.com",
                                        model="meta/llama", is_local=False)
    preset.fallback_backend = cloud
    preset.save()
    webhook.post(ev.join_event())
    text = sent_notice(line_api)
    assert "In this chat I keep" in text
    assert "may come from a cloud AI service" in text
    assert "masked before messages are sent there" in text
    assert line_api.last("reply").json["replyToken"]
    assert notice().chat.source_type == "group"


def test_a_local_only_chat_is_told_its_answers_stay_local(webhook, line_api, english, preset, channel):
    cloud = ModelBackend.objects.create(name="Cloud", kind=BackendKind.REPLICATE, base_url="https://api.replicate.com",
                                        model="meta/llama", is_local=False)
    preset.fallback_backend = cloud
    preset.save()
    Chat.objects.create(channel=channel, source_type="room", line_id=ev.DEFAULT_ROOM_ID, local_only=True,
                        retention_days=7)
    set_retention(30)
    webhook.post(ev.join_event(source="room"))
    text = sent_notice(line_api)
    assert "not sent to any cloud service" in text and "cloud AI service" not in text
    assert "Messages are deleted after 7 days." in text  # the chat's own retention wins


def test_a_legal_hold_is_not_announced(webhook, line_api, english, channel):
    set_retention(30)
    Chat.objects.create(channel=channel, source_type="user", line_id=ev.DEFAULT_USER_ID, legal_hold=True)
    webhook.post(ev.follow_event())
    assert "kept until the operator deletes them" in sent_notice(line_api)


def test_the_notice_is_in_traditional_chinese_by_default(webhook, line_api, channel):
    LineChannel.objects.filter(pk=channel.pk).update(operator_name="範例診所", operator_contact="privacy@example.tw")
    set_retention(30)
    webhook.post(ev.follow_event())
    text = sent_notice(line_api)
    assert "本機器人由範例診所營運" in text
    assert "30 天" in text
    assert "雲端" in text and "/forgetme" in text
    assert "This bot" not in text


def test_a_chat_writing_english_gets_english_and_chinese_gets_chinese(make_chat, make_message, english, channel):
    LineChannel.objects.filter(pk=channel.pk).update(language="zh-hant")
    channel.refresh_from_db()
    chat = make_chat(ev.DEFAULT_GROUP_ID)
    assert notices.chat_language(chat=chat) == "zh-hant"  # nothing said yet: the channel's
    make_message(chat, "Hello everyone, what's for lunch?")
    assert notices.chat_language(chat=chat) == "en"
    assert "This bot is run by" in notices.privacy_notice(chat=chat)
    make_message(chat, "我們去吃牛肉麵吧")
    make_message(chat, "OK!")
    assert notices.chat_language(chat=chat) == "zh-hant"  # a Chinese chat saying "OK" stays Chinese
    assert "本機器人" in notices.privacy_notice(chat=chat)
    assert "This bot is run by" in notices.privacy_notice(chat=chat, language="en")


def test_help_text_names_the_commands_and_how_to_ask(make_chat, channel):
    group = make_chat(ev.DEFAULT_GROUP_ID, reply_mode="prefix", reply_prefix="/bot")
    text = notices.help_text(chat=group, language="en")
    assert "“/bot”" in text
    for command in ("/help", "/privacy", "/reset", "/optout", "/optin", "/forgetme"):
        assert command in text
    assert "抹除" in notices.help_text(chat=group, language="zh-hant")


def test_the_off_switch_sends_nothing_and_records_nothing(webhook, line_api, channel):
    LineChannel.objects.filter(pk=channel.pk).update(notice_enabled=False)
    selectors.forget_cached_channels()
    webhook.post(ev.follow_event(), ev.join_event())
    assert line_api.requests_for("reply") == [] and line_api.count("push") == 0
    # Only the events, which the thread shows.
    assert sorted(Message.objects.values_list("direction", "message_type")) == [("in", "follow"), ("in", "join")]
    assert Chat.objects.count() == 2
    # /privacy still has something to say.
    assert "/forgetme" in notices.privacy_notice(chat=Chat.objects.get(source_type="user"))


def test_a_redelivered_follow_sends_one_notice(webhook, line_api):
    follow = ev.follow_event()
    assert webhook.post(follow).json() == {"stored": 1, "duplicates": 0, "ignored": 0}
    again = {**follow, "deliveryContext": {"isRedelivery": True}}
    assert webhook.post(again).json() == {"stored": 0, "duplicates": 1, "ignored": 0}
    assert line_api.count("reply") == 1
    # The follow's row, and the notice answering it.
    event = Message.objects.get(direction="in")
    assert (event.message_type, event.webhook_event_id) == ("follow", follow["webhookEventId"])
    assert notice().reply_to == event and notice().webhook_event_id is None
    assert Message.objects.count() == 2


def test_the_task_run_twice_sends_once(webhook, line_api):
    webhook.post(ev.follow_event())
    notices.send_notice(message_id=notice().pk)
    assert line_api.count("reply") == 1


def test_a_stale_reply_token_is_not_pushed_instead(webhook, line_api):
    old = int((timezone.now() - timedelta(seconds=90)).timestamp() * 1000)
    webhook.post(ev.follow_event(timestamp_ms=old))
    assert line_api.requests_for("reply") == [] and line_api.count("push") == 0
    assert (notice().status, notice().skip_reason) == (Status.SKIPPED, "reply token expired")


def test_a_reply_token_line_calls_invalid_leaves_the_notice_unsent(webhook, line_api):
    follow = ev.follow_event()
    line_api.expire_reply_token(follow["replyToken"])
    webhook.post(follow)
    assert line_api.delivered == [] and line_api.count("push") == 0
    assert (notice().status, notice().skip_reason) == (Status.SKIPPED, "reply token expired")


def test_a_standby_follow_gets_no_notice(webhook, line_api):
    webhook.post(ev.follow_event(mode="standby"))
    assert line_api.requests_for("reply") == [] and not Message.objects.filter(direction="out").exists()


def test_an_operator_template_is_filled_in(webhook, line_api, english):
    LineChannel.objects.filter(pk=english.pk).update(
        notice_template="Hi from {operator}\n{retention}\n{{literal braces}}")
    selectors.forget_cached_channels()
    set_retention(14)
    webhook.post(ev.follow_event())
    assert sent_notice(line_api) == (
        "Hi from This bot is run by Example Clinic. Questions about your data: privacy@example.tw.\n"
        "Messages are deleted after 14 days.\n{literal braces}")


def test_a_template_saved_around_the_form_is_sent_without_reaching_into_python(english):
    english.notice_template = "{operator.__class__} {retention!r} {nope} {models}"
    chat = Chat(channel=english, source_type="user")
    text = notices.privacy_notice(chat=chat, language="en")
    assert text.startswith("{operator.__class__} {retention!r} {nope} My answers come from")


# --- The console and the API ----------------------------------------------------------


def channel_form(channel: LineChannel, **changes) -> dict:
    data = {"name": channel.name, "slug": channel.slug, "channel_secret": "", "access_token": "",
            "is_default": "on", "mask_before_cloud": "on", "language": channel.language,
            "operator_name": channel.operator_name, "operator_contact": channel.operator_contact,
            "notice_enabled": "on", "notice_template": channel.notice_template,
            "non_text_reply_enabled": "on", "non_text_reply": ""}
    data.update(changes)
    return {key: value for key, value in data.items() if value is not None}


def test_a_template_with_an_unknown_placeholder_is_refused_with_a_clear_error(admin_client, english):
    response = admin_client.post(f"/admin/conversations/linechannel/{english.pk}/change/",
                                 channel_form(english, notice_template="Run by {operater}. {retention}"))
    assert response.status_code == 200
    page = response.content.decode()
    assert "Unknown placeholder {operater}. Known placeholders: {commands}, {memory}, {models}, {operator}, " \
           "{retention}." in page
    english.refresh_from_db()
    assert english.notice_template == ""


@pytest.mark.parametrize("template, problem", [
    ("{retention:>20}", "takes no format"),
    ("{retention", "A brace is not closed"),
    ("{0}", "Unknown placeholder {0}"),
])
def test_other_malformed_templates_are_refused(admin_client, english, template, problem):
    response = admin_client.post(f"/admin/conversations/linechannel/{english.pk}/change/",
                                 channel_form(english, notice_template=template))
    assert problem in response.content.decode()


def test_the_console_saves_the_notice_settings_and_previews_them(admin_client, english):
    response = admin_client.post(f"/admin/conversations/linechannel/{english.pk}/change/",
                                 channel_form(english, operator_name="New Operator",
                                              notice_template="{operator} {memory}", notice_enabled=None,
                                              non_text_reply_enabled=None, non_text_reply="Text only, please."))
    assert response.status_code == 302
    english.refresh_from_db()
    assert (english.operator_name, english.notice_enabled, english.non_text_reply_enabled,
            english.non_text_reply) == ("New Operator", False, False, "Text only, please.")
    page = admin_client.get(f"/admin/conversations/linechannel/{english.pk}/change/").content.decode()
    assert "Privacy notice preview" in page
    assert "This bot is run by New Operator. Questions about your data: privacy@example.tw. I keep what you " \
           "write to me" in page
    assert "This bot is run by New Operator. Questions about your data: privacy@example.tw. In this chat " \
           "I keep" in page
    assert "The notice is off" in page


def test_the_preview_button_renders_the_unsaved_template(admin_client, english):
    url = f"/admin/conversations/linechannel/{english.pk}/notice-preview/"
    response = admin_client.post(url, channel_form(english, notice_template="Unsaved: {retention}"),
                                 headers={"X-Preview": "fragment"})
    assert response.status_code == 200
    fragment = response.content.decode()
    assert fragment.count("Unsaved: Messages are kept until the operator deletes them.") == 2
    assert "<html" not in fragment
    english.refresh_from_db()
    assert english.notice_template == ""
    bad = admin_client.post(url, channel_form(english, notice_template="{who}", language="zh-hant"))
    assert "Unknown placeholder {who}" in bad.content.decode() and "<html" in bad.content.decode()


def test_the_preview_needs_a_console_user(client, english):
    response = client.post(f"/admin/conversations/linechannel/{english.pk}/notice-preview/", {})
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_the_thread_shows_the_notice_as_sent(webhook, line_api, admin_client):
    webhook.post(ev.follow_event())
    chat = Chat.objects.get()
    page = admin_client.get(f"/admin/conversations/chat/{chat.pk}/thread/").content.decode()
    assert "privacy notice, sent" in page
    assert escape(notice().text.splitlines()[1]) in page


@pytest.fixture
def api(db) -> APIClient:
    user = User.objects.create(username="operator", is_staff=True, is_superuser=True)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


def test_the_api_reads_and_writes_the_notice_settings(api, english):
    url = f"/api/v1/channels/{english.pk}/"
    body = api.get(url).json()
    assert (body["operator_name"], body["language"], body["notice_enabled"]) == ("Example Clinic", "en", True)
    response = api.patch(url, {"notice_template": "{operator} {bogus}"}, format="json")
    assert response.status_code == 400
    assert "Unknown placeholder {bogus}" in response.json()["notice_template"][0]
    response = api.patch(url, {"notice_template": "{operator}", "notice_enabled": False,
                               "non_text_reply_enabled": False}, format="json")
    assert response.status_code == 200
    english.refresh_from_db()
    assert (english.notice_template, english.notice_enabled, english.non_text_reply_enabled) == (
        "{operator}", False, False)


# --- The notice among the other messages ----------------------------------------------------


def test_a_notice_whose_task_was_lost_is_closed_by_the_sweeper_not_pushed(channel, make_chat, line_api):
    from conversations import sweeper

    chat = make_chat(ev.DEFAULT_USER_ID, source_type="user")
    moment = timezone.now() - timedelta(minutes=5)
    follow = Message.objects.create(chat=chat, direction="in", message_type="follow", webhook_event_id="01LOST",
                                    event_at=moment, status="skipped", skip_reason="event", status_changed_at=moment)
    lost = notices.queue_notice(event=follow, reply_token="r" * 32)
    assert lost and notice().status == Status.PENDING
    sweeper.sweep_stuck_messages()
    assert (notice().status, notice().skip_reason) == (Status.SKIPPED, "reply token expired")
    assert line_api.requests == []


def test_retention_and_erasure_take_the_notice_like_any_message(webhook, line_api, admin_user):
    from conversations import erasure, retention

    webhook.post(ev.follow_event(user_id="U" + "e1" * 16))
    webhook.post(ev.join_event())
    Message.objects.filter(chat__source_type="group").update(event_at=timezone.now() - timedelta(days=40))
    set_retention(30)
    assert retention.purge_expired().messages == 2  # the join's row and its notice
    assert not Message.objects.filter(chat__source_type="group").exists()
    erasure.erase_user(line_user_id="U" + "e1" * 16, actor=admin_user)
    assert not Message.objects.exists()


def test_unsend_and_erasure_drop_the_quote_token(webhook, line_api, admin_user):
    from conversations import erasure

    said = ev.text_message_event("hi bot", source="group", mention_self=True)
    unsent = ev.text_message_event("oops", source="group", mention_self=True, user_id="U" + "f2" * 16)
    webhook.post(said, unsent)
    assert Message.objects.exclude(quote_token="").filter(direction="in").count() == 2
    webhook.post(ev.unsend_event(unsent["message"]["id"], source="group", user_id="U" + "f2" * 16))
    erasure.erase_user(line_user_id=ev.DEFAULT_USER_ID, actor=admin_user)
    assert not Message.objects.exclude(quote_token="").exists()


def test_an_over_long_template_is_refused_by_the_preview_and_the_api(admin_client, api, english):
    too_long = "x" * 2001
    preview = admin_client.post(f"/admin/conversations/linechannel/{english.pk}/notice-preview/",
                                {"notice_template": too_long}, headers={"X-Preview": "fragment"})
    assert "at most 2000 characters" in preview.content.decode()
    response = api.patch(f"/api/v1/channels/{english.pk}/", {"notice_template": too_long}, format="json")
    assert response.status_code == 400 and "notice_template" in response.json()


def test_help_and_notice_name_only_the_commands_the_channel_answers(make_chat, channel):
    group = make_chat("C" + "7a" * 16)
    LineChannel.objects.filter(pk=channel.pk).update(command_forgetme=False, command_help=False)
    group.refresh_from_db()
    help_lines = notices.help_text(chat=group, language="en")
    notice = notices.privacy_notice(chat=group, language="en")
    assert "/forgetme" not in help_lines and "/help" not in help_lines and "/optout" in help_lines
    assert "/forgetme" not in notice and "/optout" in notice


def test_a_template_typed_in_a_browser_reaches_line_without_carriage_returns(make_chat, channel):
    LineChannel.objects.filter(pk=channel.pk).update(notice_template="Hi!\r\n{operator}\r\nBye")
    group = make_chat("C" + "7b" * 16)
    assert "\r" not in notices.privacy_notice(chat=group, language="en")

"""The console and the API for groups: sender names everywhere, search by name, group
memory shown and set, context resets and opt-outs in the thread, commands and limits set."""
import json

import pytest

from conversations.models import Chat, ChatMember, GroupMemory, LineChannel, OptOut, pseudonym
from core.audit import keyed_hash
from core.models import AuditEvent
from tests.fakes import webhooks as ev
from tests.test_api import api, api_test_settings, superuser  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db

ALICE, BOB = "U" + "a1" * 16, "U" + "b2" * 16
GROUP = ev.DEFAULT_GROUP_ID


@pytest.fixture
def group_talk(webhook, line_api, channel):
    """Alice (named) and Bob (no consent: a pseudonym) asked in a group, Alice in a 1:1 chat
    too; then she reset the group's context and opted out."""
    LineChannel.objects.filter(pk=channel.pk).update(language="en")
    line_api.profiles[ALICE] = "Alice Chen"
    line_api.missing_ids.add(BOB)
    text = ev.text_message_event
    webhook.post(text("where is the station?", source="group", user_id=ALICE, mention_self=True))
    webhook.post(text("and the bus?", source="group", user_id=BOB, mention_self=True))
    webhook.post(text("just chatting", source="group", user_id=BOB))
    webhook.post(text("hello in private", user_id=ALICE))
    webhook.post(text("/reset", source="group", user_id=ALICE, mention_self=True))
    webhook.post(text("/optout", source="group", user_id=ALICE, mention_self=True))
    return Chat.objects.get(line_id=GROUP)


def test_the_thread_shows_speakers_resets_and_opt_outs(admin_client, group_talk):
    page = admin_client.get(f"/admin/conversations/chat/{group_talk.pk}/thread/").content.decode()
    assert "Alice Chen" in page and pseudonym(BOB) in page
    assert "Context reset" in page and "the messages above no longer go into prompts" in page
    assert page.index("/reset") < page.index("Context reset") < page.index("/optout")
    assert "the sender opted out" in page
    assert "only messages addressed to the bot" in page and "1 message not stored" in page


def test_the_message_list_has_a_sender_column_and_finds_messages_by_sender_name(admin_client, group_talk):
    page = admin_client.get("/admin/conversations/message/").content.decode()
    assert '<td class="field-sender">Alice Chen</td>' in page
    assert f'<td class="field-sender">{pseudonym(BOB)}</td>' in page
    assert '<td class="field-sender">the bot</td>' in page
    found = admin_client.get("/admin/conversations/message/", {"q": "chen"}).content.decode()
    assert '<td class="field-short_text">@Bot where is the station?</td>' in found
    assert "and the bus?" not in found
    # A 1:1 chat's sender is the chat's own name.
    Chat.objects.filter(source_type="user").update(display_name="Alice in private")
    found = admin_client.get("/admin/conversations/message/", {"q": "in private"}).content.decode()
    assert "hello in private" in found and "where is the station?" not in found


def test_the_chat_list_and_dashboard_show_group_memory(admin_client, group_talk, make_chat):
    make_chat("C" + "0e" * 16, display_name="Remembering group", group_memory=GroupMemory.EVERYTHING)
    page = admin_client.get("/admin/conversations/chat/").content.decode()
    assert '<td class="field-memory">only messages addressed to the bot</td>' in page
    assert '<td class="field-memory">every message</td>' in page
    assert '<td class="field-memory">—</td>' in page  # the 1:1 chat
    filtered = admin_client.get("/admin/conversations/chat/", {"group_memory": "everything"}).content.decode()
    assert "Remembering group" in filtered and "field-memory\">only" not in filtered
    dashboard = admin_client.get("/admin/").content.decode()
    assert "Group memory" in dashboard and "?group_memory=everything" in dashboard
    assert "1 group or room" in dashboard


def test_the_chat_page_sets_group_memory_and_shows_members(admin_client, group_talk):
    page = admin_client.get(f"/admin/conversations/chat/{group_talk.pk}/change/").content.decode()
    members = page.lower().split("members who spoke")[1][:400]
    assert "Alice Chen" in page and pseudonym(BOB) in page and BOB.lower() not in members
    assert "neither its text nor its sender is stored" in page  # the setting's help text
    form = {"display_name": "", "reply_mode": "mention", "reply_prefix": "/ai", "is_active": "on",
            "group_memory": "everything"}
    assert admin_client.post(f"/admin/conversations/chat/{group_talk.pk}/change/", form).status_code == 302
    assert Chat.objects.get(pk=group_talk.pk).group_memory == "everything"
    event = AuditEvent.objects.get(action="chat_change")
    assert event.details["changes"]["group_memory"] == ["addressed", "everything"]


def test_opt_outs_are_listed_as_hashes_and_found_by_user_id(admin_client, group_talk):
    page = admin_client.get("/admin/conversations/optout/").content.decode()
    assert keyed_hash(ALICE)[:12] in page and ALICE not in page
    found = admin_client.get("/admin/conversations/optout/", {"q": ALICE}).content.decode()
    assert keyed_hash(ALICE)[:12] in found
    nothing = admin_client.get("/admin/conversations/optout/", {"q": BOB}).content.decode()
    assert keyed_hash(ALICE)[:12] not in nothing
    opt_out = OptOut.objects.get()
    assert admin_client.post(f"/admin/conversations/optout/{opt_out.pk}/delete/", {"post": "yes"}).status_code == 403


def test_channel_settings_for_commands_and_limits_in_the_admin(admin_client, channel):
    page = admin_client.get(f"/admin/conversations/linechannel/{channel.pk}/change/").content.decode()
    for field in ("command_help", "command_privacy", "command_reset", "command_optout", "command_forgetme",
                  "user_limit_messages", "user_limit_minutes"):
        assert f'name="{field}"' in page
    assert "Someone who opted out can always opt in again." in page
    response = admin_client.post(f"/admin/conversations/linechannel/{channel.pk}/change/", {
        "name": channel.name, "slug": channel.slug, "is_default": "on", "command_help": "on",
        "user_limit_messages": 5, "user_limit_minutes": 0})
    assert response.status_code == 200 and "user_limit_minutes" in response.context["adminform"].form.errors


def test_the_api_shows_and_sets_group_settings(api, channel, group_talk):
    chat = api.get(f"/api/v1/chats/{group_talk.pk}/").json()
    assert (chat["group_memory"], chat["unstored_messages"]) == ("addressed", 1)
    assert chat["context_reset_at"] is not None
    assert api.patch(f"/api/v1/chats/{group_talk.pk}/", {"group_memory": "everything"},
                     format="json").status_code == 200
    assert api.patch(f"/api/v1/chats/{group_talk.pk}/", {"unstored_messages": 0}, format="json").json()[
        "unstored_messages"] == 1
    assert [c["id"] for c in api.get("/api/v1/chats/", {"group_memory": "everything"}).json()["results"]] == [
        group_talk.pk]
    response = api.patch(f"/api/v1/channels/{channel.pk}/", {"command_forgetme": False, "user_limit_messages": 7},
                         format="json")
    assert response.status_code == 200
    assert (response.json()["command_forgetme"], response.json()["user_limit_messages"]) == (False, 7)
    assert api.patch(f"/api/v1/channels/{channel.pk}/", {"user_limit_minutes": 0}, format="json").status_code == 400


def test_the_api_names_senders_and_finds_them_by_name(api, group_talk):
    results = api.get("/api/v1/messages/", {"chat": group_talk.pk}).json()["results"]
    senders = {m["text"]: (m["sender_name"], m["command"]) for m in results}
    assert senders["@Bot where is the station?"] == ("Alice Chen", "")
    assert senders["@Bot and the bus?"] == (pseudonym(BOB), "")
    assert senders["@Bot /optout"] == ("Alice Chen", "optout")
    found = api.get("/api/v1/messages/", {"sender": "chen"}).json()["results"]
    # Her 1:1 chat is named after her profile too.
    assert {m["text"] for m in found} == {"@Bot where is the station?", "@Bot /reset", "@Bot /optout",
                                          "hello in private"}
    event = AuditEvent.objects.filter(action="view_conversation").latest("id")
    assert "chen" not in json.dumps(event.details) and event.details["filters"]["sender_hmac"] == keyed_hash("chen")


def test_member_names_in_the_admin_never_show_the_line_user_id_instead(admin_client, group_talk):
    ChatMember.objects.filter(line_user_id=ALICE).update(display_name="")
    page = admin_client.get("/admin/conversations/message/").content.decode()
    assert f'<td class="field-sender">{pseudonym(ALICE)}</td>' in page

"""The simulator: LINE-shaped events through the real webhook and pipeline, answers at the emulator."""
import json
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.utils import timezone

from conversations import redaction
from conversations.models import BOT_EVENT_TYPES, Chat, LineChannel, Message
from conversations.simulator import events, services
from conversations.simulator.models import EmulatorCall, SimulatedChat, SimulatedEvent, Trouble
from conversations.simulator.selectors import timeline
from core.models import AuditEvent
from models_registry.models import ModelBackend
from tests.fakes import webhooks as ev
from tests.fakes.line_spec import spec_dir
from tests.simulation import SANDBOX_SECRET, sandbox, simulation  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db
SIMULATOR = "/admin/conversations/simulatedchat/"


def items(simulated, kind):
    return [item for item in timeline(simulated_chat=simulated)["items"] if item["kind"] == kind]


def test_a_one_to_one_chat_is_answered_through_the_real_pipeline_and_never_reaches_line(simulation, line_api,
                                                                                          ollama_server):
    simulated = simulation.chat("user", member_names=["Mei"])
    chat = Chat.objects.get(line_id=simulated.line_id)
    assert (chat.channel, chat.source_type, chat.display_name) == (simulation.channel, "user", "Mei")  # profile
    # Adding the bot (follow) brought the privacy notice, with the follow event's reply token.
    notice = Message.objects.get(chat=chat, direction="out", message_type="notice")
    assert notice.status == "replied" and notice.text.startswith("您好！我是 AI 助理")  # the Sandbox's language
    delivery = simulation.say(simulated, "你好")
    assert delivery.status == 200 and delivery.body["stored"] == 1
    answer = Message.objects.get(chat=chat, direction="out", reply_to__text="你好")
    assert answer.text == "echo: 你好" and answer.status == "replied"
    assert ollama_server.last("chat").json["messages"][-1]["content"] == "你好"
    assert list(EmulatorCall.objects.values_list("endpoint", "status", "answer_id")) == [
        ("profile", 200, None), ("reply", 200, notice.pk), ("loading", 202, None), ("reply", 200, answer.pk)]
    replies = list(EmulatorCall.objects.filter(endpoint="reply"))
    assert [(r.call_index, r.simulated_chat) for r in replies] == [(0, simulated), (0, simulated)]
    assert not any("text" in m for r in replies for m in r.messages), "the emulator keeps no copy of a logged text"
    first, bot = items(simulated, "bot")
    assert (first["via"], first["message_type"], first["answer_id"]) == ("reply", "notice", notice.pk)
    assert first["bubbles"] == [{"type": "text", "text": notice.text}]
    assert bot["via"] == "reply" and bot["message_type"] == "text"
    assert bot["bubbles"] == [{"type": "text", "text": "echo: 你好"}]
    assert [(i["type"], i["status"]) for i in items(simulated, "own_text")] == [("notice", "replied")]
    [figures] = items(simulated, "answer")  # latency and backend under the answer; none under the notice
    assert figures["latency_ms"] is not None and figures["backend"] == "Local Ollama" and figures["local"]
    assert line_api.requests == []


@pytest.mark.skipif(spec_dir() is None, reason="LINE's OpenAPI files (../shared/specs/line-openapi) are not beside "
                    "the project; CI has them")
def test_events_are_shaped_as_line_sends_them_today():
    user, group = events.new_line_id("user"), events.new_line_id("group")
    source = events.source(source_type="group", chat_id=group, user_id=user)
    built = [
        events.message_event(source=source, content=events.text_content("hi", bot_name="Sandbox",
                                                                         bot_user_id=ev.DEFAULT_BOT_USER_ID)),
        *[events.message_event(source=source, content=events.media_content(kind))
          for kind in events.MESSAGE_TYPES if kind != "text"],
        events.follow_event(user_id=user), events.join_event(source_type="group", chat_id=group),
        events.member_joined_event(source_type="group", chat_id=group, user_ids=[user]),
        events.member_left_event(source_type="room", chat_id=events.new_line_id("room"), user_ids=[user]),
    ]
    assert ev.validate_webhook_payload(json.loads(events.body(destination=ev.DEFAULT_BOT_USER_ID, events=built)))
    mention = built[0]["message"]
    assert mention["text"] == "@Sandbox hi"
    assert mention["mention"]["mentionees"] == [{"index": 0, "length": 8, "type": "user", "isSelf": True,
                                                 "userId": ev.DEFAULT_BOT_USER_ID}]
    ids = [event["webhookEventId"] for event in built]
    assert len(set(ids)) == len(ids) and all(len(i) == 26 for i in ids)
    body = events.body(destination=ev.DEFAULT_BOT_USER_ID, events=built)
    assert events.signature(body=body, channel_secret="s") == ev.sign(body, "s")


def test_in_a_group_the_bot_answers_a_mention_only(simulation, ollama_server):
    simulated = simulation.chat("group", title="Hiking", member_names=["Ann", "Ben"])
    ann, ben = simulated.members.order_by("id")
    simulation.say(simulated, "anyone for Saturday?", member=ann)
    simulation.say(simulated, "what about the weather?", member=ben, mention_bot=True)
    simulation.say(simulated, member=ann, message_type="sticker")
    # Group memory "addressed" (the default): the members saw Ann's messages, the bot kept nothing of them.
    users = items(simulated, "user")
    assert [(u["speaker"], u["status"], u["skip_reason"]) for u in users] == [
        ("Ann", "unstored", "not addressed"), ("Ben", "replied", ""), ("Ann", "unstored", "not addressed")]
    assert users[0]["text"] == "" and users[2]["text"] == "[Sticker]" and users[1]["mentions_bot"]
    # Of the members' messages only Ben's is stored (the bot's own join is an event row).
    assert Message.objects.filter(direction="in").exclude(message_type__in=BOT_EVENT_TYPES).count() == 1
    assert Chat.objects.get().unstored_messages == 2
    assert "anyone for Saturday?" not in json.dumps([timeline(simulated_chat=simulated),
                                                     list(SimulatedEvent.objects.values())], default=str)
    notice = Message.objects.get(message_type="notice")
    assert [(b["message_type"], b["bubbles"][0]["text"]) for b in items(simulated, "bot")] == [
        ("notice", notice.text), ("text", "echo: Ben: what about the weather?")]  # the join notice first
    assert ollama_server.last("chat").json["messages"][-1]["content"] == "Ben: what about the weather?"
    assert items(simulated, "bot")[1]["bubbles"][0]["quote"] == {"speaker": "Ben", "text": users[1]["text"]}
    assert not EmulatorCall.objects.filter(endpoint="loading").exists()
    assert Chat.objects.get(line_id=simulated.line_id).display_name == "Hiking"  # group summary


def test_with_group_memory_everything_a_message_not_for_the_bot_is_stored_and_skipped(admin_client, simulation,
                                                                                      ollama_server):
    simulated = simulation.chat("group", member_names=["Ann", "Ben"])
    ann, ben = simulated.members.order_by("id")
    admin_client.post(f"{SIMULATOR}{simulated.pk}/settings/", {"reply_mode": "mention", "group_memory": "everything"})
    assert simulated.chat().group_memory == "everything"
    changes = AuditEvent.objects.get(action="chat_change").details["changes"]
    assert changes["group_memory"] == ["addressed", "everything"]
    simulation.say(simulated, "anyone for Saturday?", member=ann)
    simulation.say(simulated, member=ann, message_type="sticker")
    simulation.say(simulated, "what about the weather?", member=ben, mention_bot=True)
    users = items(simulated, "user")
    assert [(u["speaker"], u["status"], u["skip_reason"], u["text"]) for u in users] == [
        ("Ann", "skipped", "not mentioned", "anyone for Saturday?"), ("Ann", "skipped", "not text", "[Sticker]"),
        ("Ben", "replied", "", "@Sandbox what about the weather?")]
    # What was said before the mention is context, with its speaker's name.
    contents = [m["content"] for m in ollama_server.last("chat").json["messages"]]
    assert contents[-2:] == ["Ann: anyone for Saturday?", "Ben: what about the weather?"]


def test_members_join_are_renamed_and_leave(simulation):
    simulated = simulation.chat("group", member_names=["Ann"])
    with simulation.capture(execute=True):
        dora = services.add_member(simulated_chat=simulated, name="  Dora  ", actor="test")
        services.rename_member(member=dora, name="Dorothy", actor="test")
        services.remove_member(member=simulated.members.get(display_name="Ann"), actor="test")
        with pytest.raises(Exception, match="Someone has to stay"):
            services.remove_member(member=simulated.members.get(display_name="Dorothy"), actor="test")
    simulation.say(simulated, "hello", member=simulated.members.get(display_name="Dorothy"))
    assert list(simulated.events.values_list("event_type", flat=True)) == ["join", "memberJoined", "memberLeft",
                                                                           "message"]
    assert items(simulated, "user")[0]["speaker"] == "Dorothy"
    with pytest.raises(Exception, match="not in this chat"):
        simulation.say(simulated, "I left", member=simulated.members.get(display_name="Ann"))
    person = simulation.chat("user")
    with pytest.raises(Exception, match="one member"):
        services.add_member(simulated_chat=person, name="Eve", actor="test")


def test_a_long_answer_is_split_as_line_takes_it_reply_first_then_push(simulation, ollama_server):
    pieces = ["x" * 5000] * 6 + ["the end"]
    ollama_server.responder = lambda messages, options: "".join(pieces)
    simulated = simulation.without_notice().chat("user")  # only the answer's calls
    simulation.say(simulated, "tell me everything")
    calls = list(EmulatorCall.objects.filter(endpoint__in=["reply", "push"]).order_by("id"))
    assert [(c.endpoint, c.status, len(c.messages), c.call_index) for c in calls] == [
        ("reply", 200, 5, 0), ("push", 200, 2, 1)]
    bots = items(simulated, "bot")
    assert [b["via"] for b in bots] == ["reply", "push"]
    assert [bubble["text"] for b in bots for bubble in b["bubbles"]] == pieces


def test_redaction_reaches_what_the_simulator_shows(simulation):
    simulated = simulation.chat("user")
    simulation.say(simulated, "my email is mei@example.com")
    answer = Message.objects.get(direction="out", message_type="text")
    redaction.redact_messages(message_ids=[answer.pk, answer.reply_to_id], actor="test", reason="PII")
    shown = json.dumps(timeline(simulated_chat=simulated))
    assert "mei@example.com" not in shown and "[redacted]" in shown
    assert "mei@example.com" not in json.dumps(list(EmulatorCall.objects.values("messages", "details", "error")))


def test_line_trouble_a_500_is_retried_and_an_expired_token_falls_back_to_push(simulation):
    simulated = simulation.chat("user")
    services.set_trouble(simulated_chat=simulated, trouble=Trouble.SERVER_ERROR_ONCE, actor="test")
    simulation.say(simulated, "one")
    services.set_trouble(simulated_chat=simulated, trouble=Trouble.EXPIRED_REPLY_TOKEN, actor="test")
    simulation.say(simulated, "two")
    sends = list(EmulatorCall.objects.filter(endpoint__in=["reply", "push"]).values_list("endpoint", "status"))
    # The follow's notice went out before the trouble began.
    assert sends == [("reply", 200), ("reply", 500), ("reply", 200), ("reply", 400), ("push", 200)]
    errors = items(simulated, "line_error")
    assert [(e["status"], e["error"]) for e in errors] == [(500, "Internal server error"), (400, "Invalid reply token")]
    assert [(b["message_type"], b["via"]) for b in items(simulated, "bot")] == [
        ("notice", "reply"), ("text", "reply"), ("text", "push")]
    assert Message.objects.filter(direction="in", status="replied").count() == 2


def test_when_line_stays_down_the_message_waits_for_the_sweeper(simulation):
    simulated = simulation.chat("user")
    services.set_trouble(simulated_chat=simulated, trouble=Trouble.SERVER_ERROR_ALWAYS, actor="test")
    simulation.say(simulated, "anyone?")
    inbound = Message.objects.get(direction="in", message_type="text")
    assert inbound.status == "pending" and "500" in inbound.error


def test_without_a_model_the_apology_says_what_to_install(simulation, preset):
    ModelBackend.objects.filter(pk=preset.backend_id).update(base_url="http://127.0.0.1:9", timeout=2)
    simulated = simulation.chat("user")
    simulation.say(simulated, "hello?")
    notice, bot = items(simulated, "bot")
    assert notice["message_type"] == "notice"  # no model writes the notice: a newcomer without one still gets it
    assert bot["bubbles"][0]["text"].startswith("抱歉")
    [figures] = items(simulated, "answer")  # the hint under the apology, not under the notice
    assert figures["hint"] == ("No model reachable at http://127.0.0.1:9 — install Ollama (https://ollama.com), "
                               "start it and run `ollama pull gemma3:4b`.")


def test_a_missing_model_is_named_with_its_pull_command(simulation, preset):
    ModelBackend.objects.filter(pk=preset.backend_id).update(model="qwen3:8b")
    simulated = simulation.chat("user")
    simulation.say(simulated, "hello?")
    assert "run `ollama pull qwen3:8b` there" in items(simulated, "answer")[0]["hint"]


def test_the_public_webhook_refuses_a_simulated_channel(client, sandbox):
    body, headers = ev.signed_request(ev.text_message_event("hi"), channel_secret=SANDBOX_SECRET)
    response = client.post("/line/webhook/sandbox/", data=body, content_type="application/json",
                           HTTP_X_LINE_SIGNATURE=headers["X-Line-Signature"])
    assert response.status_code == 404 and not Message.objects.exists()


def test_the_sandbox_does_not_take_the_default_webhook_url(client, sandbox, channel):
    LineChannel.objects.filter(pk=channel.pk).update(is_default=False)
    body, headers = ev.signed_request(ev.text_message_event("hi", source="group"), channel_secret="0123456789abcdef0123456789abcdef")
    response = client.post("/line/webhook/", data=body, content_type="application/json",
                           HTTP_X_LINE_SIGNATURE=headers["X-Line-Signature"])
    assert response.status_code == 200 and Chat.objects.get().channel == channel


def test_bootstrap_makes_the_sandbox_once(capsys, settings):
    settings.LINE_CHANNEL_SECRET = settings.LINE_CHANNEL_ACCESS_TOKEN = ""
    call_command("bootstrap")
    out = capsys.readouterr().out
    assert "Created the Sandbox channel" in out and SIMULATOR in out
    assert "set LINE_CHANNEL_SECRET and LINE_CHANNEL_ACCESS_TOKEN" in out  # still asks for the real one
    sandbox = LineChannel.objects.get()
    assert sandbox.is_simulated and not sandbox.is_default and len(sandbox.channel_secret) == 32
    assert sandbox.bot_user_id.startswith("U") and len(sandbox.bot_user_id) == 33
    call_command("bootstrap")
    assert LineChannel.objects.count() == 1


def test_simulating_needs_change_permission_on_chats_and_reading_is_audited(client, simulation):
    simulated = simulation.chat("user")
    simulation.say(simulated, "hi")
    viewer = User.objects.create_user("viewer", password="pw-for-a-viewer", is_staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(codename__in=["view_chat", "view_message"]))
    client.force_login(viewer)
    member = simulated.members.get()
    for response in (client.get(SIMULATOR), client.get(f"{SIMULATOR}{simulated.pk}/timeline/"),
                     client.post(f"{SIMULATOR}{simulated.pk}/send/", {"member": member.pk, "text": "x"})):
        assert response.status_code == 403
    viewer.user_permissions.add(Permission.objects.get(codename="change_chat"))
    viewer = User.objects.get(pk=viewer.pk)
    client.force_login(viewer)
    chat = simulated.chat()
    views_before = AuditEvent.objects.filter(action="view_conversation").count()
    assert client.get(f"{SIMULATOR}?chat={simulated.pk}").status_code == 200
    for _ in range(3):
        assert client.get(f"{SIMULATOR}{simulated.pk}/timeline/").status_code == 200
    viewed = AuditEvent.objects.filter(action="view_conversation", actor_username="viewer")
    assert viewed.count() - views_before == 1  # the page; its polls add nothing for ten minutes
    assert {(e.target_type, e.target_id, e.details["what"]) for e in viewed} == {("chat", str(chat.pk), "simulator")}
    viewed.update(created_at=timezone.now() - timedelta(minutes=11))
    client.get(f"{SIMULATOR}{simulated.pk}/timeline/")
    assert viewed.count() - views_before == 2  # read on, long after
    response = client.post(f"{SIMULATOR}{simulated.pk}/send/", {"member": member.pk, "text": "from a viewer"})
    assert response.status_code == 200 and response.json()["webhook"]["stored"] == 1
    simulate = AuditEvent.objects.filter(action="simulate", actor_username="viewer").get()
    assert simulate.details == {"event": "message", "message_type": "text", "mentions_bot": False,
                                "webhook_status": 200}
    answer = Message.objects.filter(direction="out").first()
    assert client.get(f"{SIMULATOR}answers/{answer.pk}/prompt/").status_code == 403  # needs view_samplingpreset


def test_what_the_model_was_sent_is_the_pipeline_prompt_masked_for_a_cloud_backend(admin_client, simulation, preset,
                                                                                      ollama_server):
    ModelBackend.objects.filter(pk=preset.backend_id).update(is_local=False)
    simulated = simulation.chat("user")
    simulation.say(simulated, "first")
    simulation.say(simulated, "mail me at mei@example.com")
    answer = Message.objects.filter(direction="out").order_by("id").last()
    prompt = admin_client.get(f"{SIMULATOR}answers/{answer.pk}/prompt/").json()
    sent = ollama_server.last("chat").json
    assert [{"role": t["role"], "content": t["content"]} for t in prompt["turns"]] == [
        {"role": m["role"], "content": m["content"]} for m in sent["messages"]]
    assert "mei@example.com" not in json.dumps(prompt) and prompt["masked"]
    assert prompt["backend"]["local"] is False and prompt["params"]["temperature"] == 0.3
    assert sent["options"]["temperature"] == 0.3
    event = AuditEvent.objects.filter(action="view_conversation", target_type="message").get()
    assert (event.target_id, event.details["what"]) == (str(answer.pk), "prompt sent to the model")


def test_the_page_renders_each_setting(admin_client, simulation):
    assert "Start a simulated chat" in admin_client.get(SIMULATOR).content.decode()
    group = simulation.chat("group", title="Book club")
    page = admin_client.get(f"{SIMULATOR}?chat={group.pk}").content.decode()
    assert 'id="sim-config"' in page and "@Sandbox" in page and "Add member" in page
    real = Chat.objects.create(channel=LineChannel.objects.create(name="Real", slug="real", channel_secret="s",
                                                                  access_token="t"), source_type="group", line_id="C1")
    page = admin_client.get(f"{SIMULATOR}?new=1&like={real.pk}").content.decode()
    assert "Rehearsing a chat like" in page and 'value="group" selected' in page


def test_creating_from_the_page_sends_the_first_message(admin_client, sandbox, preset,
                                                        django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(f"{SIMULATOR}new/", {"channel": sandbox.pk, "source_type": "user",
                                                           "first_message": "hello"})
    simulated = SimulatedChat.objects.get()
    assert response.url == f"{SIMULATOR}?chat={simulated.pk}"
    assert Message.objects.get(direction="out", message_type="notice").status == "replied"  # the follow's
    assert Message.objects.get(direction="out", reply_to__text="hello").text == "echo: hello"


def test_chat_settings_and_deletion_are_audited_like_any_chat(admin_client, simulation, preset):
    simulated = simulation.chat("group")
    chat = simulated.chat()
    admin_client.post(f"{SIMULATOR}{simulated.pk}/settings/", {"preset": preset.pk, "reply_mode": "always",
                                                               "trouble": "500_once"})
    chat.refresh_from_db()
    simulated.refresh_from_db()
    assert (chat.preset, chat.reply_mode, simulated.trouble) == (preset, "always", "500_once")
    assert AuditEvent.objects.filter(action="chat_change", target_id=str(chat.pk)).exists()
    assert AuditEvent.objects.filter(action="simulate", details__trouble="500_once").exists()
    simulation.say(simulated, "no mention needed now")
    admin_client.post(f"{SIMULATOR}{simulated.pk}/delete/")
    assert not Chat.objects.filter(pk=chat.pk).exists() and not Message.objects.exists()
    assert not SimulatedChat.objects.exists() and not SimulatedEvent.objects.exists()
    # The join, its notice, the message and its answer.
    assert AuditEvent.objects.get(action="chat_change", details__changes__deleted=True).details["messages"] == 4


def test_simulated_chats_are_marked_in_the_list_the_thread_exports_and_the_api(admin_client, simulation, channel,
                                                                               tmp_path):
    simulated = simulation.chat("user")
    simulation.say(simulated, "hi")
    Chat.objects.create(channel=channel, source_type="group", line_id=ev.DEFAULT_GROUP_ID, display_name="Real one")
    chat = simulated.chat()
    only_simulated = admin_client.get("/admin/conversations/chat/?channel__is_simulated__exact=1").content.decode()
    assert "Real one" not in only_simulated and str(chat) in only_simulated
    thread = admin_client.get(f"/admin/conversations/chat/{chat.pk}/thread/").content.decode()
    assert "badge-simulated" in thread and f"?chat={simulated.pk}" in thread and "Compare presets" in thread
    output = tmp_path / "all.jsonl"
    call_command("export_conversations", "--since", "2000-01-01", "--until", "2100-01-01", "--output", str(output))
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert {row["simulated"] for row in rows} == {True}
    api = admin_client.get("/api/v1/chats/").json()["results"]
    assert {row["display_name"]: row["simulated"] for row in api} == {"Real one": False, str(chat): True}


def test_the_dashboard_can_leave_simulated_chats_out(admin_client, simulation, channel, make_chat, make_message):
    from django.core.cache import cache

    simulated = simulation.chat("user")
    simulation.say(simulated, "hi")
    make_message(make_chat(ev.DEFAULT_GROUP_ID), "a real one")
    cache.clear()
    page = admin_client.get("/admin/").content.decode()
    hidden = admin_client.get("/admin/?simulated=hide").content.decode()
    figure = lambda html: html.split('class="figure-big">')[1].split("<")[0]  # noqa: E731
    assert (figure(page), figure(hidden)) == ("4", "1")  # the simulated chat's notice, message and answer
    assert "Try the bot in the simulator" in page and "leave them out" in page and "count them" in hidden


def test_the_channel_form_keeps_simulated_channels_simulated(admin_client, sandbox):
    page = admin_client.get(f"/admin/conversations/linechannel/{sandbox.pk}/change/").content.decode()
    assert 'name="is_simulated"' not in page  # read-only once the channel exists
    assert 'name="is_simulated"' in admin_client.get("/admin/conversations/linechannel/add/").content.decode()
    form = {"name": "Another sandbox", "slug": "sandbox-2", "channel_secret": "s", "access_token": "t",
            "mask_before_cloud": "on", "language": "en", "notice_enabled": "on", "non_text_reply_enabled": "on",
            "is_simulated": "on"}
    response = admin_client.post("/admin/conversations/linechannel/add/", {**form, "is_default": "on"})
    assert response.status_code == 200 and "cannot be the default" in response.content.decode()
    assert admin_client.post("/admin/conversations/linechannel/add/", form).status_code == 302
    assert LineChannel.objects.get(slug="sandbox-2").is_simulated


def test_a_reply_token_older_than_a_minute_is_not_used_by_the_bot_either(simulation, settings):
    # The pipeline's own age limit is shorter than the emulator's, so a late answer is pushed.
    simulated = simulation.chat("user")
    settings.LINEBOT = {**settings.LINEBOT, "REPLY_TOKEN_MAX_AGE": 0}
    simulation.say(simulated, "late")
    sends = EmulatorCall.objects.filter(endpoint__in=["reply", "push"]).values_list("endpoint", "answer__message_type")
    assert list(sends) == [("reply", "notice"), ("push", "text")]  # the notice went with the follow, in time
    assert SimulatedEvent.objects.get(event_type="message").reply_used_at is None


def test_a_quote_token_shows_the_quoted_message(simulation, sandbox):
    from linebot.v3.messaging import PushMessageRequest, TextMessage

    from conversations.line.client import client_for

    simulated = simulation.chat("group", member_names=["Ann"])
    # Kept, though not addressed to the bot: with group memory "addressed" the bot would have
    # nothing of the message its push quotes, and the quote would show no text.
    Chat.objects.filter(line_id=simulated.line_id).update(group_memory="everything")
    simulation.say(simulated, "is the shop open on Sunday?")
    token = SimulatedEvent.objects.get(event_type="message").quote_token
    client_for(sandbox).api.push_message(PushMessageRequest(to=simulated.line_id, messages=[
        TextMessage(text="Yes, 10:00 to 18:00.", quote_token=token), TextMessage(text="Anything else?")]))
    notice, bot = items(simulated, "bot")
    assert notice["message_type"] == "notice"  # the join's
    assert (bot["via"], bot["message_type"]) == ("push", "")
    assert bot["bubbles"] == [
        {"type": "text", "text": "Yes, 10:00 to 18:00.", "quote": {"speaker": "Ann", "text": "is the shop open on Sunday?"}},
        {"type": "text", "text": "Anything else?"},
    ]
    # Not an answer from the log (no retry key of one): the emulator kept these texts itself.
    assert [m.get("text") for m in EmulatorCall.objects.get(endpoint="push").messages] == [
        "Yes, 10:00 to 18:00.", "Anything else?"]


def test_the_web_process_serves_the_simulator_without_importing_line_bot_sdk():
    # line-bot-sdk costs seconds and tens of MB; only a worker calling the emulator loads it.
    import subprocess
    import sys

    code = ("import django; django.setup(); import linebot_site.urls; "
            "import conversations.simulator.views, conversations.simulator.services, conversations.tasks; "
            "import sys; print(sorted(m for m in sys.modules if m.startswith('linebot.')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env={**__import__("os").environ, "DJANGO_SETTINGS_MODULE": "tests.settings"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_notice_shows_first_however_long_the_member_waits_to_write(simulation):
    # The page once showed only calls from a minute before the first member message on.
    simulated = simulation.chat("user")
    earlier = timezone.now() - timedelta(minutes=30)
    Message.objects.filter(message_type="notice").update(event_at=earlier)
    EmulatorCall.objects.update(created_at=earlier)
    simulation.say(simulated, "hi")
    assert [b["message_type"] for b in items(simulated, "bot")] == ["notice", "text"]


def test_a_video_in_a_one_to_one_chat_gets_the_automatic_answer_marked_as_the_bots_own(simulation, ollama_server):
    simulated = simulation.chat("user")
    simulation.say(simulated, message_type="video")
    reply = Message.objects.get(message_type="non_text_reply")
    notice, bot = items(simulated, "bot")
    assert (bot["message_type"], bot["answer_id"], bot["bubbles"]) == (
        "non_text_reply", reply.pk, [{"type": "text", "text": reply.text}])
    assert [(i["type"], i["status"]) for i in items(simulated, "own_text")] == [
        ("notice", "replied"), ("non_text_reply", "replied")]
    assert items(simulated, "answer") == [], "no model wrote it: no figures, no apology"
    assert ollama_server.chat_requests == []


def test_a_simulated_photo_without_an_upload_is_asked_of_the_emulator_never_of_line(simulation, ollama_server,
                                                                                       settings):
    settings.LINE_DATA_API_HOST = "http://127.0.0.1:9"  # a fetch would fail loudly here, not reach LINE
    simulated = simulation.chat("user")
    simulation.say(simulated, message_type="image")
    reply = Message.objects.get(message_type="non_text_reply")
    assert reply.text.startswith("I could not get your photo") or reply.text.startswith("我拿不到您的圖片")
    # Nothing was uploaded: the emulator answers as LINE does for an unknown or expired content id.
    assert "no such content" in Message.objects.get(message_type="image").error
    assert EmulatorCall.objects.filter(endpoint="content").values_list("status", "simulated_chat").get() == (
        404, simulated.pk)
    assert ollama_server.chat_requests == []


def test_a_notice_not_sent_says_why_and_one_on_its_way_keeps_the_page_polling(simulation, sandbox,
                                                                              django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):  # the worker has not run yet
        simulated = services.create_simulated_chat(channel=sandbox, source_type="group", actor="test")
    data = timeline(simulated_chat=simulated)
    assert data["waiting"] and [(i["kind"], i["status"]) for i in data["items"]] == [("own_text", "pending")]
    Message.objects.filter(message_type="notice").update(status="skipped", skip_reason="reply token expired")
    data = timeline(simulated_chat=simulated)
    assert not data["waiting"]
    assert [(i["type"], i["status"], i["skip_reason"]) for i in data["items"]] == [
        ("notice", "skipped", "reply token expired")]


def test_after_optout_what_the_member_says_shows_as_not_stored(simulation):
    simulated = simulation.without_notice().chat("user", member_names=["Mei"])
    simulation.say(simulated, "/optout")
    simulation.say(simulated, "my number is 0912-345-678")
    users = items(simulated, "user")
    assert [(u["text"], u["status"], u["skip_reason"]) for u in users] == [
        ("/optout", "replied", ""), ("", "unstored", "opted out")]
    assert users[1]["speaker"] == "Mei" and users[1]["skip_reason_label"] == "the sender opted out"
    assert "0912" not in json.dumps(timeline(simulated_chat=simulated))

"""Comparing presets on a conversation: a background replay that sends nothing and logs nothing."""
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.core.exceptions import ValidationError
from django.utils import timezone

from conversations.models import Message
from conversations.simulator import compare
from conversations.simulator.models import ComparisonAnswer, PresetComparison
from core.models import AuditEvent
from models_registry.models import BackendKind, ModelBackend, SamplingPreset
from tests.fakes.openai_compat import FakeOpenAICompat
from tests.simulation import sandbox, simulation  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db
START = "/admin/conversations/presetcomparison/start/"


@pytest.fixture
def talked(simulation):
    """A 1:1 chat with three answered exchanges."""
    simulated = simulation.chat("user")
    for text in ("one", "two", "mail me at mei@example.com"):
        simulation.say(simulated, text)
    return simulated.chat()


@pytest.fixture
def terse(preset):
    return SamplingPreset.objects.create(name="Terse", backend=preset.backend, system_prompt="Be terse.",
                                         temperature=0.1)


def test_each_preset_answers_the_last_user_turns_side_by_side(admin_client, talked, preset, terse, ollama_server,
                                                              django_capture_on_commit_callbacks):
    logged = Message.objects.count()
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(f"{START}?chat={talked.pk}", {"presets": [preset.pk, terse.pk], "exchanges": 2})
    comparison = PresetComparison.objects.get()
    assert response.url == f"/admin/conversations/presetcomparison/{comparison.pk}/"
    assert (comparison.state, comparison.done, comparison.total) == ("done", 4, 4)
    assert Message.objects.count() == logged, "a replay stores nothing in the conversation log"
    report = admin_client.get(f"/admin/conversations/presetcomparison/{comparison.pk}/progress/").json()
    assert [column["name"] for column in report["presets"]] == ["Default", "Terse"]
    assert [row["text"] for row in report["rows"]] == ["two", "mail me at mei@example.com"]
    first = report["rows"][0]
    assert [cell["text"] for cell in first["answers"]] == ["echo: two", "echo: two"]
    assert all(cell["latency_ms"] is not None and cell["completion_tokens"] for cell in first["answers"])
    assert first["original"]["text"] == "echo: two" and "compare-table" in report["table"]
    # Each turn had the history it had in the log, and each preset its own system prompt.
    replays = ollama_server.chat_requests[-4:]
    assert [r["messages"][0]["content"] for r in replays] == ["You are a test bot.", "Be terse."] * 2
    assert [m["content"] for m in replays[0]["messages"][1:]] == ["one", "echo: one", "two"]
    assert replays[1]["options"]["temperature"] == 0.1
    read = AuditEvent.objects.filter(action="view_conversation", target_id=str(talked.pk),
                                     details__what="preset comparison")
    assert [(e.details["presets"], e.details["exchanges"]) for e in read if "presets" in e.details] == [
        (["Default", "Terse"], 2)]


def test_local_only_and_masking_apply_as_when_answering(talked, preset, admin_user):
    with FakeOpenAICompat(models=("cloud-model",)) as cloud_server:
        cloud = ModelBackend.objects.create(name="Cloud", kind=BackendKind.OPENAI_COMPATIBLE, base_url=cloud_server.url
                                            + "/v1", model="cloud-model", is_local=False, timeout=5)
        hosted = SamplingPreset.objects.create(name="Hosted", backend=cloud)
        comparison = compare.start_comparison(chat=talked, presets=[preset, hosted], exchanges=1, actor=admin_user)
        compare.run_comparison(comparison_id=comparison.pk)
        sent = cloud_server.last("chat").json["messages"]
        assert sent[-1]["content"] == "mail me at [EMAIL]"  # masked for a cloud backend
        talked.local_only = True
        talked.save()
        again = compare.start_comparison(chat=talked, presets=[preset, hosted], exchanges=1, actor=admin_user)
        compare.run_comparison(comparison_id=again.pk)
        cells = {a.preset.name: a for a in again.answers.all()}
        assert cells["Default"].text == "echo: mail me at mei@example.com" and cells["Default"].backend_is_local
        assert "local-only" in cells["Hosted"].error
        column = compare.comparison_report(comparison=again)["presets"][1]
        assert column["backends"] == [{"name": "Cloud", "model": "cloud-model", "local": False, "used": False}]


def test_a_comparison_can_be_cancelled_between_steps(talked, preset, terse, admin_user, monkeypatch):
    comparison = compare.start_comparison(chat=talked, presets=[preset, terse], exchanges=3, actor=admin_user)
    real_generate = compare.generate

    def generate_then_cancel(**kwargs):
        compare.cancel_comparison(comparison=comparison)
        return real_generate(**kwargs)

    monkeypatch.setattr(compare, "generate", generate_then_cancel)
    compare.run_comparison(comparison_id=comparison.pk)
    comparison.refresh_from_db()
    assert (comparison.state, comparison.done, comparison.answers.count()) == ("cancelled", 1, 1)
    compare.run_comparison(comparison_id=comparison.pk)  # a cancelled one never runs again
    assert comparison.answers.count() == 1


def test_cancel_from_the_page_and_a_rerun_repeats_nothing(admin_client, talked, preset, terse, admin_user):
    comparison = compare.start_comparison(chat=talked, presets=[preset, terse], exchanges=1, actor=admin_user)
    compare.run_comparison(comparison_id=comparison.pk)
    PresetComparison.objects.filter(pk=comparison.pk).update(state="running")  # a task delivered twice
    compare.run_comparison(comparison_id=comparison.pk)
    assert ComparisonAnswer.objects.count() == 2
    queued = compare.start_comparison(chat=talked, presets=[preset, terse], exchanges=1, actor=admin_user)
    admin_client.post(f"/admin/conversations/presetcomparison/{queued.pk}/cancel/")
    queued.refresh_from_db()
    assert queued.state == "cancelled"
    compare.run_comparison(comparison_id=queued.pk)
    assert not queued.answers.exists()


def test_what_a_comparison_refuses(talked, preset, terse, admin_user, channel):
    with pytest.raises(ValidationError, match="between 2"):
        compare.start_comparison(chat=talked, presets=[preset, preset], exchanges=2, actor=admin_user)
    with pytest.raises(ValidationError, match="between 1 and 10"):
        compare.start_comparison(chat=talked, presets=[preset, terse], exchanges=11, actor=admin_user)
    from conversations.models import Chat
    quiet = Chat.objects.create(channel=channel, source_type="group", line_id="C" + "9" * 32)
    with pytest.raises(ValidationError, match="no answered messages"):
        compare.start_comparison(chat=quiet, presets=[preset, terse], exchanges=2, actor=admin_user)


def test_replayed_answers_are_kept_a_day_and_hidden_once_their_turn_is_redacted(talked, preset, terse, admin_user):
    from conversations import redaction

    comparison = compare.start_comparison(chat=talked, presets=[preset, terse], exchanges=1, actor=admin_user)
    compare.run_comparison(comparison_id=comparison.pk)
    redaction.redact_messages(message_ids=comparison.message_ids, actor="test", reason="PII")
    row = compare.comparison_report(comparison=comparison)["rows"][0]
    assert row["text"] == "(no longer in the log)" and {cell["text"] for cell in row["answers"]} == {""}
    PresetComparison.objects.filter(pk=comparison.pk).update(created_at=timezone.now() - timedelta(days=2))
    assert compare.purge_expired_comparisons() >= 1
    assert not ComparisonAnswer.objects.exists()


def test_comparing_needs_the_playgrounds_permission(client, talked, preset, terse):
    viewer = User.objects.create_user("viewer", password="pw-for-a-viewer", is_staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(codename__in=["view_chat", "view_message",
                                                                         "view_samplingpreset"]))
    client.force_login(viewer)
    assert client.get(f"{START}?chat={talked.pk}").status_code == 403
    assert client.post(f"{START}?chat={talked.pk}", {"presets": [preset.pk, terse.pk], "exchanges": 1}
                       ).status_code == 403
    assert not PresetComparison.objects.exists()
    assert client.get("/admin/conversations/presetcomparison/").status_code == 403

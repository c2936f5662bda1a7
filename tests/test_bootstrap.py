"""First run: `manage.py bootstrap` creates defaults once; secrets are encrypted at rest."""
import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django_q.models import Schedule

from conversations.models import LineChannel
from conversations.queue import SWEEP_TASK
from models_registry.models import ModelBackend, SamplingPreset

pytestmark = pytest.mark.django_db


def run_bootstrap(capsys) -> str:
    call_command("bootstrap")
    return capsys.readouterr().out


def test_bootstrap_creates_defaults_once(settings, capsys, monkeypatch):
    settings.LINE_CHANNEL_SECRET = "env-secret"
    settings.LINE_CHANNEL_ACCESS_TOKEN = "env-token"
    settings.OLLAMA_HOST = "http://ollama.internal:11434"
    monkeypatch.delenv("ADMIN_PASSWORD", raising=False)
    out = run_bootstrap(capsys)
    assert "Log in at /admin/ as 'admin' with password" in out
    backend = ModelBackend.objects.get()
    assert (backend.kind, backend.base_url, backend.is_local) == ("ollama", "http://ollama.internal:11434", True)
    assert SamplingPreset.objects.get().is_default
    channel = LineChannel.objects.get(is_simulated=False)
    assert (channel.slug, channel.is_default, channel.channel_secret) == ("default", True, "env-secret")
    assert get_user_model().objects.filter(is_superuser=True).count() == 1
    assert Schedule.objects.filter(func=SWEEP_TASK).count() == 1

    assert run_bootstrap(capsys).strip() == "Nothing to do: everything is set up."
    assert ModelBackend.objects.count() == 1 and SamplingPreset.objects.count() == 1
    assert Schedule.objects.filter(func=SWEEP_TASK).count() == 1


def test_bootstrap_takes_a_rotated_token_from_the_environment(settings, capsys):
    settings.LINE_CHANNEL_SECRET, settings.LINE_CHANNEL_ACCESS_TOKEN = "s1", "t1"
    run_bootstrap(capsys)
    settings.LINE_CHANNEL_ACCESS_TOKEN = "t2"
    assert "Updated the 'default' LINE channel" in run_bootstrap(capsys)
    assert LineChannel.objects.get(slug="default").access_token == "t2"


def test_bootstrap_without_line_credentials_says_what_to_set(settings, capsys):
    settings.LINE_CHANNEL_SECRET = settings.LINE_CHANNEL_ACCESS_TOKEN = ""
    assert "set LINE_CHANNEL_SECRET and LINE_CHANNEL_ACCESS_TOKEN" in run_bootstrap(capsys)
    assert not LineChannel.objects.filter(is_simulated=False).exists()


def test_admin_password_from_the_environment_is_not_printed(capsys, monkeypatch):
    monkeypatch.setenv("ADMIN_PASSWORD", "correct-horse-battery")
    out = run_bootstrap(capsys)
    assert "correct-horse-battery" not in out
    assert get_user_model().objects.get().check_password("correct-horse-battery")


def test_secrets_are_encrypted_in_the_database():
    LineChannel.objects.create(name="c", slug="c", channel_secret="plain-secret-123", access_token="plain-token-456")
    ModelBackend.objects.create(name="r", kind="replicate", base_url="http://x", model="a/b", api_key="r8_plainkey")
    with connection.cursor() as cursor:
        cursor.execute("SELECT channel_secret, access_token FROM conversations_linechannel")
        raw_channel = cursor.fetchone()
        cursor.execute("SELECT api_key FROM models_registry_modelbackend")
        raw_key = cursor.fetchone()[0]
    assert "plain-secret-123" not in raw_channel[0] and "plain-token-456" not in raw_channel[1]
    assert raw_channel[0].startswith("gAAAA") and "r8_plainkey" not in raw_key
    assert LineChannel.objects.get().channel_secret == "plain-secret-123"


def test_bootstrap_makes_operator_and_viewer_groups(capsys):
    from django.contrib.auth.models import Group

    run_bootstrap(capsys)
    viewers = set(Group.objects.get(name="Viewers").permissions.values_list("codename", flat=True))
    operators = set(Group.objects.get(name="Operators").permissions.values_list("codename", flat=True))
    assert {"view_message", "view_chat", "view_modelbackend"} <= viewers
    assert not any(code.startswith(("change_", "add_", "delete_")) for code in viewers)
    assert {"change_modelbackend", "change_message", "change_linechannel"} <= operators

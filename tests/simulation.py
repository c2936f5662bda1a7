"""Fixtures for the simulator's tests: a Sandbox channel and a way to play a chat in it.

Import them into a test module: `from tests.simulation import sandbox, simulation  # noqa: F401`.
"""
import pytest

from conversations.models import LineChannel
from conversations.simulator import services

SANDBOX_SECRET = "5a" * 16
SANDBOX_TOKEN = "sandbox-access-token-only-the-emulator-reads"
SANDBOX_BOT = "U" + "5b" * 16


@pytest.fixture
def sandbox(db):
    return LineChannel.objects.create(name="Sandbox", slug="sandbox", channel_secret=SANDBOX_SECRET,
                                      access_token=SANDBOX_TOKEN, bot_user_id=SANDBOX_BOT, is_simulated=True)


class Simulation:
    """Plays chats in the sandbox as an operator would, running what the webhook queues."""

    def __init__(self, channel, actor, capture) -> None:
        self.channel = channel
        self.actor = actor
        self.capture = capture

    def without_notice(self) -> "Simulation":
        """The channel sends no privacy notice on follow and join: for tests about something
        else, where its reply would be one more LINE call and bubble to step over."""
        self.channel.notice_enabled = False
        self.channel.save(update_fields=["notice_enabled"])  # and the webhook's cached channels forgotten
        return self

    def chat(self, source_type: str = "user", **kwargs):
        with self.capture(execute=True):
            return services.create_simulated_chat(channel=self.channel, source_type=source_type, actor=self.actor,
                                                  **kwargs)

    def say(self, simulated, text: str = "", *, member=None, **kwargs):
        member = member or simulated.members.filter(left_at__isnull=True).first()
        with self.capture(execute=True):
            return services.send_message(simulated_chat=simulated, member=member, text=text, actor=self.actor,
                                         **kwargs)


@pytest.fixture
def simulation(sandbox, preset, admin_user, django_capture_on_commit_callbacks):
    """The sandbox with the default preset (a fake Ollama), played by a superuser."""
    return Simulation(sandbox, admin_user, django_capture_on_commit_callbacks)

"""The dashboard's setup checklist: what a new installation still needs before LINE users get answers."""
from dataclasses import dataclass
from datetime import datetime

from django.http import HttpRequest
from django.utils import timezone

from models_registry.selectors import BackendHealth, backend_health

from . import selectors
from .channel_status import ChannelStatus, channel_statuses


@dataclass(frozen=True)
class SetupChecklist:
    backends: list[BackendHealth]
    channels: list[ChannelStatus]  # the default channel first
    workers: int

    @property
    def channel(self) -> ChannelStatus | None:
        """The channel the steps are about: the default one (or the only one)."""
        return self.channels[0] if self.channels else None

    @property
    def answering_backend(self) -> BackendHealth | None:
        return next((health for health in self.backends if health.ok), None)

    @property
    def steps(self) -> dict[str, bool]:
        channel = self.channel
        return {
            "backend": self.answering_backend is not None,
            "channel": bool(channel and channel.line and channel.line.ok),
            "webhook_url": bool(channel and not channel.webhook_url_problem),
            "first_event": bool(channel and channel.state == "receiving"),
            "worker": self.workers > 0,
        }

    @property
    def done_count(self) -> int:
        return sum(self.steps.values())

    @property
    def done(self) -> bool:
        return all(self.steps.values())


def setup_checklist(*, request: HttpRequest | None, now: datetime | None = None) -> SetupChecklist:
    """Calls no one but the model backends, through their cached health checks."""
    now = now or timezone.now()
    return SetupChecklist(
        backends=backend_health() or [],
        channels=channel_statuses(request=request, now=now),
        workers=selectors.workers_alive(now=now),
    )

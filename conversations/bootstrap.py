"""First-run defaults: a channel from the environment, the simulator's Sandbox, a local backend and
preset, an admin."""
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.db import transaction

from models_registry.models import BackendKind, ModelBackend, SamplingPreset

from . import sweeper
from .models import LineChannel

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant in a LINE chat. Answer briefly and in the language the user writes in "
    "(Traditional Chinese for Chinese, Japanese for Japanese)."
)


@transaction.atomic
def bootstrap(*, admin_username: str, admin_password: str | None) -> list[str]:
    """Creates what is missing and changes nothing that exists; returns what it did."""
    report: list[str] = []
    backend = ModelBackend.objects.first()
    if backend is None:
        backend = ModelBackend.objects.create(
            name="Local Ollama",
            kind=BackendKind.OLLAMA,
            base_url=settings.OLLAMA_HOST,
            model=settings.OLLAMA_DEFAULT_MODEL,
            is_local=True,
        )
        report.append(f"Created backend {backend}.")
    if not SamplingPreset.objects.exists():
        preset = SamplingPreset.objects.create(
            name="Default", backend=backend, system_prompt=DEFAULT_SYSTEM_PROMPT, is_default=True
        )
        report.append(f"Created the default preset {preset.name!r}.")
    report += _default_channel()
    report += _sandbox_channel()
    report += _admin_account(username=admin_username, password=admin_password)
    report += _groups()
    sweeper.ensure_schedules()
    return report


def _default_channel() -> list[str]:
    secret, token = settings.LINE_CHANNEL_SECRET, settings.LINE_CHANNEL_ACCESS_TOKEN
    if not (secret and token):
        if LineChannel.objects.filter(is_simulated=False).exists():
            return []
        return ["No LINE channel yet: set LINE_CHANNEL_SECRET and LINE_CHANNEL_ACCESS_TOKEN, or add one in the admin."]
    channel = LineChannel.objects.filter(slug="default").first()
    if channel is None:
        LineChannel.objects.create(
            name="Default channel",
            slug="default",
            channel_secret=secret,
            access_token=token,
            is_default=not LineChannel.objects.filter(is_default=True).exists(),
        )
        return ["Created the LINE channel 'default' from the environment; webhook URL: /line/webhook/"]
    if channel.channel_secret != secret or channel.access_token != token:
        channel.channel_secret, channel.access_token = secret, token
        channel.save(update_fields=["channel_secret", "access_token", "updated_at"])
        return ["Updated the 'default' LINE channel's secret and token from the environment."]
    return []


SIMULATOR_PATH = "/admin/conversations/simulatedchat/"


def _sandbox_channel() -> list[str]:
    """The simulator's channel: a generated secret, and an access token only the emulator reads."""
    if LineChannel.objects.filter(is_simulated=True).exists():
        return []
    slug = "sandbox" if not LineChannel.objects.filter(slug="sandbox").exists() else f"sandbox-{secrets.token_hex(3)}"
    LineChannel.objects.create(
        name="Sandbox", slug=slug, is_simulated=True, channel_secret=secrets.token_hex(16),
        access_token=secrets.token_urlsafe(32), bot_user_id="U" + secrets.token_hex(16),
    )
    return [f"Created the Sandbox channel: sign in and open the Simulator ({SIMULATOR_PATH}) to talk to the bot."]


GROUP_APPS = ("core", "conversations", "models_registry")


def _groups() -> list[str]:
    """"Operators" may change everything in the console; "Viewers" may only read it."""
    made = []
    for name, actions in (("Operators", ("view", "add", "change", "delete")), ("Viewers", ("view",))):
        group, created = Group.objects.get_or_create(name=name)
        wanted = Permission.objects.filter(content_type__app_label__in=GROUP_APPS,
                                           codename__regex=rf"^({'|'.join(actions)})_")
        group.permissions.add(*wanted)
        if created:
            made.append(f"Created the {name!r} group; add staff users to it in the admin.")
    return made


def _admin_account(*, username: str, password: str | None) -> list[str]:
    User = get_user_model()
    if User.objects.filter(is_superuser=True).exists():
        return []
    generated = password is None
    password = password or secrets.token_urlsafe(12)
    User.objects.create_superuser(username=username, email="", password=password)
    lines = [f"Created the admin account {username!r}."]
    if generated:
        lines.append(f"Log in at /admin/ as {username!r} with password {password} (shown once; change it there).")
    else:
        lines.append(f"Log in at /admin/ as {username!r} with the password from ADMIN_PASSWORD.")
    return lines

"""System checks for settings the bot cannot be safe without."""
from django.conf import settings
from django.core.checks import Warning, register

KEYS = ("SECRET_KEY", "FIELD_ENCRYPTION_KEY", "AUDIT_HMAC_KEY")


def unset_keys() -> list[str]:
    """The keys left empty or at settings' public "django-insecure-" fallbacks."""
    values = {name: getattr(settings, name) for name in KEYS}
    return [name for name, value in values.items() if not value or value.startswith("django-insecure-")]


@register(deploy=True)
def encryption_key_check(app_configs, **kwargs):
    if settings.FIELD_ENCRYPTION_KEY:
        return []
    return [
        Warning(
            "FIELD_ENCRYPTION_KEY is not set: secrets at rest are encrypted with a key derived from SECRET_KEY.",
            hint="Generate one with `manage.py generate_encryption_key` and set FIELD_ENCRYPTION_KEY.",
            id="linebot.W001",
        )
    ]

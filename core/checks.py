"""System checks for settings the bot cannot be safe without."""
from django.conf import settings
from django.core.checks import Warning, register


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

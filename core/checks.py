"""System checks for settings the bot cannot be safe without."""
from cryptography.fernet import Fernet
from django.conf import settings
from django.core.checks import Error, Tags, register

KEYS = ("SECRET_KEY", "FIELD_ENCRYPTION_KEY", "AUDIT_HMAC_KEY")


def unset_keys() -> list[str]:
    """The keys left empty or at settings' public "django-insecure-" fallbacks."""
    values = {name: getattr(settings, name) for name in KEYS}
    return [name for name, value in values.items() if not value or value.startswith("django-insecure-")]


# Not deploy-only, so runserver, migrate, qcluster and `manage.py check` all refuse; tagged
# security so wsgi.py can run it too, as gunicorn runs no checks.
@register(Tags.security)
def keys_check(app_configs, **kwargs):
    errors = []
    missing = unset_keys()
    if missing and not settings.DEBUG:
        errors.append(
            Error(
                f"{', '.join(missing)} not set: with DEBUG off the site will not run on the public development "
                "keys (nor on any \"django-insecure-\" one), under which anyone holding the database could "
                "decrypt its secrets.",
                hint=(
                    f"Run `manage.py generate_keys` to write random ones, once, to {settings.KEYS_FILE} "
                    "(settings read it; `make run` does this). Or set them in the environment: "
                    "FIELD_ENCRYPTION_KEY from `manage.py generate_encryption_key`, the others any long random "
                    "string. Keep them: without FIELD_ENCRYPTION_KEY the stored secrets cannot be decrypted. "
                    "DEBUG=true runs without them, for development only."
                ),
                id="linebot.E001",
            )
        )
    if settings.FIELD_ENCRYPTION_KEY and not _are_fernet_keys(settings.FIELD_ENCRYPTION_KEY):
        errors.append(
            Error(
                "FIELD_ENCRYPTION_KEY is not a comma-separated list of Fernet keys.",
                hint="Generate one with `manage.py generate_encryption_key`.",
                id="linebot.E002",
            )
        )
    return errors


def _are_fernet_keys(value: str) -> bool:
    keys = [key.strip() for key in value.split(",") if key.strip()]
    try:
        return bool(keys) and all(Fernet(key) for key in keys)
    except ValueError:
        return False

"""manage.py generate_keys — write random keys, once, to KEYS_FILE (.env.local) for settings to read."""
import os
import secrets

from cryptography.fernet import Fernet
from django.conf import settings
from django.core.management.base import BaseCommand

from core.checks import unset_keys

HEADER = """\
# This installation's keys, written once by `manage.py generate_keys`; the environment
# overrides them. Keep this file with the database and back it up: without its
# FIELD_ENCRYPTION_KEY the stored secrets cannot be decrypted.
"""

MAKERS = {
    "SECRET_KEY": lambda: secrets.token_urlsafe(50),
    "FIELD_ENCRYPTION_KEY": lambda: Fernet.generate_key().decode(),
    "AUDIT_HMAC_KEY": lambda: secrets.token_urlsafe(32),
}


class Command(BaseCommand):
    help = (
        "Writes random SECRET_KEY, FIELD_ENCRYPTION_KEY and AUDIT_HMAC_KEY to KEYS_FILE (default .env.local), "
        "mode 0600, for those neither the environment nor the file sets. Never changes a key."
    )
    # It is the fix the check linebot.E001 suggests, so it has to run without keys.
    requires_system_checks = []

    def handle(self, *args, **options):
        path = settings.KEYS_FILE
        missing = unset_keys()
        # O_APPEND keeps whatever is there; the mode is set on the descriptor so the keys
        # are never readable by others, not even for a moment.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "r+") as file:
            os.fchmod(fd, 0o600)
            text = file.read()
            if not text:
                file.write(HEADER)
            elif not text.endswith("\n"):
                file.write("\n")
            for name in missing:
                file.write(f"{name}={MAKERS[name]()}\n")
        if missing:
            self.stdout.write(f"Wrote {', '.join(missing)} to {path}; keep it with the database.")
        else:
            self.stdout.write(f"Nothing to do: every key is set ({path} or the environment).")

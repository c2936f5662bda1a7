"""Secrets at rest: a text field encrypted with MultiFernet under FIELD_ENCRYPTION_KEY."""
import base64
import hashlib
from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models


@cache
def _fernet() -> MultiFernet:
    raw = settings.FIELD_ENCRYPTION_KEY
    if raw:
        keys = [key.strip() for key in raw.split(",") if key.strip()]
    else:
        # Without a dedicated key, derive one from SECRET_KEY for DEBUG; outside it the
        # system check `linebot.E001` refuses to run without a real one.
        digest = hashlib.sha256(b"linebot-field-encryption:" + settings.SECRET_KEY.encode()).digest()
        keys = [base64.urlsafe_b64encode(digest).decode()]
    try:
        return MultiFernet([Fernet(key) for key in keys])
    except ValueError as exc:
        raise ImproperlyConfigured(
            "FIELD_ENCRYPTION_KEY must be one or more comma-separated Fernet keys "
            "(generate one with `manage.py generate_encryption_key`)."
        ) from exc


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise ImproperlyConfigured(
            "A stored secret cannot be decrypted with FIELD_ENCRYPTION_KEY; "
            "keep the old key in the list (newest first) when rotating."
        ) from exc


class EncryptedTextField(models.TextField):
    """Stores Fernet ciphertext; Python code sees the plain string.

    Decrypted values are never part of the field's repr, so they stay out of logs.
    """

    def from_db_value(self, value, expression, connection):
        if value in (None, ""):
            return value
        return decrypt(value)

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        if value in (None, ""):
            return value
        return encrypt(value)

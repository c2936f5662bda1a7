"""On SQLite, text that redaction, erasure or the purge removed leaves no copy in the WAL."""
import uuid
from pathlib import Path

import pytest
from django.db import connection

from conversations import erasure, redaction, retention

ALICE = "U" + "a1" * 16

# The checkpoint runs after commit, which a test wrapped in a transaction never reaches.
pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "sqlite", reason="the WAL is SQLite's"),
]


def database_bytes(suffix: str = "") -> bytes:
    path = Path(connection.settings_dict["NAME"] + suffix)
    return path.read_bytes() if path.exists() else b""


def redact(message) -> None:
    redaction.redact_messages(message_ids=[message.pk], actor="shell:test", reason="test")


def erase(message) -> None:
    erasure.erase_user(line_user_id=ALICE, actor="shell:test")


def purge(message) -> None:
    retention.purge_expired()


@pytest.mark.parametrize("remove", [redact, erase, purge])
def test_removed_text_is_gone_from_the_wal_and_the_database_file(make_chat, make_message, remove):
    marker = f"marker-{uuid.uuid4().hex}"
    chat = make_chat("C" + "0d" * 16, retention_days=5)
    message = make_message(chat, f"my secret {marker}", user=ALICE, days_ago=10)
    assert marker.encode() in database_bytes("-wal") + database_bytes()
    remove(message)
    assert marker.encode() not in database_bytes("-wal")
    assert marker.encode() not in database_bytes()

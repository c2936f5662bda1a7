"""No media file outlives its message: retention, redaction, erasure (and /forgetme, which runs
it), chat and channel deletion; exports carry the files and verify them. Files go only once
the deleting transaction commits, and one left behind is swept by the next purge."""
import hashlib
import json
import os
import time
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from conversations import chats, erasure, exports, redaction, retention
from conversations.media.files import store_media, sweep_orphans
from conversations.media.models import MediaKind, MessageMedia
from conversations.media.storage import media_storage
from conversations.models import LineChannel, Message, PrivacyPolicy
from tests.fakes.media import image_bytes, m4a_bytes

# Real commits: files go only once the deleting transaction commits, which a test wrapped in
# one transaction never reaches.
pytestmark = pytest.mark.django_db(transaction=True)

ALICE = "U" + "a" * 32
GROUP = "C" + "b" * 32


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.LINEBOT_MEDIA_ROOT = tmp_path / "media"
    return settings.LINEBOT_MEDIA_ROOT


@pytest.fixture
def with_photo(make_message):
    def make(chat, *, days_ago=0, user=ALICE, kind=MediaKind.IMAGE):
        message = make_message(chat, "", days_ago=days_ago, user=user, message_type=kind)
        data = image_bytes("JPEG", exif=True) if kind == MediaKind.IMAGE else m4a_bytes()
        return store_media(message=message, kind=kind, data=data)
    return make


def files(root) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()} if root.exists() else set()


def test_retention_deletes_files_once_the_batch_commits(make_chat, with_photo, media_root):
    chat = make_chat(ALICE, source_type="user", retention_days=30)
    old, recent = with_photo(chat, days_ago=40), with_photo(chat, days_ago=1)
    report = retention.purge_expired()
    assert report.messages == 1
    assert files(media_root) == {recent.file.name}
    assert not MessageMedia.objects.filter(pk=old.pk).exists()


def test_a_rolled_back_purge_loses_no_file(make_chat, with_photo, media_root):
    media = with_photo(make_chat(ALICE, source_type="user"))
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            retention.delete_messages([media.message_id])
            raise RuntimeError("the batch failed")
    assert files(media_root) == {media.file.name}
    assert MessageMedia.objects.filter(pk=media.pk).exists()


def test_a_file_that_could_not_be_deleted_goes_with_the_next_purge(make_chat, with_photo, media_root, monkeypatch,
                                                                    caplog):
    chat = make_chat(ALICE, source_type="user", retention_days=30)
    media = with_photo(chat, days_ago=40)
    storage = media_storage()
    real_delete = storage.delete
    monkeypatch.setattr(storage, "delete", lambda name: (_ for _ in ()).throw(OSError("disk went away")))
    retention.purge_expired()
    assert files(media_root) == {media.file.name}  # still there, and said so
    assert "the next purge retries it" in caplog.text
    monkeypatch.setattr(storage, "delete", real_delete)
    os.utime(media_root / media.file.name, (time.time() - 7200,) * 2)  # past the grace period
    report = retention.purge_expired()
    assert report.orphan_files == 1 and files(media_root) == set()


def test_the_sweep_spares_young_files_and_files_a_row_names(make_chat, with_photo, media_root):
    kept = with_photo(make_chat(ALICE, source_type="user"))
    storage = media_storage()
    # What a worker killed after writing its file, before committing its row, leaves behind.
    young = storage.save("2026/01/young.jpg", open(media_root / kept.file.name, "rb"))
    old = storage.save("2026/01/old.jpg", open(media_root / kept.file.name, "rb"))
    os.utime(media_root / old, (time.time() - 7200,) * 2)
    os.utime(media_root / kept.file.name, (time.time() - 7200,) * 2)
    assert sweep_orphans() == 1
    assert files(media_root) == {kept.file.name, young}


def test_redaction_deletes_the_file_and_marks_the_row(make_chat, with_photo, media_root):
    media = with_photo(make_chat(ALICE, source_type="user"))
    assert redaction.redact_messages(message_ids=[media.message_id], actor="shell:test", reason="a face") == 1
    media.refresh_from_db()
    assert media.redacted and not media.file and files(media_root) == set()
    assert Message.objects.get(pk=media.message_id).redacted


def test_erasure_takes_her_files_in_chats_and_groups_but_not_under_legal_hold(
        make_chat, with_photo, media_root):
    direct = with_photo(make_chat(ALICE, source_type="user"), kind=MediaKind.AUDIO)
    in_group = with_photo(make_chat(GROUP))
    someone_else = with_photo(make_chat(GROUP[:-1] + "c"), user="U" + "d" * 32)
    held = with_photo(make_chat(GROUP[:-1] + "e", legal_hold=True))
    erasure.erase_user(line_user_id=ALICE, actor="shell:test")
    assert files(media_root) == {someone_else.file.name, held.file.name}
    assert set(MessageMedia.objects.values_list("pk", flat=True)) == {someone_else.pk, held.pk}
    assert not {direct.pk, in_group.pk} & set(MessageMedia.objects.values_list("pk", flat=True))


def test_deleting_chats_and_channels_deletes_their_files(make_chat, with_photo, media_root, channel):
    first, second = with_photo(make_chat(ALICE, source_type="user")), with_photo(make_chat(GROUP))
    chats.delete_chats(chats=[first.message.chat], actor="shell:test")
    assert files(media_root) == {second.file.name}
    chats.delete_channels(channels=[channel], actor="shell:test")
    assert files(media_root) == set() and not LineChannel.objects.exists()


def test_export_user_hands_over_her_files_listed_with_their_hashes(make_chat, with_photo, make_message, tmp_path):
    photo = with_photo(make_chat(ALICE, source_type="user"))
    group = make_chat(GROUP)
    voice = with_photo(group, kind=MediaKind.AUDIO)
    gone = with_photo(group)
    redaction.redact_messages(message_ids=[gone.message_id], actor="shell:test", reason="test")
    with_photo(make_chat(GROUP[:-1] + "f"), user="U" + "d" * 32)  # not hers
    output = tmp_path / "alice.jsonl"
    manifest = exports.export_user(line_user_id=ALICE, output=output, actor="shell:test")
    entries = {entry["message_id"]: entry for entry in manifest["media"]}
    assert set(entries) == {photo.message_id, voice.message_id, gone.message_id}
    assert entries[gone.message_id]["redacted"] and "file" not in entries[gone.message_id]
    for media in (photo, voice):
        exported = tmp_path / entries[media.message_id]["file"]
        assert exported.parent.name == "alice.jsonl.media"
        assert hashlib.sha256(exported.read_bytes()).hexdigest() == entries[media.message_id]["sha256"] == media.sha256
        assert exported.stat().st_mode & 0o777 == 0o600
    assert json.loads(exports.manifest_path_for(output).read_text())["media"] == manifest["media"]
    assert exports.verify_export(manifest_path=exports.manifest_path_for(output)).ok


def test_verify_export_finds_a_changed_or_missing_media_file(make_chat, with_photo, tmp_path):
    photo = with_photo(make_chat(ALICE, source_type="user"))
    output = tmp_path / "all.jsonl"
    filters = exports.ConversationFilters(since=timezone.now() - timedelta(days=1), until=timezone.now() + timedelta(1))
    manifest = exports.export_conversations(filters=filters, fmt="jsonl", output=output, actor="shell:test")
    [entry] = manifest["media"]
    assert entry["message_id"] == photo.message_id
    exported = tmp_path / entry["file"]
    exported.write_bytes(exported.read_bytes() + b"!")
    check = exports.verify_export(manifest_path=exports.manifest_path_for(output))
    assert not check.ok and "does not match" in check.problems[0]
    exported.unlink()
    assert "missing" in exports.verify_export(manifest_path=exports.manifest_path_for(output)).problems[0]


def test_verify_export_refuses_a_manifest_pointing_outside_its_folder(make_chat, with_photo, tmp_path):
    with_photo(make_chat(ALICE, source_type="user"))
    output = tmp_path / "all.jsonl"
    filters = exports.ConversationFilters(since=timezone.now() - timedelta(days=1), until=timezone.now() + timedelta(1))
    exports.export_conversations(filters=filters, fmt="jsonl", output=output, actor="shell:test")
    manifest_path = exports.manifest_path_for(output)
    manifest = json.loads(manifest_path.read_text())
    manifest["media"][0]["file"] = "../../etc/passwd"
    manifest_path.write_text(json.dumps(manifest))
    check = exports.verify_export(manifest_path=manifest_path)
    assert not check.ok and "outside" in check.problems[0]


def test_an_export_without_media_has_no_media_folder(make_chat, make_message, tmp_path):
    make_message(make_chat(ALICE, source_type="user"), "hello", user=ALICE)
    output = tmp_path / "alice.jsonl"
    manifest = exports.export_user(line_user_id=ALICE, output=output, actor="shell:test")
    assert "media" not in manifest and not (tmp_path / "alice.jsonl.media").exists()

"""A media file's life: stored with its row, gone with its message.

Files are deleted only once the transaction that took their rows has committed
(`transaction.on_commit`), so a rolled-back purge loses nothing. A file whose deletion fails,
or one left by a worker killed between writing it and committing its row, is named by no row:
`sweep_orphans` (run by every purge) deletes it once it is older than a grace period. The
simulator's uploads (`SimulatedEvent.content`) live in the same storage and are swept alike.
"""
import hashlib
import logging
import time
from collections.abc import Iterable, Iterator

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import transaction

from core.images import sanitize_image

from ..models import Message
from ..simulator.models import SimulatedEvent
from .audio import audio_content_type
from .models import MediaKind, MessageMedia
from .storage import media_storage

logger = logging.getLogger(__name__)

EXTENSIONS = {"image/jpeg": ".jpg", "image/png": ".png", "audio/mp4": ".m4a"}
SWEEP_BATCH = 500


def store_media(*, message: Message, kind: str, data: bytes, image_set_id: str = "",
                image_set_index: int | None = None, image_set_total: int | None = None) -> MessageMedia:
    """Checks `data` (an image is cleaned: core.images), writes the file and its row.

    Raises images.ImageRejected or audio.AudioRejected, with nothing stored, for what is not
    what it claims to be. The file is written before the row; should the row not commit, the
    file is deleted, or (a killed process) swept later as an orphan.
    """
    width = height = None
    if kind == MediaKind.IMAGE:
        clean = sanitize_image(data)
        data, content_type, width, height = clean.data, clean.content_type, clean.width, clean.height
    elif kind == MediaKind.AUDIO:
        content_type = audio_content_type(data)
    else:
        raise ValueError(f"Unknown media kind {kind!r}.")
    media = MessageMedia(
        message=message, kind=kind, content_type=content_type, size=len(data),
        sha256=hashlib.sha256(data).hexdigest(), width=width, height=height,
        image_set_id=image_set_id[:64], image_set_index=image_set_index, image_set_total=image_set_total,
    )
    media.file.save(f"media{EXTENSIONS[content_type]}", ContentFile(data), save=False)
    try:
        with transaction.atomic():
            media.save()
    except BaseException:
        delete_files([media.file.name])
        raise
    return media


def forget_media(*, message_ids: Iterable[int]) -> int:
    """Deletes the media rows of these messages now and their files once this commits.

    Call it inside the transaction that deletes or blanks the messages."""
    rows = MessageMedia.objects.filter(message_id__in=list(message_ids))
    names = [name for name in rows.values_list("file", flat=True) if name]
    deleted = rows._raw_delete(rows.db)
    if names:
        transaction.on_commit(lambda: delete_files(names))
    return deleted


def redact_media(*, message_ids: Iterable[int]) -> int:
    """A redacted message's file goes (once this commits); its row stays, saying it was redacted."""
    rows = MessageMedia.objects.filter(message_id__in=list(message_ids), redacted=False)
    names = [name for name in rows.values_list("file", flat=True) if name]
    redacted = rows.update(file="", redacted=True)
    if names:
        transaction.on_commit(lambda: delete_files(names))
    return redacted


def delete_files(names: list[str]) -> None:
    """Deletes these files from the media storage; one that cannot be is left to the sweep."""
    storage = media_storage()
    for name in names:
        try:
            storage.delete(name)
        except Exception:
            # Its row is gone, so the next purge's sweep finds it and tries again.
            logger.exception("Could not delete media file %s; the next purge retries it", name)


def sweep_orphans(*, grace_seconds: float | None = None) -> int:
    """Deletes files that no row names and that are older than the grace period; returns how many.

    Reads the storage folder by folder and asks the database about a batch of names at a time."""
    grace = settings.LINEBOT_MEDIA["ORPHAN_GRACE_SECONDS"] if grace_seconds is None else grace_seconds
    storage = media_storage()
    cutoff = time.time() - grace
    deleted = 0
    batch: list[str] = []

    def flush() -> int:
        named = set(MessageMedia.objects.filter(file__in=batch).values_list("file", flat=True))
        # The simulator's uploads, which its emulator serves as LINE's content, are held by their event.
        named |= set(SimulatedEvent.objects.filter(content__in=batch).values_list("content", flat=True))
        orphans = [name for name in batch if name not in named and _older(storage, name, cutoff)]
        delete_files(orphans)
        batch.clear()
        return sum(1 for name in orphans if not storage.exists(name))

    for name in _walk(storage, ""):
        batch.append(name)
        if len(batch) >= SWEEP_BATCH:
            deleted += flush()
    if batch:
        deleted += flush()
    if deleted:
        logger.info("Media sweep: deleted %d files no message holds", deleted)
    return deleted


def _older(storage, name: str, cutoff: float) -> bool:
    try:
        return storage.get_modified_time(name).timestamp() < cutoff
    except (OSError, NotImplementedError):
        # Gone meanwhile, or a storage that keeps no times (Django's API allows it): a file whose
        # age is unknown is never taken for an orphan; the next sweep looks again.
        return False


def _walk(storage, folder: str) -> Iterator[str]:
    try:
        folders, files = storage.listdir(folder)
    except FileNotFoundError:
        return
    for name in files:
        yield f"{folder}/{name}" if folder else name
    for sub in folders:
        yield from _walk(storage, f"{folder}/{sub}" if folder else sub)

"""Media files in exports: copied beside the JSONL into `<file>.media/`, each listed in the
manifest with its size and SHA-256, and checked again by verify_export."""
import hashlib
import os
import shutil
from pathlib import Path

from django.db.models import QuerySet

from .files import EXTENSIONS
from .models import MessageMedia

CHUNK = 1 << 20


def media_folder_for(output: Path) -> Path:
    return output.with_name(output.name + ".media")


def export_media(*, messages: QuerySet, output: Path, force: bool) -> list[dict]:
    """Copies the files of `messages` into the export's media folder (0700, files 0600) and
    returns their manifest entries; a redacted file is listed without one. The folder is
    written under a temporary name and renamed into place when complete."""
    from ..exports import ExportError, _create_private

    rows = (MessageMedia.objects.filter(message__in=messages.values("id"))
            .order_by("message_id").select_related(None))
    folder = media_folder_for(output)
    if folder.exists() and not force:
        raise ExportError(f"{folder} already exists; pass --force to overwrite it.")
    partial = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    entries = []
    try:
        for media in rows.iterator(chunk_size=500):
            entry = {"message_id": media.message_id, "kind": media.kind, "content_type": media.content_type,
                     "redacted": media.redacted}
            if media.file:
                if not partial.exists():
                    partial.mkdir(mode=0o700)
                name = f"{media.message_id}{EXTENSIONS.get(media.content_type, '')}"
                sha, size = hashlib.sha256(), 0
                with media.file.open("rb") as source, _create_private(partial / name) as target:
                    for chunk in iter(lambda: source.read(CHUNK), b""):
                        sha.update(chunk)
                        size += len(chunk)
                        target.write(chunk)
                    target.flush()
                    os.fsync(target.fileno())
                entry.update(file=f"{folder.name}/{name}", bytes=size, sha256=sha.hexdigest())
            entries.append(entry)
        shutil.rmtree(folder, ignore_errors=True)
        if partial.exists():
            os.replace(partial, folder)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return entries


def verify_media(*, manifest: dict, manifest_path: Path) -> list[str]:
    """Problems with the media files the manifest lists: missing, changed, or outside the folder."""
    problems = []
    folder = media_folder_for(manifest_path.with_name(manifest["file"])).resolve()
    for entry in manifest.get("media") or []:
        if not isinstance(entry, dict) or not entry.get("file"):
            continue
        path = (manifest_path.parent / str(entry["file"])).resolve()
        if path.parent != folder:
            problems.append(f"media file {entry['file']} is outside the export's media folder")
            continue
        if not path.is_file():
            problems.append(f"media file {entry['file']} is missing")
            continue
        sha, size = hashlib.sha256(), 0
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(CHUNK), b""):
                sha.update(chunk)
                size += len(chunk)
        if size != entry.get("bytes") or sha.hexdigest() != entry.get("sha256"):
            problems.append(f"media file {entry['file']} does not match the manifest (size or SHA-256)")
    return problems

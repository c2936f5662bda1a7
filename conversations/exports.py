"""Exports that a compliance officer can hand over and anyone can verify later.

Rows stream from one database query read in chunks (constant memory), into a temporary
file renamed into place only when complete, with a manifest beside it.
"""
import csv
import hashlib
import io
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata
from pathlib import Path

from django.db.models import Q, QuerySet
from django.utils import timezone

from core import audit
from core.models import AuditAction

from .media.exports import export_media, verify_media
from .models import Chat, ChatMember, LineChannel, Message

BATCH_SIZE = 5000
FORMATS = ("jsonl", "csv")
# A spreadsheet runs a cell starting with one of these as a formula (OWASP: CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

# (column in the export, field path in the query)
MESSAGE_COLUMNS = [
    ("id", "id"),
    ("channel", "chat__channel__slug"),
    ("chat_type", "chat__source_type"),
    ("chat_id", "chat__line_id"),
    ("chat_name", "chat__display_name"),
    # Played in the console's simulator, not said on LINE.
    ("simulated", "chat__channel__is_simulated"),
    ("direction", "direction"),
    ("line_user_id", "line_user_id"),
    ("message_type", "message_type"),
    ("text", "text"),
    ("redacted", "redacted"),
    ("erased", "erased"),
    ("unsent", "unsent"),
    ("edited", "edited"),
    ("status", "status"),
    ("event_at", "event_at"),
    ("reply_to", "reply_to_id"),
    ("preset", "preset__name"),
    ("backend", "backend__name"),
    ("latency_ms", "latency_ms"),
    ("prompt_tokens", "prompt_tokens"),
    ("completion_tokens", "completion_tokens"),
]
CHAT_COLUMNS = [("chat_type", "source_type"), ("chat_id", "line_id"), ("chat_name", "display_name"),
                ("channel", "channel__slug"), ("simulated", "channel__is_simulated"), ("created_at", "created_at")]
# The user's name in each group or room, as LINE gave it.
MEMBER_COLUMNS = [("chat_type", "chat__source_type"), ("chat_id", "chat__line_id"), ("chat_name", "chat__display_name"),
                  ("channel", "chat__channel__slug"), ("display_name", "display_name"),
                  ("name_fetched_at", "fetched_at"), ("created_at", "created_at")]


class ExportError(Exception):
    pass


@dataclass
class ConversationFilters:
    since: datetime
    until: datetime
    channel: str | None = None
    chat: str | None = None
    user: str | None = None

    def as_dict(self) -> dict:
        """As manifests and the audit trail keep them: LINE ids only as keyed hashes, since
        both outlive an erasure; a chat given by its number in the admin stays a number."""
        chat_number = self.chat if self.chat and self.chat.isdigit() else None
        return {"since": self.since.isoformat(), "until": self.until.isoformat(), "channel": self.channel,
                "chat": chat_number,
                "chat_hmac": audit.keyed_hash(self.chat) if self.chat and not chat_number else None,
                "user_hmac": audit.keyed_hash(self.user) if self.user else None}


def tool_version() -> str:
    try:
        return metadata.version("linebot-llm")
    except metadata.PackageNotFoundError:
        return "unknown"


def manifest_path_for(output: Path) -> Path:
    return output.with_name(output.name + ".manifest.json")


def conversation_rows(filters: ConversationFilters) -> QuerySet:
    rows = Message.objects.filter(event_at__gte=filters.since, event_at__lt=filters.until)
    if filters.channel:
        rows = rows.filter(chat__channel__slug=filters.channel)
    if filters.chat:
        chat_match = Q(chat__line_id=filters.chat)
        if filters.chat.isdigit():
            chat_match |= Q(chat_id=int(filters.chat))
        rows = rows.filter(chat_match)
    if filters.user:
        rows = rows.filter(Q(line_user_id=filters.user) | Q(reply_to__line_user_id=filters.user))
    return rows


def export_conversations(
    *, filters: ConversationFilters, fmt: str, output: Path, actor, force: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> dict:
    """Writes the filtered messages to `output` and its manifest; returns the manifest."""
    if filters.channel and not LineChannel.objects.filter(slug=filters.channel).exists():
        raise ExportError(f"No channel with slug {filters.channel!r}.")
    rows = conversation_rows(filters)
    manifest = _write(_message_records(rows), fmt=fmt, output=output, force=force, on_progress=on_progress,
                      kind="conversations", filters=filters.as_dict())
    _add_media(manifest, messages=rows, output=output, force=force)
    audit.record(action=AuditAction.EXPORT, actor=actor, target_type="messages", target_id=output.name,
                 details={"filters": filters.as_dict(), "rows": manifest["rows"], "sha256": manifest["sha256"],
                          "format": fmt})
    return manifest


def export_user(*, line_user_id: str, output: Path, actor, force: bool = False,
                on_progress: Callable[[int], None] | None = None) -> dict:
    """Everything stored about one LINE user: their 1:1 chats, their names in groups, their
    messages and the answers to them."""
    chats = Chat.objects.filter(source_type="user", line_id=line_user_id)
    memberships = ChatMember.objects.filter(line_user_id=line_user_id).order_by("id")
    messages = Message.objects.filter(
        Q(line_user_id=line_user_id) | Q(reply_to__line_user_id=line_user_id) | Q(chat__in=chats)
    )

    def records() -> Iterator[dict]:
        for row in chats.values_list(*[path for _, path in CHAT_COLUMNS]):
            yield {"record": "chat", **dict(zip([name for name, _ in CHAT_COLUMNS], row))}
        for row in memberships.values_list(*[path for _, path in MEMBER_COLUMNS]):
            yield {"record": "member", **dict(zip([name for name, _ in MEMBER_COLUMNS], row))}
        for record in _message_records(messages):
            yield {"record": "message", **record}

    manifest = _write(records(), fmt="jsonl", output=output, force=force, on_progress=on_progress,
                      kind="user", filters={"line_user_id_hmac": audit.keyed_hash(line_user_id)})
    _add_media(manifest, messages=messages, output=output, force=force)
    audit.record(action=AuditAction.EXPORT_USER, actor=actor, target_type="line_user",
                 target_id=audit.keyed_hash(line_user_id), details={"rows": manifest["rows"], "sha256": manifest["sha256"]})
    return manifest


def _message_records(rows: QuerySet) -> Iterator[dict]:
    """One query read in chunks: constant memory, one consistent snapshot, and the planner
    sorts once (paging by id with a time filter made it rescan the range for every page)."""
    names = [name for name, _ in MESSAGE_COLUMNS]
    paths = [path for _, path in MESSAGE_COLUMNS]
    for row in rows.order_by("id").values_list(*paths).iterator(chunk_size=BATCH_SIZE):
        yield dict(zip(names, row))


class _HashingWriter(io.RawIOBase):
    """Counts and hashes bytes on their way to the file, so nothing is read back."""

    def __init__(self, raw) -> None:
        self.raw, self.sha256, self.size = raw, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self.raw.write(data)


def _write(records: Iterator[dict], *, fmt: str, output: Path, force: bool, on_progress, kind: str,
           filters: dict) -> dict:
    if fmt not in FORMATS:
        raise ExportError(f"Unknown format {fmt!r}; use one of: {', '.join(FORMATS)}.")
    manifest_path = manifest_path_for(output)
    if not force and (output.exists() or manifest_path.exists()):
        raise ExportError(f"{output} already exists; pass --force to overwrite it.")
    if not output.parent.is_dir():
        raise ExportError(f"The folder {output.parent} does not exist.")
    partial = output.with_name(f".{output.name}.partial")
    rows, first, last = 0, None, None
    try:
        with _create_private(partial) as raw:
            hashing = _HashingWriter(raw)
            text = io.TextIOWrapper(io.BufferedWriter(hashing, buffer_size=1 << 16), encoding="utf-8", newline="")
            write_row = _row_writer(fmt, text)
            for record in records:
                write_row(record)
                stamp = record.get("event_at")
                if stamp is not None:
                    first = stamp if first is None or stamp < first else first
                    last = stamp if last is None or stamp > last else last
                rows += 1
                if on_progress and rows % 10_000 == 0:
                    on_progress(rows)
            text.flush()
            text.detach().flush()
            os.fsync(raw.fileno())
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)
    manifest = {
        "tool": "linebot-llm",
        "tool_version": tool_version(),
        "kind": kind,
        "created_at": timezone.now().isoformat(),
        "file": output.name,
        "format": fmt,
        "filters": filters,
        "rows": rows,
        "bytes": hashing.size,
        "sha256": hashing.sha256.hexdigest(),
        "first_event_at": first.isoformat() if first else None,
        "last_event_at": last.isoformat() if last else None,
    }
    _save_manifest(manifest_path, manifest)
    if on_progress:
        on_progress(rows)
    return manifest


def _save_manifest(path: Path, manifest: dict) -> None:
    with _create_private(path) as handle:
        handle.write((json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode())


def _add_media(manifest: dict, *, messages: QuerySet, output: Path, force: bool) -> None:
    """The messages' photos and voice messages beside the export, listed in its manifest."""
    entries = export_media(messages=messages, output=output, force=force)
    if entries:
        manifest["media"] = entries
        _save_manifest(manifest_path_for(output), manifest)


def _create_private(path: Path) -> io.BufferedWriter:
    """Opens `path` for writing with mode 0600 whatever the umask or an older file's mode:
    exports hold conversations. A symlink planted at `path` is refused, not followed."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(descriptor, 0o600)
    except BaseException:
        os.close(descriptor)
        raise
    return os.fdopen(descriptor, "wb")


def _row_writer(fmt: str, text: io.TextIOWrapper) -> Callable[[dict], None]:
    if fmt == "jsonl":
        dumps = json.JSONEncoder(ensure_ascii=False, default=_json_default, separators=(",", ":")).encode

        def write_jsonl(record: dict) -> None:
            text.write(dumps(record))
            text.write("\n")

        return write_jsonl
    writer = csv.writer(text)
    header_written = False

    def write_csv(record: dict) -> None:
        nonlocal header_written
        if not header_written:
            writer.writerow(record.keys())
            header_written = True
        writer.writerow(_csv_value(v) for v in record.values())

    return write_csv


def _json_default(value):
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _csv_value(value):
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


@dataclass
class Verification:
    ok: bool
    problems: list[str]
    manifest: dict


def verify_export(*, manifest_path: Path, actor=None) -> Verification:
    """Re-reads the exported file and checks its size, hash and row count against the manifest."""
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExportError(f"No manifest at {manifest_path}.") from None
    except ValueError as exc:
        raise ExportError(f"{manifest_path} is not a valid manifest: {exc}") from None
    missing = {"file", "sha256", "rows", "bytes", "format"} - manifest.keys()
    if missing:
        raise ExportError(f"{manifest_path} is not a valid manifest: missing {', '.join(sorted(missing))}.")
    data_path = manifest_path.with_name(manifest["file"])
    problems = []
    if not data_path.exists():
        problems.append(f"The exported file {data_path} is missing.")
    sha, size = hashlib.sha256(), 0
    if not problems:
        with open(data_path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                sha.update(chunk)
                size += len(chunk)
    if not problems and size != manifest["bytes"]:
        problems.append(f"size is {size} bytes, the manifest says {manifest['bytes']}")
    if not problems and sha.hexdigest() != manifest["sha256"]:
        problems.append("SHA-256 does not match: the file was changed or truncated")
    if not problems:
        lines = _count_rows(data_path, manifest["format"])
        if lines != manifest["rows"]:
            problems.append(f"{lines} rows, the manifest says {manifest['rows']}")
    problems += verify_media(manifest=manifest, manifest_path=manifest_path)
    audit.record(action=AuditAction.VERIFY_EXPORT, actor=actor, target_type="export", target_id=manifest["file"],
                 details={"ok": not problems, "problems": problems, "sha256": manifest["sha256"]})
    return Verification(not problems, problems, manifest)


def _count_rows(path: Path, fmt: str) -> int:
    with open(path, encoding="utf-8", newline="") as handle:
        if fmt == "csv":
            return max(sum(1 for _ in csv.reader(handle)) - 1, 0)
        return sum(1 for line in handle if line.strip())

"""Exports that a compliance officer can hand over and anyone can verify later.

Rows stream from one database query read in chunks (constant memory), into a temporary
file renamed into place only when complete, with a manifest beside it.
"""
import contextlib
import csv
import hashlib
import io
import itertools
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from datetime import timezone as dt_timezone
from importlib import metadata
from json.encoder import encode_basestring
from pathlib import Path
from typing import NamedTuple

from django.db import transaction
from django.db.models import Max, Min, Q, QuerySet
from django.db.models.sql.constants import MULTI
from django.utils import timezone

from core import audit
from core.models import AuditAction
from models_registry.models import ModelBackend, SamplingPreset

from .media.exports import export_media, verify_media
from .models import Chat, ChatMember, LineChannel, Message

# Rows read and written at a time: 5,000 cost 20 MB more peak memory than 2,000 and saved
# no measurable time.
BATCH_SIZE = 2000
FORMATS = ("jsonl", "csv")
# A spreadsheet runs a cell starting with one of these as a formula (OWASP: CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

# The columns of a message in an export, in order.
MESSAGE_COLUMNS = ["id", "channel", "chat_type", "chat_id", "chat_name", "simulated", "direction", "line_user_id",
                   "message_type", "text", "redacted", "erased", "unsent", "edited", "status", "event_at", "reply_to",
                   "preset", "backend", "latency_ms", "prompt_tokens", "completion_tokens"]
# What is read of each message: its own row only. The chat's five columns (its channel's
# among them) and the preset's and backend's names are looked up by id, a chunk's chats at
# a time: four joins per row cost more than the rest of the read.
MESSAGE_FIELDS = ["id", "chat_id", "direction", "line_user_id", "message_type", "text", "redacted", "erased", "unsent",
                  "edited", "status", "event_at", "reply_to_id", "preset_id", "backend_id", "latency_ms",
                  "prompt_tokens", "completion_tokens"]
CHAT_FIELDS = ["channel__slug", "source_type", "line_id", "display_name", "channel__is_simulated"]
# (column in the export, field path in the query)
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
    media_of = rows
    if not (filters.chat or filters.user):
        rows = _within_ids(rows)
    manifest = _write(_message_chunks(rows, fmt=fmt), fmt=fmt, output=output, force=force,
                      on_progress=on_progress, kind="conversations", filters=filters.as_dict())
    _add_media(manifest, messages=media_of, output=output, force=force)
    audit.record(action=AuditAction.EXPORT, actor=actor, target_type="messages", target_id=output.name,
                 details={"filters": filters.as_dict(), "rows": manifest["rows"], "sha256": manifest["sha256"],
                          "format": fmt})
    return manifest


def _within_ids(rows: QuerySet) -> QuerySet:
    """`rows` also bounded by their first and last id, read from the time index.

    Told the ids, the planner reads the table along its primary key, in the export's order;
    told only the times, SQLite reads the time index and sorts the whole range by id first
    (a quarter of the export's time on a million messages). Not for one chat or one user,
    whose own indexes read far less.
    """
    bounds = rows.aggregate(first=Min("id"), last=Max("id"))
    if bounds["first"] is None:
        return rows.none()
    return rows.filter(id__gte=bounds["first"], id__lte=bounds["last"])


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

    chunks = itertools.chain(_record_chunks(records()),
                             _message_chunks(messages, fmt="jsonl", record="message"))
    manifest = _write(chunks, fmt="jsonl", output=output, force=force, on_progress=on_progress,
                      kind="user", filters={"line_user_id_hmac": audit.keyed_hash(line_user_id)})
    _add_media(manifest, messages=messages, output=output, force=force)
    audit.record(action=AuditAction.EXPORT_USER, actor=actor, target_type="line_user",
                 target_id=audit.keyed_hash(line_user_id), details={"rows": manifest["rows"], "sha256": manifest["sha256"]})
    return manifest


class _Chunk(NamedTuple):
    """Rows ready to write: their text, how many, and the earliest and latest `event_at` among them."""

    text: str
    rows: int
    first: datetime | None = None
    last: datetime | None = None


def _message_chunks(rows: QuerySet, *, fmt: str, record: str | None = None) -> Iterator[_Chunk]:
    """One query read in chunks: constant memory and one consistent snapshot (paging by id
    with a time filter made SQLite rescan the range for every page).

    Rows come as the database driver returns them, without Django's converters (a call per
    value, half the time of the export): SQLite's gives naive UTC datetimes and 0/1 for
    booleans, which the formats handle. Each chunk's new chats are read in one query,
    presets and backends when first met, each rendered once for the format. A row whose
    chat was deleted while the export ran (and not yet met) is left out, as the rest of that
    chat would be; a preset or backend deleted meanwhile reads as none, as the message would.
    """
    form = _FORMATS[fmt]
    query = rows.order_by("id").values_list(*MESSAGE_FIELDS).query
    compiler = query.get_compiler(using=rows.db)
    tz = compiler.connection.timezone
    if tz != dt_timezone.utc:
        # Naive datetimes would be in this zone, whose offset changes: not worth a slower path.
        raise ExportError(f"The database's time zone is {tz}; exports need UTC (leave DATABASES' TIME_ZONE unset).")
    header = form.header()
    # On PostgreSQL a server-side cursor outside a transaction is WITH HOLD: the server builds
    # the whole result before the first row comes. Inside one it streams, reading while this
    # process writes (and the export is one snapshot). Not on SQLite, where a transaction
    # would take the write lock for the whole export.
    reading = (transaction.atomic(using=rows.db) if compiler.connection.vendor == "postgresql"
               else contextlib.nullcontext())
    with reading:
        yield from _chunks_of(compiler, form=form, header=header, tz=tz, record=record)


def _chunks_of(compiler, *, form, header: str, tz, record: str | None) -> Iterator[_Chunk]:
    chats: dict[int, object] = {}
    presets: dict[int | None, object] = {None: form.name(None)}
    backends: dict[int | None, object] = {None: form.name(None)}
    for batch in compiler.execute_sql(MULTI, chunked_fetch=True, chunk_size=BATCH_SIZE):
        if len(chats) > 10 * BATCH_SIZE:  # memory stays bounded whatever the number of chats
            chats.clear()
        chat_ids = {row[1] for row in batch}
        _look_up(chats, chat_ids, Chat.objects.values_list("pk", *CHAT_FIELDS), lambda values: form.chat(*values))
        for known, position, model in ((presets, 13, SamplingPreset), (backends, 14, ModelBackend)):
            gone = _look_up(known, {row[position] for row in batch}, model.objects.values_list("pk", "name"),
                            lambda values: form.name(values[0]))
            known.update(dict.fromkeys(gone, known[None]))
        if not chat_ids <= chats.keys():
            batch = [row for row in batch if row[1] in chats]
            if not batch:
                continue
        stamps = [row[11] for row in batch]
        first, last = min(stamps), max(stamps)
        # A naive UTC datetime's isoformat lacks only the offset: a call per row less.
        offset = "" if first.tzinfo else "+00:00"
        text = form.rows(batch, chats, presets, backends, offset=offset, record=record)
        if offset:
            first, last = first.replace(tzinfo=tz), last.replace(tzinfo=tz)
        yield _Chunk(header + text, len(batch), first, last)
        header = ""


def _look_up(known: dict, wanted: set, rows: QuerySet, render: Callable[[list], object]) -> set:
    """Adds to `known` the rows of the `wanted` ids it lacks, each rendered; returns the ids not found."""
    missing = wanted - known.keys()
    if missing:
        for pk, *values in rows.filter(pk__in=missing):
            known[pk] = render(values)
            missing.discard(pk)
    return missing


def _record_chunks(records: Iterator[dict]) -> Iterator[_Chunk]:
    """Any records as JSON lines (a user's chats and names: a few), each with its keys."""
    dumps = json.JSONEncoder(ensure_ascii=False, default=_json_default, separators=(",", ":")).encode
    for batch in iter(lambda: list(itertools.islice(records, BATCH_SIZE)), []):
        stamps = [record["event_at"] for record in batch if record.get("event_at") is not None]
        yield _Chunk("".join([dumps(record) + "\n" for record in batch]), len(batch),
                     min(stamps, default=None), max(stamps, default=None))


def _write(chunks: Iterator[_Chunk], *, fmt: str, output: Path, force: bool, on_progress, kind: str,
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
    # Counted and hashed on their way to the file, so nothing is read back.
    sha256, size = hashlib.sha256(), 0
    try:
        with _create_private(partial) as raw:
            for chunk in chunks:
                data = chunk.text.encode()
                sha256.update(data)
                size += len(data)
                raw.write(data)
                if chunk.first is not None:
                    first = chunk.first if first is None or chunk.first < first else first
                    last = chunk.last if last is None or chunk.last > last else last
                if on_progress and (rows + chunk.rows) // 10_000 > rows // 10_000:
                    on_progress(rows + chunk.rows)
                rows += chunk.rows
            raw.flush()
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
        "bytes": size,
        "sha256": sha256.hexdigest(),
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


def _json_default(value):
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# Message rows are written without a dict per row nor a call per value: each format renders
# a chunk of rows in one expression, with what it looks up rendered once. The bytes are
# those of `json` (compact, not ASCII-escaped) and of `csv` on each row's dict of
# MESSAGE_COLUMNS (tests/test_exports.py holds them to it). Booleans may be 0 and 1, and
# datetimes naive, to be followed by `offset` (SQLite's driver).
_JSON_BOOL = {True: "true", False: "false"}
_CSV_BOOL = {True: True, False: False}
_quote = encode_basestring  # what json.dumps(..., ensure_ascii=False) does to a str


class _Jsonl:
    @staticmethod
    def header() -> str:
        return ""

    @staticmethod
    def chat(channel: str, chat_type: str, chat_id: str, chat_name: str, simulated: bool) -> str:
        return (f'"channel":{_quote(channel)},"chat_type":{_quote(chat_type)},"chat_id":{_quote(chat_id)},'
                f'"chat_name":{_quote(chat_name)},"simulated":{_JSON_BOOL[simulated]}')

    @staticmethod
    def name(value: str | None) -> str:
        return "null" if value is None else _quote(value)

    @staticmethod
    def rows(batch: list[tuple], chats: dict, presets: dict, backends: dict, *, offset: str,
             record: str | None) -> str:
        q, b = _quote, _JSON_BOOL
        start = "{" if record is None else f'{{"record":{q(record)},'
        return "".join([
            f'{start}"id":{pk},{chats[chat]},"direction":{q(direction)},"line_user_id":{q(user)},'
            f'"message_type":{q(kind)},"text":{q(text)},"redacted":{b[redacted]},"erased":{b[erased]},'
            f'"unsent":{b[unsent]},"edited":{b[edited]},"status":{q(status)},'
            f'"event_at":"{at.isoformat()}{offset}",'
            f'"reply_to":{"null" if reply_to is None else reply_to},"preset":{presets[preset]},'
            f'"backend":{backends[backend]},"latency_ms":{"null" if latency is None else latency},'
            f'"prompt_tokens":{"null" if prompt is None else prompt},'
            f'"completion_tokens":{"null" if completion is None else completion}}}\n'
            for (pk, chat, direction, user, kind, text, redacted, erased, unsent, edited, status, at, reply_to,
                 preset, backend, latency, prompt, completion) in batch
        ])


class _Csv:
    @staticmethod
    def header() -> str:
        return _csv_text([MESSAGE_COLUMNS])

    @staticmethod
    def chat(channel: str, chat_type: str, chat_id: str, chat_name: str, simulated: bool) -> tuple:
        return (_csv_cell(channel), _csv_cell(chat_type), _csv_cell(chat_id), _csv_cell(chat_name),
                _CSV_BOOL[simulated])

    @staticmethod
    def name(value: str | None) -> str | None:
        return None if value is None else _csv_cell(value)

    @staticmethod
    def rows(batch: list[tuple], chats: dict, presets: dict, backends: dict, *, offset: str,
             record: str | None) -> str:
        c, b = _csv_cell, _CSV_BOOL
        return _csv_text(
            (pk, *chats[chat], c(direction), c(user), c(kind), c(text), b[redacted], b[erased], b[unsent], b[edited],
             c(status), f"{at.isoformat()}{offset}", reply_to, presets[preset],
             backends[backend], latency, prompt, completion)
            for (pk, chat, direction, user, kind, text, redacted, erased, unsent, edited, status, at, reply_to,
                 preset, backend, latency, prompt, completion) in batch
        )


_FORMATS = {"jsonl": _Jsonl, "csv": _Csv}


def _csv_text(rows) -> str:
    buffer = io.StringIO(newline="")
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue()


def _csv_cell(value: str) -> str:
    return "'" + value if value.startswith(FORMULA_STARTS) else value


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

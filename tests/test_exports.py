"""Exports: filters, formats, manifests, verification, overwrite protection, bad arguments."""
import csv
import io
import json
import os
import stat
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from conversations import exports, redaction
from conversations.models import Chat, ChatMember, LineChannel, Message
from core import audit
from core.models import AuditEvent
from models_registry.models import ModelBackend, SamplingPreset

pytestmark = pytest.mark.django_db

ALICE, BOB = "U" + "a1" * 16, "U" + "b2" * 16


@pytest.fixture
def history(make_chat, make_message, monkeypatch):
    """A group and a 1:1 chat over a few days; batches of 2 so paging is exercised."""
    monkeypatch.setattr(exports, "BATCH_SIZE", 2)
    group = make_chat("C" + "0a" * 16, display_name="登山社")
    direct = make_chat(ALICE, source_type="user", display_name="Alice")
    q1 = make_message(group, "明天幾點集合?", days_ago=3, user=ALICE)
    make_message(group, "七點, 台北車站", days_ago=3, user=BOB)
    make_message(group, "echo: 明天幾點集合?", days_ago=3, direction="out", reply_to=q1)
    secret = make_message(direct, "我的電話 0912-345-678", days_ago=2, user=ALICE)
    make_message(direct, "old", days_ago=40, user=ALICE)
    redaction.redact_messages(message_ids=[secret.pk], actor="shell:test", reason="PII")
    return group, direct


def run_export(tmp_path, *extra, name="out.jsonl"):
    output = tmp_path / name
    call_command("export_conversations", "--since", "2000-01-01", "--until", "2100-01-01", "--output", str(output),
                 *extra)
    return output


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_jsonl_export_with_manifest_that_verifies(history, tmp_path, capsys):
    output = run_export(tmp_path)
    rows = read_jsonl(output)
    assert len(rows) == 5
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    redacted = next(r for r in rows if r["redacted"])
    assert redacted["text"] == "[redacted]" and "0912" not in output.read_text(encoding="utf-8")
    manifest = json.loads((tmp_path / "out.jsonl.manifest.json").read_text())
    assert manifest["rows"] == 5 and manifest["format"] == "jsonl" and len(manifest["sha256"]) == 64
    assert manifest["filters"]["since"].startswith("2000-01-01") and manifest["tool_version"]
    assert manifest["first_event_at"] < manifest["last_event_at"]
    call_command("verify_export", str(tmp_path / "out.jsonl.manifest.json"))
    assert "OK: out.jsonl has 5 rows" in capsys.readouterr().out
    event = AuditEvent.objects.get(action="export")
    assert event.details["rows"] == 5 and event.details["sha256"] == manifest["sha256"]


def test_filters_by_chat_user_channel_and_time(history, tmp_path):
    group, direct = history
    assert {r["chat_id"] for r in read_jsonl(run_export(tmp_path, "--chat", group.line_id, name="a"))} == {group.line_id}
    by_alice = read_jsonl(run_export(tmp_path, "--user", ALICE, name="b"))
    assert {r["text"] for r in by_alice} == {"明天幾點集合?", "echo: 明天幾點集合?", "[redacted]", "old"}
    assert len(read_jsonl(run_export(tmp_path, "--channel", "test", name="c"))) == 5
    output = tmp_path / "d"
    call_command("export_conversations", "--since", "2000-01-01", "--until", "2100-01-01",
                 "--chat", str(direct.pk), "--output", str(output))
    assert len(read_jsonl(output)) == 2


def test_manifest_and_audit_name_chats_and_users_only_by_keyed_hash(history, tmp_path):
    group, direct = history
    run_export(tmp_path, "--user", ALICE, "--chat", group.line_id, name="a")
    run_export(tmp_path, "--chat", str(direct.pk), name="b")
    manifests = [json.loads((tmp_path / f"{name}.manifest.json").read_text()) for name in "ab"]
    events = list(AuditEvent.objects.filter(action="export").order_by("id"))
    for manifest, event in zip(manifests, events):
        assert event.details["filters"] == manifest["filters"]
    assert ALICE not in json.dumps(manifests[0]) and group.line_id not in json.dumps(manifests[0])
    assert manifests[0]["filters"]["user_hmac"] == audit.keyed_hash(ALICE)
    assert manifests[0]["filters"]["chat_hmac"] == audit.keyed_hash(group.line_id)
    assert manifests[1]["filters"]["chat"] == str(direct.pk) and manifests[1]["filters"]["chat_hmac"] is None


def test_csv_export_has_a_header_and_verifies(history, tmp_path):
    output = run_export(tmp_path, "--format", "csv", name="out.csv")
    with open(output, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 5 and rows[0]["direction"] in ("in", "out")
    assert exports.verify_export(manifest_path=tmp_path / "out.csv.manifest.json").ok


FORMULAS = ['=HYPERLINK("http://x","y")', "+1+2", "-2+3", "@SUM(A1)", "\tx", "\rx"]


def test_csv_cells_that_a_spreadsheet_would_run_are_quoted(make_chat, make_message, tmp_path):
    chat = make_chat("C" + "0c" * 16, display_name="=cmd|' /C calc'!A0")
    for text in [*FORMULAS, "a=b", "plain"]:
        make_message(chat, text, user=ALICE)
    with open(run_export(tmp_path, "--format", "csv", name="out.csv"), encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["text"] for row in rows] == [*("'" + text for text in FORMULAS), "a=b", "plain"]
    assert {row["chat_name"] for row in rows} == {"'=cmd|' /C calc'!A0"}
    assert {row["line_user_id"] for row in rows} == {ALICE}
    assert exports.verify_export(manifest_path=tmp_path / "out.csv.manifest.json").ok
    # JSONL is data, not a spreadsheet: the text stays as it was.
    assert [r["text"] for r in read_jsonl(run_export(tmp_path))] == [*FORMULAS, "a=b", "plain"]


@pytest.fixture
def open_umask():
    previous = os.umask(0)
    yield
    os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("fmt", exports.FORMATS)
def test_export_files_are_readable_by_their_owner_only(history, tmp_path, open_umask, fmt):
    output = tmp_path / f"out.{fmt}"
    for path in (output, exports.manifest_path_for(output)):
        path.write_text("older export")
        path.chmod(0o644)
    run_export(tmp_path, "--format", fmt, "--force", name=output.name)
    assert mode(output) == 0o600 and mode(exports.manifest_path_for(output)) == 0o600
    call_command("export_user", ALICE, "--output", str(tmp_path / "alice.jsonl"))
    assert mode(tmp_path / "alice.jsonl") == 0o600 and mode(tmp_path / "alice.jsonl.manifest.json") == 0o600


def test_the_temporary_file_is_private_while_it_is_written(tmp_path, open_umask, db):
    seen = []

    def records():
        yield {"text": "one"}
        seen.extend(mode(path) for path in tmp_path.glob(".*.partial"))
        yield {"text": "two"}

    exports._write(exports._record_chunks(records()), fmt="jsonl", output=tmp_path / "out.jsonl", force=False, on_progress=None,
                   kind="test", filters={})
    assert seen == [0o600]


def test_a_changed_file_fails_verification(history, tmp_path, capsys):
    output = run_export(tmp_path)
    output.write_text(output.read_text(encoding="utf-8").replace("七點", "八點"), encoding="utf-8")
    with pytest.raises(CommandError, match="does not match its manifest") as caught:
        call_command("verify_export", str(tmp_path / "out.jsonl.manifest.json"))
    assert caught.value.returncode == 1
    assert "SHA-256 does not match" in capsys.readouterr().err
    verification = AuditEvent.objects.get(action="verify_export")
    assert verification.details["ok"] is False and verification.target_id == "out.jsonl"


def test_refuses_to_overwrite_without_force(history, tmp_path):
    run_export(tmp_path)
    with pytest.raises(CommandError, match="already exists; pass --force"):
        run_export(tmp_path)
    run_export(tmp_path, "--force")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--since", "yesterday", "--until", "2026-01-01"], "is not a date"),
        (["--since", "2026-02-01", "--until", "2026-01-01"], "--until must be later than --since"),
        (["--since", "2026-01-01", "--until", "2026-02-01", "--channel", "nope"], "No channel with slug 'nope'"),
        (["--since", "2026-01-01", "--until", "2026-02-01", "--format", "xml"], "invalid choice"),
    ],
)
def test_bad_arguments_are_clear_errors(tmp_path, args, message, db):
    with pytest.raises(CommandError, match=message):
        call_command("export_conversations", *args, "--output", str(tmp_path / "x.jsonl"))
    assert not (tmp_path / "x.jsonl").exists()


def test_output_folder_must_exist(history, tmp_path):
    with pytest.raises(CommandError, match="does not exist"):
        run_export(tmp_path / "missing")


def test_verify_reports_a_missing_manifest(tmp_path):
    with pytest.raises(CommandError, match="No manifest at"):
        call_command("verify_export", str(tmp_path / "none.manifest.json"))


def test_export_user_holds_everything_about_them(history, tmp_path, capsys):
    output = tmp_path / "alice.jsonl"
    call_command("export_user", ALICE, "--output", str(output))
    records = read_jsonl(output)
    assert [r for r in records if r["record"] == "chat"] == [
        {"record": "chat", "chat_type": "user", "chat_id": ALICE, "chat_name": "Alice", "channel": "test",
         "simulated": False, "created_at": records[0]["created_at"]}
    ]
    texts = {r["text"] for r in records if r["record"] == "message"}
    assert texts == {"明天幾點集合?", "echo: 明天幾點集合?", "[redacted]", "old"}
    assert "七點, 台北車站" not in texts
    assert exports.verify_export(manifest_path=tmp_path / "alice.jsonl.manifest.json").ok
    event = AuditEvent.objects.get(action="export_user")
    assert ALICE not in json.dumps(event.details) and event.target_id != ALICE


def test_export_user_holds_her_names_in_groups(history, tmp_path):
    group, direct = history
    ChatMember.objects.create(chat=group, line_user_id=ALICE, display_name="Alice in the club")
    ChatMember.objects.create(chat=group, line_user_id=BOB, display_name="Bob")
    call_command("export_user", ALICE, "--output", str(tmp_path / "alice.jsonl"))
    members = [r for r in read_jsonl(tmp_path / "alice.jsonl") if r["record"] == "member"]
    assert [(m["chat_id"], m["chat_name"], m["display_name"]) for m in members] == [
        (group.line_id, "登山社", "Alice in the club")]


def test_export_user_rejects_something_that_is_not_a_line_user_id(tmp_path):
    with pytest.raises(CommandError, match="is not a LINE user id"):
        call_command("export_user", "alice", "--output", str(tmp_path / "x"))


# The export's columns as the first version of the export read them, joins and all, and
# turned each row into a dict for `json` and `csv`: the bytes the writer must still produce.
JOINED_COLUMNS = [
    ("id", "id"), ("channel", "chat__channel__slug"), ("chat_type", "chat__source_type"), ("chat_id", "chat__line_id"),
    ("chat_name", "chat__display_name"), ("simulated", "chat__channel__is_simulated"), ("direction", "direction"),
    ("line_user_id", "line_user_id"), ("message_type", "message_type"), ("text", "text"), ("redacted", "redacted"),
    ("erased", "erased"), ("unsent", "unsent"), ("edited", "edited"), ("status", "status"), ("event_at", "event_at"),
    ("reply_to", "reply_to_id"), ("preset", "preset__name"), ("backend", "backend__name"),
    ("latency_ms", "latency_ms"), ("prompt_tokens", "prompt_tokens"), ("completion_tokens", "completion_tokens"),
]


def reference_records():
    rows = Message.objects.order_by("id").values_list(*[path for _, path in JOINED_COLUMNS])
    return [dict(zip([name for name, _ in JOINED_COLUMNS], row)) for row in rows]


def reference_jsonl(records):
    def default(value):
        return value.isoformat()

    return "".join(json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=default) + "\n"
                   for record in records)


def reference_csv(records):
    def cell(value):
        if hasattr(value, "isoformat"):
            return value.isoformat()
        return "'" + value if isinstance(value, str) and value.startswith(tuple("=+-@\t\r")) else value

    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(records[0].keys())
    writer.writerows([cell(value) for value in record.values()] for record in records)
    return buffer.getvalue()


@pytest.fixture
def awkward(make_chat, make_message, monkeypatch):
    """Messages with every kind of value a column can hold, over chats of two channels, with
    batches of 2 so chats, presets and backends are met again in later batches."""
    monkeypatch.setattr(exports, "BATCH_SIZE", 2)
    sandbox = LineChannel.objects.create(name="Sandbox", slug="sandbox", channel_secret="s", access_token="t",
                                         is_simulated=True)
    backend = ModelBackend.objects.create(name='vLLM "big" \\ box', kind="ollama", base_url="http://127.0.0.1:9",
                                          model="m")
    preset = SamplingPreset.objects.create(name="預設 ✨", backend=backend)
    group = make_chat("C" + "0d" * 16, display_name='山 "Club"\n\t=1+1')
    direct = make_chat(ALICE, source_type="user", display_name="")
    played = Chat.objects.create(channel=sandbox, source_type="user", line_id=BOB, display_name="@bob")
    texts = ['quote " backslash \\ slash /', "line\nbreak\r\ttab \x01\x1f\x7f", "\u2028\u2029 😀 é 日本語",
             "=HYPERLINK(1)", "-5", "", "plain"]
    question = None
    for index, text in enumerate(texts):
        chat = (group, direct, played)[index % 3]
        question = make_message(chat, text, days_ago=index, user=ALICE if index % 2 else "", message_type="text")
        make_message(chat, "+answer " + text, days_ago=index, direction="out", reply_to=question,
                     preset=preset if index % 2 else None, backend=backend if index % 3 else None,
                     latency_ms=index * 100 or None, prompt_tokens=index, completion_tokens=None,
                     edited=bool(index % 2), unsent=index == 2, redacted=index == 3, erased=index == 4)
    # A moment on the second exactly: isoformat leaves out the microseconds.
    Message.objects.filter(pk=question.pk).update(event_at=timezone.now().replace(microsecond=0) - timedelta(days=9))
    return reference_records()


def test_jsonl_rows_are_the_bytes_json_makes_of_each_messages_columns(awkward, tmp_path):
    output = run_export(tmp_path)
    assert output.read_bytes().decode() == reference_jsonl(awkward)
    manifest = json.loads(exports.manifest_path_for(output).read_text())
    assert manifest["rows"] == len(awkward) == 14
    assert manifest["first_event_at"] == min(r["event_at"] for r in awkward).isoformat()
    assert manifest["last_event_at"] == max(r["event_at"] for r in awkward).isoformat()


def test_csv_rows_are_the_bytes_csv_makes_of_each_messages_columns(awkward, tmp_path):
    output = run_export(tmp_path, "--format", "csv", name="out.csv")
    assert output.read_bytes().decode() == reference_csv(awkward)


def test_an_export_with_no_rows_is_empty_in_both_formats(tmp_path, db):
    for fmt in exports.FORMATS:
        output = run_export(tmp_path, "--format", fmt, name=f"out.{fmt}")
        assert output.read_bytes() == b""
        assert exports.verify_export(manifest_path=exports.manifest_path_for(output)).ok


def test_export_user_messages_are_the_same_rows_marked_as_messages(awkward, tmp_path):
    call_command("export_user", ALICE, "--output", str(tmp_path / "alice.jsonl"))
    lines = (tmp_path / "alice.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    mine = [r for r in awkward if r["line_user_id"] == ALICE or r["chat_id"] == ALICE
            or (r["reply_to"] and Message.objects.get(pk=r["reply_to"]).line_user_id == ALICE)]
    expected = reference_jsonl({"record": "message", **r} for r in mine)
    assert "".join(line for line in lines if line.startswith('{"record":"message"')) == expected
    assert lines[0].startswith('{"record":"chat"')


def test_rows_of_a_chat_erased_before_the_export_reached_it_are_left_out(awkward, tmp_path):
    chunks = exports._message_chunks(exports.conversation_rows(exports.ConversationFilters(
        since=timezone.now() - timedelta(days=400), until=timezone.now() + timedelta(days=1))), fmt="jsonl")
    first = next(chunks)  # the group's first question and answer
    Chat.objects.filter(line_id=BOB).delete()  # the simulator's chat, not met yet
    rest = list(chunks)
    written = [json.loads(line) for chunk in (first, *rest) for line in chunk.text.split("\n") if line]
    assert [r["id"] for r in written] == [r["id"] for r in awkward if r["chat_id"] != BOB]
    assert sum(chunk.rows for chunk in (first, *rest)) == len(written) == 10


def test_a_database_time_zone_other_than_utc_is_a_clear_error(history, tmp_path, monkeypatch):
    from zoneinfo import ZoneInfo

    from django.db import connections

    # As DATABASES' TIME_ZONE would set it: SQLite's naive datetimes would then be local times.
    monkeypatch.setitem(connections["default"].__dict__, "timezone", ZoneInfo("Asia/Taipei"))
    with pytest.raises(CommandError, match="exports need UTC"):
        run_export(tmp_path)
    assert not list(tmp_path.iterdir())

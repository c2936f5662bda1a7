"""manage.py export_conversations — stream messages to JSONL or CSV with a verifiable manifest."""
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from conversations import exports
from conversations.management.dates import parse_moment
from conversations.management.progress import Progress
from core import audit


class Command(BaseCommand):
    help = (
        "Exports the messages sent between --since and --until (dates as YYYY-MM-DD or ISO 8601 times; "
        "--until is exclusive), optionally of one channel, chat or LINE user, to --output as JSONL or CSV. "
        "Streams in constant memory. Writes PATH.manifest.json beside the file with the filters, row "
        "count, time range, SHA-256 and tool version; check it later with `manage.py verify_export`. "
        "Redacted messages appear as redacted. Refuses to overwrite without --force."
    )

    def add_arguments(self, parser):
        parser.add_argument("--since", required=True, help="Start (inclusive), e.g. 2026-10-01.")
        parser.add_argument("--until", required=True, help="End (exclusive), e.g. 2026-11-01.")
        parser.add_argument("--channel", help="Only this channel (its slug).")
        parser.add_argument("--chat", help="Only this chat (its LINE id or its number in the admin).")
        parser.add_argument("--user", help="Only messages from this LINE user id and the answers to them.")
        parser.add_argument("--format", choices=exports.FORMATS, default="jsonl", help="Default: jsonl.")
        parser.add_argument("--output", required=True, type=Path, help="File to write.")
        parser.add_argument("--force", action="store_true", help="Overwrite an existing file.")

    def handle(self, *args, **options):
        since, until = parse_moment(options["since"], "--since"), parse_moment(options["until"], "--until")
        if until <= since:
            raise CommandError("--until must be later than --since.")
        filters = exports.ConversationFilters(since=since, until=until, channel=options["channel"],
                                              chat=options["chat"], user=options["user"])
        progress = Progress("Exported")
        try:
            manifest = exports.export_conversations(
                filters=filters, fmt=options["format"], output=options["output"], actor=audit.shell_actor(),
                force=options["force"], on_progress=progress.set,
            )
        except exports.ExportError as exc:
            raise CommandError(str(exc)) from None
        progress.close()
        self.stdout.write(f"Wrote {manifest['rows']:,} messages to {options['output']} "
                          f"(sha256 {manifest['sha256']}); manifest: {exports.manifest_path_for(options['output'])}")

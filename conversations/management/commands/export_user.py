"""manage.py export_user — everything stored about one LINE user (a data-subject access request)."""
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from conversations import exports
from conversations.management.progress import Progress
from conversations.management.validation import line_user_id
from core import audit


class Command(BaseCommand):
    help = ("Exports everything stored about one LINE user — their 1:1 chat, every message they sent in "
            "any chat and the bot's answers to them — to a JSONL file with a manifest, for a data-subject "
            "access request. Refuses to overwrite without --force.")

    def add_arguments(self, parser):
        parser.add_argument("line_user_id", type=line_user_id, help="The user's LINE id (U followed by 32 hex digits).")
        parser.add_argument("--output", required=True, type=Path, help="File to write (JSONL).")
        parser.add_argument("--force", action="store_true", help="Overwrite an existing file.")

    def handle(self, *args, line_user_id: str, output: Path, force: bool, **options):
        progress = Progress("Exported")
        try:
            manifest = exports.export_user(line_user_id=line_user_id, output=output, actor=audit.shell_actor(),
                                           force=force, on_progress=progress.set)
        except exports.ExportError as exc:
            raise CommandError(str(exc)) from None
        progress.close()
        self.stdout.write(f"Wrote {manifest['rows']:,} records about the user to {output} "
                          f"(sha256 {manifest['sha256']}); manifest: {exports.manifest_path_for(output)}")

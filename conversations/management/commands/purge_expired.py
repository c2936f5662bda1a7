"""manage.py purge_expired — delete messages older than the retention policy allows."""
from django.core.management.base import BaseCommand, CommandError

from conversations import retention
from conversations.management.progress import Progress
from core import audit


class Command(BaseCommand):
    help = (
        "Deletes messages older than their chat's retention (the chat's own setting, else the global "
        "one in the admin's privacy policy); chats on legal hold are never touched. Works in batches, "
        "one transaction each, so an interrupted run deletes only whole batches. The same purge runs "
        "daily as a django-q2 schedule. Use --dry-run to see, per chat, what would go."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Count what would be deleted, per chat; delete nothing.")
        parser.add_argument("--batch-size", type=int, default=retention.DEFAULT_BATCH_SIZE,
                            help="Messages deleted per transaction (default %(default)s).")

    def handle(self, *args, dry_run: bool, batch_size: int, **options):
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        progress = Progress("Deleting")
        report = retention.purge_expired(dry_run=dry_run, batch_size=batch_size, actor=audit.shell_actor(),
                                         on_batch=progress.advance)
        progress.close()
        verb = "Would delete" if dry_run else "Deleted"
        for chat in report.chats:
            self.stdout.write(f"{verb} {chat.messages:,} messages of {chat.chat} (chat {chat.chat_id}, "
                              f"older than {chat.retention_days} days, before {chat.cutoff:%Y-%m-%d %H:%M})")
        self.stdout.write(f"{verb} {report.messages:,} messages in {len(report.chats)} chats.")

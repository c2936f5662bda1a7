"""manage.py erase_user — the right to erasure for one LINE user. Dry run unless --yes."""
from django.core.management.base import BaseCommand

from conversations import erasure
from conversations.management.validation import line_user_id
from core import audit


class Command(BaseCommand):
    help = ("Erases one LINE user: deletes their 1:1 chat with everything said in it (their messages and "
            "the bot's answers), and in groups and rooms replaces their messages and the bot's answers to "
            "them with an erasure marker. "
            "Chats on legal hold are kept and reported. Without --yes, only shows what would be erased.")

    def add_arguments(self, parser):
        parser.add_argument("line_user_id", type=line_user_id, help="The user's LINE id (U followed by 32 hex digits).")
        parser.add_argument("--yes", action="store_true", help="Really erase; without it nothing changes.")

    def handle(self, *args, line_user_id: str, yes: bool, **options):
        if yes:
            plan = erasure.erase_user(line_user_id=line_user_id, actor=audit.shell_actor())
            verb = "Erased"
        else:
            plan = erasure.plan_erasure(line_user_id=line_user_id)
            verb = "Would erase"
        self.stdout.write(f"{verb}: {plan.direct_chats} 1:1 chat(s) with {plan.direct_messages:,} messages deleted; "
                          f"{plan.group_messages:,} messages in groups and rooms replaced by an erasure marker; "
                          f"their name forgotten in {plan.chat_members} group(s) and room(s).")
        if plan.held_messages:
            self.stdout.write(f"Kept under legal hold: {plan.held_messages:,} messages.")
        self.stdout.write(f"Audit reference (HMAC of the user id): {plan.user_hmac}")
        if not yes:
            self.stdout.write("Dry run: nothing was changed. Run again with --yes to erase.")

"""manage.py bootstrap — create first-run defaults; safe to run any number of times."""
import os

from django.core.management.base import BaseCommand

from conversations.bootstrap import bootstrap


class Command(BaseCommand):
    help = (
        "Creates what a first run needs and changes nothing that exists: the default LINE channel "
        "from LINE_CHANNEL_SECRET / LINE_CHANNEL_ACCESS_TOKEN, a local Ollama backend at OLLAMA_HOST, "
        "a default sampling preset, the periodic sweeper, and an admin account if none exists "
        "(ADMIN_USERNAME, ADMIN_PASSWORD; a password is generated and printed once if unset)."
    )

    def handle(self, *args, **options):
        report = bootstrap(
            admin_username=os.environ.get("ADMIN_USERNAME") or "admin",
            admin_password=os.environ.get("ADMIN_PASSWORD") or None,
        )
        for line in report or ["Nothing to do: everything is set up."]:
            self.stdout.write(line)

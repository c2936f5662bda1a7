"""manage.py generate_encryption_key — print a new Fernet key for FIELD_ENCRYPTION_KEY."""
from cryptography.fernet import Fernet
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Prints a new key for FIELD_ENCRYPTION_KEY. To rotate, put it first and keep the old key after a comma."
    # The check linebot.E001 suggests it for a site without keys, so it runs without them.
    requires_system_checks = []

    def handle(self, *args, **options):
        self.stdout.write(Fernet.generate_key().decode())

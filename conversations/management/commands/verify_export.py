"""manage.py verify_export — check an export against its manifest."""
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from conversations import exports
from core import audit


class Command(BaseCommand):
    help = ("Re-reads the file a manifest describes and checks its size, SHA-256 and row count. "
            "Exits 0 when everything matches, 1 otherwise. The check is recorded in the audit log.")

    def add_arguments(self, parser):
        parser.add_argument("manifest", type=Path, help="The .manifest.json written beside an export.")

    def handle(self, *args, manifest: Path, **options):
        try:
            result = exports.verify_export(manifest_path=manifest, actor=audit.shell_actor())
        except exports.ExportError as exc:
            raise CommandError(str(exc)) from None
        if not result.ok:
            for problem in result.problems:
                self.stderr.write(f"FAILED: {problem}")
            raise CommandError(f"{result.manifest['file']} does not match its manifest.", returncode=1)
        self.stdout.write(f"OK: {result.manifest['file']} has {result.manifest['rows']:,} rows and the SHA-256 "
                          f"in the manifest ({result.manifest['sha256']}).")
